"""User files (txt, jsonl, csv, parquet; gzip or zstd) and hub data sets, record by record.

Invalid UTF-8 is repaired or dropped and counted; unparseable lines, missing text fields and
empty documents become records with a reason, so the corpus stage can account for them.
"""

from __future__ import annotations

import csv
import glob
import gzip
import importlib.util
import io
import itertools
import json
import re
from pathlib import Path
from typing import Iterator

from langadapt.config import SourceConfig
from langadapt.errors import InputError, MissingDependencyError
from langadapt.sources.records import Doc, Record

FORMATS = ("txt", "jsonl", "csv", "parquet")
_EXT = {
    ".txt": "txt",
    ".text": "txt",
    ".jsonl": "jsonl",
    ".json": "jsonl",
    ".ndjson": "jsonl",
    ".csv": "csv",
    ".parquet": "parquet",
}
_COMPRESSION = (".gz", ".zst")
INVALID_UTF8 = ("repair", "drop")
_SURROGATES = re.compile("[\udc80-\udcff]+")


def _strip_compression(path: Path) -> tuple[str, str]:
    name = path.name.lower()
    for ext in _COMPRESSION:
        if name.endswith(ext):
            return name[: -len(ext)], ext
    return name, ""


def file_format(path: Path, declared: str) -> str:
    if declared != "auto":
        return declared
    stem, _ = _strip_compression(path)
    fmt = _EXT.get(Path(stem).suffix)
    if fmt is None:
        raise InputError(
            f"cannot tell the format of {path} from its extension",
            hint=f"set format: to one of {', '.join(FORMATS)} in the source",
        )
    return fmt


def expand_files(pattern: str) -> list[Path]:
    """A file, a folder (its supported files, recursively) or a glob, sorted."""
    p = Path(pattern).expanduser()
    if p.is_file():
        return [p]
    if p.is_dir():
        files = [
            f
            for f in sorted(p.rglob("*"))
            if f.is_file() and Path(_strip_compression(f)[0]).suffix in _EXT and not f.name.startswith(".")
        ]
        return files
    return [Path(f) for f in sorted(glob.glob(str(p), recursive=True)) if Path(f).is_file()]


def _open_text(path: Path) -> io.TextIOBase:
    _, comp = _strip_compression(path)
    if comp == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", errors="surrogateescape")
    if comp == ".zst":
        try:
            import zstandard
        except ImportError:
            raise MissingDependencyError("zstandard", f"reading {path.name}", "pip install zstandard") from None
        return io.TextIOWrapper(
            zstandard.ZstdDecompressor().stream_reader(open(path, "rb")), encoding="utf-8", errors="surrogateescape"
        )
    # Invalid bytes become lone surrogates here and are repaired or dropped per record (`_utf8`),
    # so one bad byte costs one record, not the whole run.
    return open(path, encoding="utf-8", errors="surrogateescape")


def _utf8(text: str, invalid_utf8: str) -> tuple[str | None, bool]:
    """(text, repaired) with invalid bytes replaced by U+FFFD; (None, False) when the policy drops it."""
    if not _SURROGATES.search(text):
        return text, False
    if invalid_utf8 == "drop":
        return None, False
    return _SURROGATES.sub("\ufffd", text), True


def _printable(text: str) -> str:
    """Text safe to store (what a dropped record held), invalid bytes shown as U+FFFD."""
    return _SURROGATES.sub("\ufffd", text)


def _txt_pieces(f: io.TextIOBase, split_by: str) -> Iterator[str]:
    """Documents of a text stream: per line, per blank-line paragraph, or the whole file."""
    if split_by == "file":
        yield f.read()
        return
    paragraph: list[str] = []
    for line in f:
        if split_by == "line":
            yield line.rstrip("\n")
        elif line.strip():
            paragraph.append(line)
        elif paragraph:
            yield "".join(paragraph).rstrip("\n")
            paragraph = []
        else:
            yield ""  # consecutive blank lines: counted as blank, like empty lines
    if paragraph:
        yield "".join(paragraph).rstrip("\n")


def _read_txt(path: Path, src: SourceConfig, docs_per_group: int, invalid_utf8: str) -> Iterator[Record]:
    n = 0
    with _open_text(path) as f:
        for piece in _txt_pieces(f, src.split_by):
            if not piece.strip():
                yield Record(None, "blank", piece)
                continue
            text, repaired = _utf8(piece, invalid_utf8)
            if text is None:
                yield Record(None, "invalid_utf8", _printable(piece))
                continue
            doc = Doc(id=f"{path.name}:{n}", text=text, group=f"{path.name}#{n // docs_per_group}")
            yield Record(doc, repaired="invalid_utf8" if repaired else "")
            n += 1


def url_domain(url: str) -> str:
    """The host of a URL without `www.` and port: the group of web documents for held-out splits."""
    from urllib.parse import urlsplit

    host = urlsplit(url if "//" in url else f"//{url}").hostname or ""
    return host.removeprefix("www.")


URL_DOMAIN = "url_domain"  # group_field value: group by the domain of the record's `url` field


