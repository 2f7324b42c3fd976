"""Document filters of the corpus stage, registered by name (`langadapt list filters`)."""

from __future__ import annotations

from typing import Callable

from langadapt.corpus.config import CorpusConfig
from langadapt.registry import Registry

# A filter returns None to keep a document or a short reason string to drop it.
Filter = Callable[[str, CorpusConfig], "str | None"]
FILTERS: Registry[Filter] = Registry("filters")


@FILTERS.register("empty", help="drop documents with no text left after normalisation")
def _empty(text: str, cfg: CorpusConfig) -> str | None:
    return "empty" if not text else None


@FILTERS.register("length", help="drop documents shorter than corpus.min_chars or longer than corpus.max_chars")
def _length(text: str, cfg: CorpusConfig) -> str | None:
    if len(text) < cfg.min_chars:
        return "too_short"
    if len(text) > cfg.max_chars:
        return "too_long"
    return None


DEFAULT_FILTERS = ("empty", "length")
