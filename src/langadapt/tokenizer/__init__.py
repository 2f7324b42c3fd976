"""Stage 2, tokenizer: adapt the base tokenizer to the target language and measure it.

The method (`tokenizer.method`, see `langadapt list tokenizer-methods`) writes the adapted
tokenizer; this flow then measures base and adapted tokenizers on the held-out text of
every language in the corpus (fertility, bytes per token, continued-word ratio, UNK rate)
and writes `tokenizer/metrics.json`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from langadapt.documents import languages, read_texts
from langadapt.models import load_tokenizer, resolve_base
from langadapt.rundir import RunDir, StageContext, write_json
from langadapt.stage import run_stage
from langadapt.tokenizer import bpe  # noqa: F401  (registers `extend`)
from langadapt.tokenizer.bpe import check_extendable
from langadapt.tokenizer.methods import TOKENIZER_METHODS
from langadapt.tokenizer.metrics import tokenizer_metrics

if TYPE_CHECKING:
    from langadapt.recipe import Recipe

log = logging.getLogger(__name__)
NAME = "tokenizer"
__all__ = ["TOKENIZER_METHODS", "check_extendable", "run", "tokenizer_metrics"]


def _build(recipe: "Recipe", rd: RunDir, ctx: StageContext) -> None:
    target_lang, replay_lang = languages(rd)
    base_path = resolve_base(recipe.model)
    base = load_tokenizer(base_path, recipe.model.revision)
    train_texts = read_texts(rd, target_lang, "train")
    info = TOKENIZER_METHODS.get(recipe.tokenizer.method)(base, train_texts, recipe, ctx.out)
    from transformers import AutoTokenizer

    adapted = AutoTokenizer.from_pretrained(ctx.out)
    metrics: dict[str, Any] = {
        "method": recipe.tokenizer.method,
        "base": recipe.model.base,
        "base_vocab_size": len(base),
        "vocab_size": len(adapted),
        **info,
        "heldout": {},
    }
    for lang in (target_lang, replay_lang):
        if lang is None:
            continue
        texts = read_texts(rd, lang, "heldout")
        metrics["heldout"][lang] = {
            "base": tokenizer_metrics(base, texts),
            "adapted": tokenizer_metrics(adapted, texts),
        }
        b, a = metrics["heldout"][lang]["base"], metrics["heldout"][lang]["adapted"]
        if b:
            log.info(
                "%s held-out fertility %.2f -> %.2f tokens/word, %.2f -> %.2f bytes/token",
                lang,
                b["fertility"],
                a["fertility"],
                b["bytes_per_token"],
                a["bytes_per_token"],
            )
    write_json(ctx.out / "metrics.json", metrics)


def inputs(recipe: "Recipe", rd: RunDir) -> dict[str, Any]:
    return {
        "corpus": rd.fingerprint_of("corpus"),
        "model": recipe.to_dict()["model"],
        "config": recipe.to_dict()["tokenizer"],
    }


def run(recipe: "Recipe", rd: RunDir, force: bool = False) -> Path:
    return run_stage(NAME, recipe, rd, inputs(recipe, rd), _build, force)
