"""Recipe building blocks shared by every stage: field helpers and the model and source sections.

Each stage's own config dataclass lives in its package (`corpus/config.py`, ...);
`recipe.py` composes them into the `Recipe`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


def opt(default: Any, help: str) -> Any:
    """A dataclass field with a default and a help string."""
    if isinstance(default, (list, dict, set)):
        raise TypeError("use tuples for sequence defaults; recipes are frozen")
    return field(default=default, metadata={"help": help})


def req(help: str) -> Any:
    """A required dataclass field with a help string."""
    return field(metadata={"help": help})


@dataclass(frozen=True, kw_only=True)
class ModelConfig:
    base: str = opt(
        "builtin:smollm2-135m",
        "base model: a hub id (e.g. HuggingFaceTB/SmolLM2-135M), a local HF folder, or builtin:NAME "
        "(see `langadapt list models`)",
    )
    gguf_file: str = opt("", "GGUF file name inside `base` to import (dequantised to float32 once, then cached)")
    revision: str = opt("", "hub revision (branch, tag or commit) for hub ids")
    dtype: str = opt("float32", "weights dtype for training and evaluation: float32, bfloat16 or float16")


@dataclass(frozen=True, kw_only=True)
class SourceConfig:
    path: str = req(
        "where the text is: a file, glob or folder (.txt, .jsonl, .csv, .parquet, optionally .gz), "
        "builtin:NAME for a bundled offline corpus (see `langadapt list sources`), or hf:NAME for a hub data set"
    )
    language: str = req("ISO 639-3 code of the text, e.g. nya, eng, mlt")
    name: str = opt(
        "", "eval.extra_sets: the set's label in reports (required there); corpus sets are labelled <language>-heldout"
    )
    format: str = opt("auto", "auto (from the file extension), txt, jsonl, csv or parquet")
    text_field: str = opt("text", "column or JSON key that holds the text (jsonl, csv, parquet, hf)")
    group_field: str = opt(
        "",
        "column or key naming the document's group (book, site, author); held-out text is split by whole "
        "groups. Empty: txt files group consecutive documents (see corpus.docs_per_group)",
    )
    split_by: str = opt(
        "line", "txt only: one document per line, per blank-line paragraph, or per file (line|paragraph|file)"
    )
    split: str = opt("train", "hf: data set split to read")
    subset: str = opt("", "hf: data set configuration, e.g. nya_Latn for HuggingFaceFW/fineweb-2")
    max_documents: int = opt(0, "read at most this many documents (0: all); the rest are counted as not read")
