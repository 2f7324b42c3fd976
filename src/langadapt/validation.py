"""Checks on a recipe beyond its shape: registered names, value ranges, files that exist.

Each check appends a message to a list; the caller raises once with all of them, so a user
fixes their recipe in one round trip instead of one error at a time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from langadapt.recipe import Recipe, SourceConfig

DTYPES = ("float32", "bfloat16", "float16")
NORMALIZATIONS = ("NFC", "NFKC", "none")
SPLIT_BY = ("line", "paragraph", "file")


def semantic_problems(recipe: "Recipe") -> list[str]:
    from langadapt import models, sources
    from langadapt.embed_init import INIT_METHODS
    from langadapt.tokenizer import TOKENIZER_METHODS
    from langadapt.train import OBJECTIVES, TRAIN_METHODS

    p: list[str] = []

    def check(cond: bool, msg: str) -> None:
        if not cond:
            p.append(msg)

    def name_in(registry, value: str, key: str) -> None:  # type: ignore[no-untyped-def]
        if value not in registry:
            p.append(f"{key}: {registry.unknown_message(value)}")

    check(bool(recipe.name.strip()) and "/" not in recipe.name, "name: must be a non-empty name without '/'")
    p.extend(models.base_problems(recipe.model))
    check(recipe.model.dtype in DTYPES, f"model.dtype: '{recipe.model.dtype}' is not one of {', '.join(DTYPES)}")

    c = recipe.corpus
    p.extend(sources.source_problems(c.target, "corpus.target"))
    if c.replay is not None:
        p.extend(sources.source_problems(c.replay, "corpus.replay"))
        check(c.replay.language != c.target.language, "corpus.replay.language: must differ from corpus.target.language")
    check(
        c.normalization in NORMALIZATIONS,
        f"corpus.normalization: '{c.normalization}' is not one of {', '.join(NORMALIZATIONS)}",
    )
    check(c.min_chars >= 0, "corpus.min_chars: must be >= 0")
    check(c.max_chars > c.min_chars, "corpus.max_chars: must be greater than corpus.min_chars")
    check(0.0 < c.heldout_fraction < 0.5, "corpus.heldout_fraction: must be between 0 and 0.5")
    check(c.docs_per_group >= 1, "corpus.docs_per_group: must be >= 1")

    t = recipe.tokenizer
    name_in(TOKENIZER_METHODS, t.method, "tokenizer.method")
    if t.method == "extend":
        check(t.new_tokens >= 1, "tokenizer.new_tokens: must be >= 1 with method 'extend'")
        check(
            t.target_vocab_size >= 300, "tokenizer.target_vocab_size: must be >= 300 (the byte alphabet alone is 256)"
        )
    check(t.min_frequency >= 1, "tokenizer.min_frequency: must be >= 1")

    name_in(INIT_METHODS, recipe.init.method, "init.method")

    tr = recipe.train
    name_in(TRAIN_METHODS, tr.method, "train.method")
    name_in(OBJECTIVES, tr.objective, "train.objective")
    check(tr.lora_rank >= 1, "train.lora_rank: must be >= 1")
    check(bool(tr.lora_targets), "train.lora_targets: list at least one module name")
    check(0.0 <= tr.replay_ratio < 1.0, "train.replay_ratio: must be in [0, 1)")
    if tr.replay_ratio > 0:
        check(
            c.replay is not None, "train.replay_ratio: > 0 needs a valid corpus.replay (or set train.replay_ratio: 0)"
        )
    check(tr.seq_len >= 8, "train.seq_len: must be >= 8")
    check(tr.batch_size >= 1, "train.batch_size: must be >= 1")
    check(tr.max_steps >= 1, "train.max_steps: must be >= 1")
    check(tr.lr > 0, "train.lr: must be > 0")
    check(tr.embedding_lr >= 0, "train.embedding_lr: must be >= 0")
    check(0 <= tr.warmup_steps <= tr.max_steps, "train.warmup_steps: must be between 0 and train.max_steps")
    check(0.0 <= tr.min_lr_ratio <= 1.0, "train.min_lr_ratio: must be in [0, 1]")
    check(tr.save_every >= 0, "train.save_every: must be >= 0")
    check(tr.keep_checkpoints >= 1, "train.keep_checkpoints: must be >= 1")
    check(tr.threads >= 0, "train.threads: must be >= 0")

    e = recipe.eval
    check(e.max_chars >= 100, "eval.max_chars: must be >= 100")
    check(e.context_length >= 16, "eval.context_length: must be >= 16")
    check(0 < e.stride <= e.context_length, "eval.stride: must be in (0, eval.context_length]")
    names = [s.name or s.language for s in e.extra_sets]
    for i, src in enumerate(e.extra_sets):
        p.extend(sources.source_problems(src, f"eval.extra_sets[{i}]"))
        check(bool(src.name), f"eval.extra_sets[{i}].name: give each extra set a name, e.g. {src.language}-ood")
    check(len(set(names)) == len(names), "eval.extra_sets: names must be unique")
    return p


def source_format_problems(src: "SourceConfig", key: str) -> list[str]:
    from langadapt.sources import FORMATS

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
