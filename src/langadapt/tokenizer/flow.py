"""Stage 2, tokenizer: adapt the base tokenizer to the target language and measure it.

The method (`tokenizer.method`, see `langadapt list tokenizer-methods`) writes the adapted
tokenizer; this flow then measures base and adapted tokenizers on the held-out text of
every language in the corpus (fertility, bytes per token, continued-word ratio, UNK and
byte-fallback rates) and, when the recipe names parallel text, the parity of the target
language against a reference language, and writes `tokenizer/metrics.json`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from langadapt.documents import languages, read_docs, read_texts
from langadapt.models.loading import load_tokenizer, resolve_base
from langadapt.rundir import RunDir, StageContext, write_json
from langadapt.stage import run_stage
from langadapt.tokenizer import extend, replace, translit, trim  # noqa: F401  (register their methods)
from langadapt.tokenizer.methods import TOKENIZER_METHODS, MethodInputs
from langadapt.tokenizer.metrics import parity, tokenizer_metrics
from langadapt.tokenizer.state import check_extendable

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from langadapt.recipe import Recipe

log = logging.getLogger(__name__)
NAME = "tokenizer"
__all__ = ["TOKENIZER_METHODS", "check_extendable", "run", "tokenizer_metrics"]


def _build(recipe: "Recipe", rd: RunDir, ctx: StageContext) -> None:
    target_lang, replay_lang = languages(rd)
    base = load_tokenizer(resolve_base(recipe.model), recipe.model.revision)
    inputs = MethodInputs(
        base=base,
        target_texts=read_texts(rd, target_lang, "train"),
        replay_texts=read_texts(rd, replay_lang, "train") if replay_lang else [],
        recipe=recipe,
        rd=rd,
        out=ctx.out,
    )
    info = TOKENIZER_METHODS.get(recipe.tokenizer.method)(inputs)
    adapted = load_tokenizer(str(ctx.out))
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
    if recipe.tokenizer.parity_target is not None:
        metrics["parity"] = _parity(recipe, rd, target_lang, base, adapted)
    write_json(ctx.out / "metrics.json", metrics)


def _parity(
    recipe: "Recipe", rd: RunDir, target_lang: str, base: "PreTrainedTokenizerBase", adapted: "PreTrainedTokenizerBase"
) -> dict[str, Any]:
    """Parity before and after on documents of the two parallel sources that share an id.

    When the parallel target text is the corpus's own text, only held-out documents are
    used, so the adapted tokenizer is not measured on what it was trained on.
    """
    from langadapt.sources.reading import read_source

    cfg = recipe.tokenizer
    assert cfg.parity_target is not None and cfg.parity_reference is not None
    target = {d.id: d.text for d in read_source(cfg.parity_target)[0]}
    pairs = [(target[d.id], d.text, d.id) for d in read_source(cfg.parity_reference)[0] if d.id in target]
    heldout = {d.id for d in read_docs(rd.path("corpus") / target_lang / "heldout.parquet")}
    held_pairs = [p for p in pairs if p[2] in heldout]
    used = held_pairs or pairs
    used = used[: cfg.parity_max_pairs]
    texts = [(t, r) for t, r, _ in used]
    out = {
        "reference_language": cfg.parity_reference.language,
        "pairs_from": "heldout" if held_pairs else "all aligned documents",
        "aligned_documents": len(pairs),
        "base": parity(base, texts),
        "adapted": parity(adapted, texts),
    }
    if texts:
        log.info(
            "parity %s/%s over %d pairs: %.2f -> %.2f",
            target_lang,
            cfg.parity_reference.language,
            len(texts),
            out["base"]["parity"],
            out["adapted"]["parity"],
        )
    return out


def inputs(recipe: "Recipe", rd: RunDir) -> dict[str, Any]:
    from langadapt.sources.reading import source_identity

    t = recipe.tokenizer
    return {
        "corpus": rd.fingerprint_of("corpus"),
        "model": recipe.to_dict()["model"],
        "config": recipe.to_dict()["tokenizer"],
        "texts": [source_identity(s) for s in (*t.trim_sources, t.parity_target, t.parity_reference) if s is not None],
    }


def run(recipe: "Recipe", rd: RunDir, force: bool = False) -> Path:
    return run_stage(NAME, recipe, rd, inputs(recipe, rd), _build, force)
