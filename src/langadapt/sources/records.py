"""What a reader yields: documents, and records that say why an input could not become one."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


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
