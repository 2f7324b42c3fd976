"""The `tokenizer` section of a recipe."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from langadapt.config import opt

if TYPE_CHECKING:
    from langadapt.recipe import Recipe


@dataclass(frozen=True, kw_only=True)
class TokenizerConfig:
    method: str = opt(
        "extend", "extend: add the most useful target-language tokens to the base tokenizer; keep: unchanged"
    )
    new_tokens: int = opt(2000, "extend: number of new tokens to add")
    target_vocab_size: int = opt(8000, "size of the target-language BPE trained to propose new tokens")
    min_frequency: int = opt(2, "a proposed token must occur at least this often in the training text")


def check(recipe: "Recipe") -> list[str]:
    """Problems with the tokenizer section."""
    from langadapt.tokenizer.methods import TOKENIZER_METHODS

    t, p = recipe.tokenizer, []
    if t.method not in TOKENIZER_METHODS:
        p.append(f"tokenizer.method: {TOKENIZER_METHODS.unknown_message(t.method)}")
    if t.method == "extend":
        if t.new_tokens < 1:
            p.append("tokenizer.new_tokens: must be >= 1 with method 'extend'")
        if t.target_vocab_size < 300:
            p.append("tokenizer.target_vocab_size: must be >= 300 (the byte alphabet alone is 256)")
    if t.min_frequency < 1:
        p.append("tokenizer.min_frequency: must be >= 1")
    return p
