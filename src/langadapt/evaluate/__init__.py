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
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from langadapt import corpus as corpus_stage
from langadapt.models import doc_separator_id, load_model, load_tokenizer, resolve_base
from langadapt.progress import track
from langadapt.recipe import EvalConfig, Recipe
from langadapt.rundir import RunDir, StageContext, write_json
from langadapt.sources import read_source, source_identity
from langadapt.stage import run_stage

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

log = logging.getLogger(__name__)
NAME = "eval"
BATCH = 4


@dataclass(frozen=True)
class EvalSet:
    name: str
    language: str
    kind: str  # target-heldout | replay-heldout | extra
    texts: list[str]
    skipped_documents: int
    skipped_characters: int


def windows(n: int, context: int, stride: int) -> list[tuple[int, int, int]]:
    """(begin, end, scored) windows over a sequence of n tokens; token 0 is never scored.

    The last `scored` tokens of ids[begin:end] are scored; together they cover 1..n-1
    exactly once.
    """
    out = []
    prev_end = 1  # the separator at position 0 is context only
    begin = 0
    while prev_end < n:
        end = min(begin + context, n)
        out.append((begin, end, end - prev_end))
        prev_end = end
        begin = end - (context - stride)
    return out


def bits_per_byte(
    model: "PreTrainedModel", tok: "PreTrainedTokenizerBase", texts: list[str], cfg: EvalConfig, desc: str = ""
) -> dict[str, float]:
    import torch
    import torch.nn.functional as F

    sep = doc_separator_id(tok)
    pieces: list[tuple[list[int], int]] = []  # (window ids, scored tail length)
    n_tokens = 0
    for ids in tok(texts, add_special_tokens=False)["input_ids"]:
        ids = [sep] + ids
        n_tokens += len(ids) - 1
        pieces.extend((ids[b:e], s) for b, e, s in windows(len(ids), cfg.context_length, cfg.stride))
    pieces.sort(key=lambda p: len(p[0]))
    pad = tok.pad_token_id if tok.pad_token_id is not None else sep
    total_nats = 0.0
    model.eval()
    batches = [pieces[i : i + BATCH] for i in range(0, len(pieces), BATCH)]
    with torch.no_grad():
        for batch in track(batches, desc or "scoring"):
            width = max(len(ids) for ids, _ in batch)
            input_ids = torch.full((len(batch), width), pad, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for i, (ids, _) in enumerate(batch):
                input_ids[i, : len(ids)] = torch.tensor(ids)
                mask[i, : len(ids)] = 1
            logits = model(input_ids=input_ids, attention_mask=mask).logits.float()
            for i, (ids, scored) in enumerate(batch):
                n = len(ids)
                pred = logits[i, n - 1 - scored : n - 1]
                gold = input_ids[i, n - scored : n]
                total_nats += F.cross_entropy(pred, gold, reduction="sum").item()
    n_bytes = sum(len(t.encode("utf-8")) for t in texts)
    return {
        "bits_per_byte": total_nats / math.log(2) / n_bytes,
        "tokens": n_tokens,
        "bytes": n_bytes,
        "bits_per_token": total_nats / math.log(2) / max(n_tokens, 1),
    }


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


def eval_sets(recipe: Recipe, rd: RunDir) -> list[EvalSet]:
    corpus_dir = rd.require("corpus", "stats.json")
    target, replay = corpus_stage.languages(rd)
    cap = recipe.eval.max_chars
    sets = []
    for lang, kind in ((target, "target-heldout"), (replay, "replay-heldout")):
        if lang:
            texts = [d.text for d in corpus_stage.read_docs(corpus_dir / lang / "heldout.parquet")]
            sets.append(_cap(f"{lang}-heldout", lang, kind, texts, cap))
    for src in recipe.eval.extra_sets:
        docs, _ = read_source(src, recipe.corpus.docs_per_group)
        kept, _dropped = corpus_stage.clean(docs, recipe.corpus)
        sets.append(_cap(src.name or src.language, src.language, "extra", [d.text for d in kept], cap))
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


def _build(recipe: Recipe, rd: RunDir, ctx: StageContext) -> None:
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


def inputs(recipe: Recipe, rd: RunDir) -> dict[str, Any]:
    return {
        "train": rd.fingerprint_of("train"),
        "corpus": rd.fingerprint_of("corpus"),
        "model": recipe.to_dict()["model"],
        "config": recipe.to_dict()["eval"],
        "extra": [source_identity(s) for s in recipe.eval.extra_sets],
    }


def run(recipe: Recipe, rd: RunDir, force: bool = False) -> Path:
    return run_stage(NAME, recipe, rd, inputs(recipe, rd), _build, force)
