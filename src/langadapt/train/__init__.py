"""Stage 4, train: continued pretraining of the initialised model, resumable.

One explicit loop you can read top to bottom: build the trainable model (a registered
method wraps peft), stream packed sequences of the target language with replay of the
source language mixed in at `replay_ratio`, step the optimizer, log one line per step,
checkpoint every `save_every` steps. A re-run after an interruption restores the newest
checkpoint (trainable weights, optimizer, data position, RNG) and continues; the finished
model is merged into a plain HF folder `train/final/` for evaluation and export, and the
adapter is kept separately in `train/adapter/`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from langadapt.documents import languages, read_texts
from langadapt.models import doc_separator_id, load_model, load_tokenizer
from langadapt.rundir import RunDir, StageContext, read_json, write_json
from langadapt.stage import run_stage
from langadapt.train.data import TokenStream
from langadapt.train.loop import train_loop
from langadapt.train.methods import TRAIN_METHODS
from langadapt.train.objectives import OBJECTIVES

if TYPE_CHECKING:
    from langadapt.recipe import Recipe

log = logging.getLogger(__name__)
NAME = "train"
__all__ = ["OBJECTIVES", "TRAIN_METHODS", "run"]


def _build(recipe: "Recipe", rd: RunDir, ctx: StageContext) -> None:
    import torch

    cfg = recipe.train
    init_dir = rd.require("init", "config.json", "init_report.json")
    tok_metrics = read_json(rd.require("tokenizer", "metrics.json") / "metrics.json")
    target, replay = languages(rd)
    if cfg.replay_ratio == 0:
        replay = None
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(recipe.seed)

    tok = load_tokenizer(str(init_dir))
    model = load_model(str(init_dir), recipe.model.dtype)
    new_ids = list(tok_metrics.get("new_token_ids", []))
    model = TRAIN_METHODS.get(cfg.method)(model, cfg, new_ids)
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    n_all = sum(p.numel() for p in model.parameters())
    log.info("train: method %s, %.2fM of %.1fM parameters trainable", cfg.method, n_train / 1e6, n_all / 1e6)

    sep = doc_separator_id(tok)
    streams = {}
    for lang in (target, replay):
        if lang:
            texts = read_texts(rd, lang, "train")
            streams[lang] = TokenStream(texts, tok, sep, cfg.seq_len, recipe.seed + len(streams))
    summary = train_loop(model, streams, target, replay, recipe, ctx.out)

    # the merged model is what evaluation and export read; the adapter stays for those who want it
    if hasattr(model, "merge_and_unload"):
        model.save_pretrained(ctx.out / "adapter")
        model = model.merge_and_unload()
    model.save_pretrained(ctx.out / "final")
    tok.save_pretrained(ctx.out / "final")
    summary.update(
        method=cfg.method,
        trainable_parameters=n_train,
        total_parameters=n_all,
        streams={
            k: {"epochs_completed": s.epoch, "documents_started": s.documents_started, "documents": len(s.texts)}
            for k, s in streams.items()
        },
    )
    write_json(ctx.out / "summary.json", summary)


def inputs(recipe: "Recipe", rd: RunDir) -> dict[str, Any]:
    cfg = recipe.to_dict()["train"]
    cfg.pop("threads")  # how many cores ran it does not change what it computes
    return {
        "init": rd.fingerprint_of("init"),
        "corpus": rd.fingerprint_of("corpus"),
        "config": cfg,
        "dtype": recipe.model.dtype,
        "seed": recipe.seed,
    }


def run(recipe: "Recipe", rd: RunDir, force: bool = False) -> Path:
    return run_stage(NAME, recipe, rd, inputs(recipe, rd), _build, force)
