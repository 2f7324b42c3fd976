"""The `tokenizer` section of a recipe, and its checks (every problem reported at validation)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from langadapt.config import SourceConfig, opt

if TYPE_CHECKING:
    pass

TRANSLIT_INIT = ("min", "mean", "max")
NEEDS_TARGET = ("extend", "replace")  # methods that train a target tokenizer on the corpus


@dataclass(frozen=True, kw_only=True)
class TokenizerConfig:
    method: str = opt(
        "extend",
        "extend: add the most useful target-language tokens; replace: a target tokenizer trained on the corpus; "
        "trim: keep only the tokens the corpus uses; translit: add romanised forms of the vocabulary; keep: "
        "unchanged (see `langadapt list tokenizer-methods`)",
    )
    new_tokens: int = opt(2000, "extend: number of new tokens to add")
    target_vocab_size: int = opt(
        8000, "extend: size of the target-language tokenizer that proposes new tokens; replace: the new vocabulary size"
    )
    min_frequency: int = opt(2, "extend/replace (BPE, WordPiece): a token must occur at least this often")
    trim_languages: tuple[str, ...] = opt(
        (), "trim: corpus languages whose training text decides what is kept (default: target and replay)"
    )
    trim_sources: tuple[SourceConfig, ...] = opt((), "trim: further text whose tokens are kept too")
    trim_min_count: int = opt(1, "trim: keep a token seen at least this often in that text")
    trim_vocab_size: int = opt(
        0,
        "trim: keep at most this many tokens in all (0: no limit); special tokens (and, with trim_keep_alphabet, "
        "single characters) first, then the most frequent",
    )
    trim_keep_alphabet: bool = opt(
        True, "trim: keep every single-character (or byte) token, so unseen words still spell out instead of UNK"
    )
    translit_init: str = opt(
        "max", "translit: hint for the init stage: a romanised token's row is the min, mean or max of its sources"
    )
    parity_target: SourceConfig | None = opt(
        None, "parallel text in the target language for the parity metric; documents pair with parity_reference by id"
    )
    parity_reference: SourceConfig | None = opt(
        None, "its translation in the reference language (e.g. builtin:bible-eng beside builtin:bible-nya)"
    )
    parity_max_pairs: int = opt(2000, "parity: use at most this many aligned documents")
