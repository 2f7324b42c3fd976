"""The corpus's input units: each file of a source, a bundled corpus, a hub data set, knowledge triples.

A unit is the smallest piece one task reads; the plan is plain data (JSON-able dicts), so a
datatrove task on another machine rebuilds its reader from it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterator

from langadapt.config import SourceConfig
from langadapt.sources.formats import expand_files, file_records
from langadapt.sources.reading import source_records
from langadapt.sources.records import Record

if TYPE_CHECKING:
    from langadapt.corpus.config import CorpusConfig


def plan_units(cfg: "CorpusConfig") -> list[dict[str, Any]]:
    """One unit per file of a file source (all of it when max_documents caps the source), else one per source."""
    import dataclasses

    units: list[dict[str, Any]] = []
    for role, src in (("target", cfg.target), ("replay", cfg.replay)):
        if src is None:
            continue
        base = {"role": role, "language": src.language, "source": dataclasses.asdict(src)}
        if src.path.startswith(("builtin:", "hf:")) or src.max_documents:
            units.append(base | {"file": ""})
        else:
            units.extend(base | {"file": str(f)} for f in expand_files(src.path))
    if cfg.knowledge is not None:
        units.append(
            {
                "role": "knowledge",
                "language": cfg.target.language,
                "knowledge": dataclasses.asdict(cfg.knowledge),
                "file": cfg.knowledge.triples,
            }
        )
    return units


def unit_records(unit: dict[str, Any], docs_per_group: int, invalid_utf8: str) -> Iterator[Record]:
    from pathlib import Path

    if unit["role"] == "knowledge":
        from langadapt.corpus.config import KnowledgeConfig
        from langadapt.corpus.kg2text import knowledge_records

        yield from knowledge_records(KnowledgeConfig(**unit["knowledge"]), unit["language"])
        return
    src = SourceConfig(**unit["source"])
    if unit["file"]:
        yield from file_records(Path(unit["file"]), src, docs_per_group, invalid_utf8)
    else:
        yield from source_records(src, docs_per_group, invalid_utf8)