def _records_to_docs(
    path: Path, rows: Iterator[dict | str | None], src: SourceConfig, docs_per_group: int, invalid_utf8: str
) -> Iterator[Record]:
    n = 0
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            yield Record(None, "unparseable", _printable(row) if isinstance(row, str) else "")
            continue
        text = row.get(src.text_field)
        if not isinstance(text, str):
            yield Record(None, f"no_text_field:{src.text_field}", _printable(json.dumps(row, default=str)[:10_000]))
            continue
        if src.group_field == URL_DOMAIN:
            url = row.get("url")
            group = url_domain(url) if isinstance(url, str) else ""
            if not group:
                yield Record(None, "no_group_field:url", _printable(text))
                continue
        elif src.group_field:
            group = row.get(src.group_field)
            if group is None:
                yield Record(None, f"no_group_field:{src.group_field}", _printable(text))
                continue
            group = _printable(str(group))
        else:
            group = f"{path.name}#{n // docs_per_group}"
        clean, repaired = _utf8(text, invalid_utf8)
        if clean is None:
            yield Record(None, "invalid_utf8", _printable(text))
            continue
        doc_id = _printable(str(row.get("id", f"{path.name}:{i}")))
        url = row.get("url")
        n += 1
        yield Record(
            Doc(id=doc_id, text=clean, group=group),
            repaired="invalid_utf8" if repaired else "",
            url=_printable(url) if isinstance(url, str) else "",
        )


def _jsonl_rows(path: Path) -> Iterator[dict | str | None]:
    with _open_text(path) as f:
        for line in f:
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError:
                yield line.rstrip("\n")
                continue
            yield obj if isinstance(obj, dict) else line.rstrip("\n")


def _csv_rows(path: Path) -> Iterator[dict | None]:
    csv.field_size_limit(1 << 30)
    with _open_text(path) as f:
        yield from csv.DictReader(f)


def _parquet_rows(path: Path, columns: list[str]) -> Iterator[dict | None]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except Exception as e:  # pyarrow raises several types for a bad file
        raise InputError(f"cannot read {path} as parquet: {e}") from None
    missing = [c for c in columns if c not in pf.schema_arrow.names and c not in ("id", "url")]
    if missing:
        raise InputError(
            f"{path} has no column {', '.join(missing)}; its columns are {', '.join(pf.schema_arrow.names)}",
            hint="set text_field / group_field in the source to existing columns",
        )
    cols = [c for c in columns if c in pf.schema_arrow.names]
    for batch in pf.iter_batches(columns=cols, batch_size=4096):
        yield from batch.to_pylist()


def file_records(path: Path, src: SourceConfig, docs_per_group: int, invalid_utf8: str = "repair") -> Iterator[Record]:
    """Every record of one file, in order: documents and the reasons others could not be read."""
    fmt = file_format(path, src.format)
    try:
        if fmt == "txt":
            yield from _read_txt(path, src, docs_per_group, invalid_utf8)
        elif fmt == "jsonl":
            yield from _records_to_docs(path, _jsonl_rows(path), src, docs_per_group, invalid_utf8)
        elif fmt == "csv":
            yield from _records_to_docs(path, _csv_rows(path), src, docs_per_group, invalid_utf8)
        else:
            group = src.group_field if src.group_field not in ("", URL_DOMAIN) else ""
            cols = [src.text_field, "id", "url"] + ([group] if group else [])
            yield from _records_to_docs(path, _parquet_rows(path, cols), src, docs_per_group, invalid_utf8)
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise InputError(f"cannot read {path}: {e}") from None


def read_files(src: SourceConfig, docs_per_group: int, invalid_utf8: str = "repair") -> Iterator[Record]:
    files = expand_files(src.path)
    if not files:
        raise InputError(f"no input file matches '{src.path}'", hint="check the path in the recipe's corpus section")
    for path in files:
        yield from file_records(path, src, docs_per_group, invalid_utf8)


def read_hub(src: SourceConfig, docs_per_group: int, invalid_utf8: str = "repair") -> Iterator[Record]:
    """Stream a data set with `datasets.load_dataset` (`hf:NAME`, a hub id or a local folder)."""
    if importlib.util.find_spec("datasets") is None:
        raise MissingDependencyError("datasets", "reading hf: sources", "pip install 'langadapt[datasets]'")
    from datasets import load_dataset

    name = src.path[len("hf:") :]
    try:
        ds = load_dataset(name, src.subset or None, split=src.split, streaming=True)
        rows = iter(ds)
        first = next(rows, None)
    except Exception as e:  # network, missing data set, bad subset or split: all user-facing
        raise InputError(
            f"cannot load data set '{name}' (subset {src.subset or 'default'}, split {src.split}): {str(e).splitlines()[0]}",
            hint="check the name, subset and split, or download the files and point path: at them",
        ) from None
    if first is None:
        return
    yield from _records_to_docs(
        Path(name.replace("/", "_")), itertools.chain([first], rows), src, docs_per_group, invalid_utf8
    )
