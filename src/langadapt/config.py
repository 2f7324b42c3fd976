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
    dtype: str = opt(
        "auto",
        "what the model's weights are held in for training and evaluation: auto, float32, bfloat16 or float16. "
        "auto: bfloat16 on a CUDA GPU (float16 on one without bf16; float32 when train.precision is fp32), half "
        "the memory of float32 and no re-cast of every frozen weight on each autocast pass; float32 on a CPU and "
        "an Apple GPU (the CPU demo's figures and speed are float32's: a CPU without bf16 instructions computes "
        "bf16 several times slower). Only frozen weights take it: weights that train (LoRA, adapters, new rows, "
        "embeddings: all, full, OFA factors, heads) are float32 master copies (see train.low_precision_master_weights), "
        "and a schedule of full phases only loads float32, as no weight stays frozen. The final model "
        "(train/final/) is saved in it: bfloat16 on a GPU by default, as most hub checkpoints are",
    )
    attn_implementation: str = opt(
        "auto",
        "attention kernel: auto, flash_attention_2, sdpa or eager. auto: flash_attention_2 on a CUDA GPU when the "
        "flash_attn package is installed, the weights are bf16/fp16 and the model is a decoder whose transformers "
        "class supports it (packed documents then reach it as variable-length sequences, no mask); else sdpa "
        "(PyTorch's scaled-dot-product attention) where the class supports it; else eager. The choice is in "
        "train/summary.json",
    )


@dataclass(frozen=True, kw_only=True)
class SourceConfig:
    path: str = req(
        "where the text is: a file, glob or folder (.txt, .jsonl, .csv, .parquet, optionally .gz), "
        "builtin:NAME for a bundled offline corpus (see `langadapt list sources`), or hf:NAME for a hub data set"
    )
    language: str = req("ISO 639-3 code of the text, e.g. nya, eng, mlt")
    name: str = opt(
        "",
        "eval.extra_sets: the set's label in reports (required there); corpus sets are labelled <language>-heldout. "
        "A source of a corpus.target / corpus.replay list: its label in the training mix and its summary "
        "(default: its language; names must be unique, so two sources of one language need names)",
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


@dataclass(frozen=True, kw_only=True)
class WeightedSource(SourceConfig):
    """One source of several: `corpus.target` or `corpus.replay` given as a list."""

    weight: float = opt(
        1.0,
        "a source of a list: its weight in the training mix (> 0; a single source takes none): it multiplies the source's share under "
        "train.mixing.method (temperature: weight x tokens^alpha; unimax: weighted shares of the uniform budget; "
        "weights: the share is the weight over the sum of weights)",
    )


# -- the sources of a corpus section (`corpus.target`, `corpus.replay`): one, or a list ------------------

ROLES = ("target", "replay")


def sources_of(cfg: Any, role: str) -> tuple[SourceConfig, ...]:
    """The sources of `corpus.target` or `corpus.replay`, as a tuple (one source: a tuple of one; none: empty)."""
    value = cfg.target if role == "target" else cfg.replay
    if value is None:
        return ()
    return tuple(value) if isinstance(value, tuple) else (value,)


def primary(cfg: Any, role: str) -> SourceConfig | None:
    """The first source of a role: the one whose language stages that take one language use."""
    found = sources_of(cfg, role)
    return found[0] if found else None


def source_name(src: SourceConfig) -> str:
    """A source's label in the mix: its name, else its language."""
    return src.name or src.language


def source_weight(src: SourceConfig) -> float:
    return src.weight if isinstance(src, WeightedSource) else 1.0


def is_listed(cfg: Any, role: str) -> bool:
    """Whether `corpus.<role>` is given as a list (its sources are then labelled role:name in the corpus)."""
    return isinstance(cfg.target if role == "target" else cfg.replay, tuple)


def is_mixed(cfg: Any) -> bool:
    """Whether either role has several sources (a list of one counts as one)."""
    return any(len(sources_of(cfg, role)) > 1 for role in ROLES)


def scratch_requested(recipe: Any) -> bool:
    """Whether a run trains a from-scratch model: as its own model (train.method scratch) or as a reference."""
    return recipe.train.method == "scratch" or recipe.eval.reference == "scratch"


@dataclass(frozen=True, kw_only=True)
class ParallelConfig:
    path: str = req(
        "aligned sentence pairs: builtin:bible-bitext (the bundled Chichewa-English Bible verses, languages nya "
        "and eng; the books of the bible-bitext evaluation set and corpus.heldout_groups are left out), a TSV file "
        "of two columns (first<TAB>second, align: column), or the first language's file when second_path is set"
    )
    second_path: str = opt(
        "", "the second language's file, aligned with `path` line by line (align: line) or by id (align: id)"
    )
    align: str = opt(
        "auto",
        "how the two sides are matched: column (one TSV file, two columns), line (two text files, line i with "
        "line i: equal line counts), id (two files of `id<TAB>text` lines, or .jsonl records with id_field and "
        "text_field, matched by id: every id on both sides, once); auto: column for one file, line for two",
    )
    id_field: str = opt("id", "align: id, .jsonl files: the key of the id")
    text_field: str = opt("text", "align: id, .jsonl files: the key of the text")
    languages: tuple[str, ...] = opt(
        (),
        "the languages of the first and second side (ISO 639-3), one of them corpus.target's language; empty: "
        "(corpus.target's, corpus.replay's) for files, (nya, eng) for builtin:bible-bitext",
    )
    max_pairs: int = opt(0, "read at most this many pairs, in file order (0: all)")
