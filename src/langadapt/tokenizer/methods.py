"""The registry of tokenizer methods and the baseline that keeps the base tokenizer.

A method takes the base tokenizer, the target-language training texts, the recipe and the
output folder; it saves an HF tokenizer into the folder and returns facts for
`tokenizer/metrics.json` (at least `added_tokens` and `new_token_ids`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from langadapt.registry import Registry

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from langadapt.recipe import Recipe

TokenizerMethod = Callable[["PreTrainedTokenizerBase", list[str], "Recipe", Path], dict[str, Any]]
TOKENIZER_METHODS: Registry[TokenizerMethod] = Registry("tokenizer-methods")


@TOKENIZER_METHODS.register("keep", help="keep the base tokenizer unchanged (the baseline)")
def keep(base: "PreTrainedTokenizerBase", train_texts: list[str], recipe: "Recipe", out: Path) -> dict[str, Any]:
    base.save_pretrained(out)
    return {"requested_new_tokens": 0, "added_tokens": 0, "new_token_ids": []}
