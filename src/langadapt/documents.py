"""The corpus stage's output format, read by every later stage.

Documents are parquet tables (id, group, text; training documents also url) under `corpus/<lang>/{train,heldout}.parquet`;
`corpus/stats.json` names the target and replay languages. Stages read the corpus through
these functions, never through the corpus stage's code.
"""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from langadapt.sources.records import Doc

if TYPE_CHECKING:
    from langadapt.rundir import RunDir

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\u200b\ufeff]")
_SPACES = re.compile(r"[ \t\u00a0]+")


def normalize(text: str, form: str) -> str:
    """Unicode normal form, control characters removed, runs of spaces folded, trimmed."""
    if form != "none":
        text = unicodedata.normalize(form, text)
    text = _CONTROL.sub("", text)
    text = _SPACES.sub(" ", text)
    return "\n".join(line.strip() for line in text.strip().splitlines())


def write_docs(
    path: Path, docs: list[Doc], reasons: list[str] | None = None, extra: dict[str, list[str]] | None = None
) -> None:
    """Documents as parquet (id, group, text); dropped ones also carry their reason and `extra` string columns."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    cols: dict[str, Any] = {
        "id": [d.id for d in docs],
        "group": [d.group for d in docs],
        "text": [d.text for d in docs],
    }
    if reasons is not None:
        cols["reason"] = reasons
    cols.update(extra or {})
    schema = pa.schema([(k, pa.string()) for k in cols])
    pq.write_table(pa.table(cols, schema=schema), path, compression="zstd")


def read_docs(path: Path) -> list[Doc]:
    import pyarrow.parquet as pq

    table = pq.read_table(path, columns=["id", "group", "text"]).to_pydict()
    return [Doc(i, t, g) for i, g, t in zip(table["id"], table["group"], table["text"])]


def read_column(path: Path, column: str) -> list[str] | None:
    """One string column of a documents table (`url`), in document order; None when it has none."""
    import pyarrow.parquet as pq

    if column not in pq.read_schema(path).names:
        return None
    return [v or "" for v in pq.read_table(path, columns=[column]).column(column).to_pylist()]


def split_file(rd: "RunDir", language: str, split: str) -> Path:
    """The parquet file of one language and split ('train' or 'heldout') of a finished corpus stage."""
    return rd.require("corpus", "stats.json") / language / f"{split}.parquet"


def read_texts(rd: "RunDir", language: str, split: str, source: str = "") -> list[str]:
    """Texts of one language and split ('train' or 'heldout') of a finished corpus stage.

    `source`: only the documents of that source of a corpus.target / corpus.replay list (the
    training split names each document's source when its language came from a list).
    """
    if not source:
        return [d.text for d in read_docs(split_file(rd, language, split))]
    import pyarrow.parquet as pq

    table = pq.read_table(split_file(rd, language, split), columns=["text", "source"]).to_pydict()
    return [t for t, s in zip(table["text"], table["source"]) if s == source]


def leading_documents(texts: list[str], max_chars: int) -> list[str]:
    """Whole documents, in order, up to max_chars (at least one): a sample that never cuts a document."""
    kept, size = [], 0
    for t in texts:
        if kept and size + len(t) > max_chars:
            break
        kept.append(t)
        size += len(t)
    return kept


def languages(rd: "RunDir") -> tuple[str, str | None]:
    """(target, replay) language codes of a finished corpus stage."""
    from langadapt.rundir import read_json

    stats = read_json(rd.require("corpus", "stats.json") / "stats.json")
    return stats["target"], stats["replay"]
