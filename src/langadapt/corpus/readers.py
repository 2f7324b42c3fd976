"""The corpus's input units: each file of a source, a bundled corpus, a hub data set, knowledge triples.

A unit is the smallest piece one task reads; the plan is plain data (JSON-able dicts), so a
datatrove task on another machine rebuilds its reader from it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterator

from langadapt.config import ROLES, SourceConfig, is_listed, primary, source_name, sources_of
from langadapt.sources.formats import expand_files, file_records
from langadapt.sources.reading import source_records
from langadapt.sources.records import Record

if TYPE_CHECKING:
    from langadapt.corpus.config import CorpusConfig


def plan_units(cfg: "CorpusConfig") -> list[dict[str, Any]]:
    """One unit per file of a file source (all of it when max_documents caps the source), else one per source."""
    import dataclasses

    units: list[dict[str, Any]] = []
    for role in ROLES:
        listed = is_listed(cfg, role)
        for src in sources_of(cfg, role):
            units.extend(_source_units(role, src, listed))
    if cfg.knowledge is not None:
        units.append(
            {
                "role": "knowledge",
                "language": primary(cfg, "target").language,  # type: ignore[union-attr]
                "knowledge": dataclasses.asdict(cfg.knowledge),
                "file": cfg.knowledge.triples,
            }
        )
    return units


def _source_units(role: str, src: SourceConfig, listed: bool) -> list[dict[str, Any]]:
    """A source's units. `label`: what the corpus's `source` column says: the role for a single source, and
    role:name for a source of a list (the training mix draws by it)."""
    import dataclasses

    fields = {k: v for k, v in dataclasses.asdict(src).items() if k != "weight"}  # a plain SourceConfig rebuilds it
    label = f"{role}:{source_name(src)}" if listed else role
    base = {"role": role, "label": label, "language": src.language, "source": fields}
    if src.path.startswith(("builtin:", "hf:")) or src.max_documents:
        return [base | {"file": ""}]
    return [base | {"file": str(f)} for f in expand_files(src.path)]


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
