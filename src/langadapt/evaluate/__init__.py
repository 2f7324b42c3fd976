"""Stage 5, eval: base model vs adapted model, per language, in bits per byte.

Bits per byte (total negative log-likelihood in bits / UTF-8 bytes of the text) compares
models with different tokenizers fairly, where per-token perplexity would not. Every
document starts with the model's separator token (as in training) and is scored in full;
documents longer than the context are scored with a sliding window where each token is
predicted once, with at least `context_length - stride` tokens of context after the first
window. Sets: held-out target text, held-out replay text (in-domain: same held-out groups)
and any `eval.extra_sets` (e.g. out-of-domain source-language text, to catch forgetting).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from langadapt.documents import languages, normalize, read_texts
from langadapt.evaluate.bpb import bits_per_byte
from langadapt.evaluate.config import EvalConfig
from langadapt.models import load_model, load_tokenizer, resolve_base
from langadapt.rundir import RunDir, StageContext, write_json
from langadapt.sources import read_source, source_identity
from langadapt.stage import run_stage

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from langadapt.recipe import Recipe

log = logging.getLogger(__name__)
NAME = "eval"


@dataclass(frozen=True)
class EvalSet:
    name: str
    language: str
    kind: str  # target-heldout | replay-heldout | extra
    texts: list[str]
    skipped_documents: int
    skipped_characters: int


def _cap(name: str, language: str, kind: str, texts: list[str], max_chars: int) -> EvalSet:
    """Whole documents, in order, up to max_chars (at least one); the rest is counted."""
    kept, size = [], 0
    for t in texts:
        if kept and size + len(t) > max_chars:
            break
        kept.append(t)
        size += len(t)
    rest = texts[len(kept) :]
    return EvalSet(name, language, kind, kept, len(rest), sum(len(t) for t in rest))


def _clean_extra(docs: Any, recipe: "Recipe") -> list[str]:
    """Evaluation-only text, normalised like the corpus; too short or long and repeated documents are left out."""
    cfg, seen, out = recipe.corpus, set(), []
    for d in docs:
        text = normalize(d.text, cfg.normalization)
        if cfg.min_chars <= len(text) <= cfg.max_chars and text not in seen:
            seen.add(text)
            out.append(text)
    return out


def eval_sets(recipe: "Recipe", rd: RunDir) -> list[EvalSet]:
    target, replay = languages(rd)
    cap = recipe.eval.max_chars
    sets = []
    for lang, kind in ((target, "target-heldout"), (replay, "replay-heldout")):
        if lang:
            texts = read_texts(rd, lang, "heldout")
            sets.append(_cap(f"{lang}-heldout", lang, kind, texts, cap))
    for src in recipe.eval.extra_sets:
        docs, _ = read_source(src, recipe.corpus.docs_per_group)
        sets.append(_cap(src.name or src.language, src.language, "extra", _clean_extra(docs, recipe), cap))
    return sets


def evaluate_model(
    model: "PreTrainedModel", tok: "PreTrainedTokenizerBase", sets: list[EvalSet], cfg: EvalConfig, label: str
) -> dict[str, dict[str, float]]:
    out = {}
    for s in sets:
        out[s.name] = bits_per_byte(model, tok, s.texts, cfg, desc=f"{label}: {s.name}")
        log.info(
            "%s on %s: %.4f bits/byte (%d tokens)", label, s.name, out[s.name]["bits_per_byte"], out[s.name]["tokens"]
        )
    return out


def _build(recipe: "Recipe", rd: RunDir, ctx: StageContext) -> None:
    import torch

    if recipe.train.threads:
        torch.set_num_threads(recipe.train.threads)
    final = rd.require("train", "final/config.json") / "final"
    sets = eval_sets(recipe, rd)
    base_path = resolve_base(recipe.model)
    results: dict[str, Any] = {
        "sets": {
            s.name: {
                "language": s.language,
                "kind": s.kind,
                "documents": len(s.texts),
                "characters": sum(len(t) for t in s.texts),
                "skipped_documents": s.skipped_documents,
                "skipped_characters": s.skipped_characters,
            }
            for s in sets
        },
        "models": {"base": recipe.model.base, "adapted": str(final)},
        "bits_per_byte": {},
    }
    scores = {}
    for label, path in (("base", base_path), ("adapted", str(final))):
        model = load_model(path, recipe.model.dtype)
        scores[label] = evaluate_model(model, load_tokenizer(path), sets, recipe.eval, label)
        del model
    for s in sets:
        b, a = scores["base"][s.name], scores["adapted"][s.name]
        results["bits_per_byte"][s.name] = {
            "base": b["bits_per_byte"],
            "adapted": a["bits_per_byte"],
            "relative_change": (a["bits_per_byte"] - b["bits_per_byte"]) / b["bits_per_byte"],
            "base_tokens": b["tokens"],
            "adapted_tokens": a["tokens"],
            "bytes": b["bytes"],
        }
    write_json(ctx.out / "results.json", results)


def inputs(recipe: "Recipe", rd: RunDir) -> dict[str, Any]:
    return {
        "train": rd.fingerprint_of("train"),
        "corpus": rd.fingerprint_of("corpus"),
        "model": recipe.to_dict()["model"],
        "config": recipe.to_dict()["eval"],
        "extra": [source_identity(s) for s in recipe.eval.extra_sets],
    }


def run(recipe: "Recipe", rd: RunDir, force: bool = False) -> Path:
    return run_stage(NAME, recipe, rd, inputs(recipe, rd), _build, force)
