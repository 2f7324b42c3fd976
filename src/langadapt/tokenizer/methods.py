"""The registry of tokenizer methods, what every method is given, and the baseline that keeps the base.

A method saves an HF tokenizer into `inputs.out` and returns facts for
`tokenizer/metrics.json` (at least `added_tokens` and `new_token_ids`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from langadapt.registry import Registry

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from langadapt.recipe import Recipe
    from langadapt.rundir import RunDir


@dataclass
class MethodInputs:
    base: "PreTrainedTokenizerBase"
    target_texts: list[str]  # training split of the target language
    replay_texts: list[str]  # training split of the replay language (empty without replay)
    recipe: "Recipe"
    rd: "RunDir"  # for methods that read more of the corpus (trim)
    out: Path


TokenizerMethod = Callable[[MethodInputs], dict[str, Any]]
TOKENIZER_METHODS: Registry[TokenizerMethod] = Registry("tokenizer-methods")


@TOKENIZER_METHODS.register("keep", help="keep the base tokenizer unchanged (the baseline)")
def keep(inputs: MethodInputs) -> dict[str, Any]:
    inputs.base.save_pretrained(inputs.out)
    return {"requested_new_tokens": 0, "added_tokens": 0, "new_token_ids": []}
