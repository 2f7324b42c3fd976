"""The reference stage (`reference/`): a model trained from scratch on the same cleaned text, beside the adapted one.

Would a small monolingual model trained from scratch have done as well as adapting a large
one? `eval.reference: scratch` trains one (Goldfish's recipe, `scratch.py`) on the corpus
stage's target training text, with the tokenizer the scratch-tokenizer stage trained for it
(`scratch-tokenizer/`), and writes it to `reference/final/`; the eval stage scores it on the
same held-out text (in bits per byte, fair across the two tokenizers) and tasks, and the report
puts base, adapted and from-scratch side by side. The stage resumes like training does (the
newest checkpoint in `reference.partial/checkpoints/`), and `train.method: scratch` trains the
run's own model the same way (`train_from_scratch`).
"""

from __future__ import annotations

import logging
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from langadapt.devices import resolve_device
from langadapt.documents import languages, read_texts, split_file
from langadapt.errors import ConfigError, StageError
from langadapt.models.loading import load_config, load_tokenizer
from langadapt.models.separator import document_separator
from langadapt.rundir import RunDir, StageContext, write_json
from langadapt.sources.reading import read_source
from langadapt.stage import run_stage
from langadapt.train import scratch
from langadapt.train.adapters import save_final
from langadapt.train.data import HELDOUT_CANDIDATES, TokenStream
from langadapt.train.loop import set_dropout
from langadapt.train.mlm import MaskingPlan, masked_lm
from langadapt.train.objectives import OBJECTIVES
from langadapt.train.phases import run_phases
from langadapt.train.precision import weights_dtype
from langadapt.train.processes import launched_rank, launched_world_size
from langadapt.train.tokenised import TokenCache, tokenizer_fingerprint

if TYPE_CHECKING:
    from langadapt.recipe import Recipe

log = logging.getLogger(__name__)
NAME = "reference"
SCRATCH_TOKENIZER = "scratch-tokenizer"  # the stage that trains its tokenizer


def byte_premium(recipe: "Recipe") -> dict[str, Any]:
    """train.scratch.byte_premium as given, or measured on the recipe's parallel text with English."""
    given = recipe.train.scratch.byte_premium
    if given > 0:
        return {"byte_premium": given, "source": "train.scratch.byte_premium"}
    pair = scratch.parallel_sources(recipe)
    problems = scratch.byte_premium_problems(recipe)
    if pair is None or problems:
        raise ConfigError(problems)
    target, english = (read_source(s)[0] for s in pair)
    out = scratch.measure_byte_premium(target, english)
    out["source"] = f"measured on {pair[0].path} against {pair[1].path}, documents paired by id"
    return out


def train_from_scratch(recipe: "Recipe", rd: RunDir, out: Path) -> dict[str, Any]:
    """Size, build and train the from-scratch model into `out` (resuming from its checkpoints); its summary.

    Writes `out/final/` (model and tokenizer) and returns the training summary with the sizing
    decision under `scratch`: corpus bytes, byte premium, English-equivalent MB, the table's row
    and the schedule.
    """
    import torch

    if launched_world_size() > 1:
        raise StageError(
            "a from-scratch model trains in one process, and this one was started by a multi-process launcher",
            hint="run its stage alone first (langadapt reference RECIPE, or langadapt train RECIPE for "
            "train.method scratch); a launched run then skips it as finished",
        )
    cfg = recipe.train
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    tok_dir = rd.require(SCRATCH_TOKENIZER, "tokenizer.json")
    init_dir = rd.require("init", "config.json")
    tok = load_tokenizer(str(tok_dir))
    base = load_config(str(init_dir))  # the base's config class and shape (the init stage's copy)
    target, _ = languages(rd)
    texts = read_texts(rd, target, "train")
    premium = byte_premium(recipe)
    corpus_bytes = sum(len(t.encode("utf-8")) for t in texts)
    size = scratch.choose_size(scratch.scaled_megabytes(corpus_bytes, premium["byte_premium"]), cfg.scratch)
    config = scratch.scratch_config(base, tok, size)
    seq_len = scratch.sequence_length(cfg.scratch, config)

    masked = cfg.objective == "mlm"
    separator = document_separator(tok, masked=masked)
    cache = TokenCache(rd.root / "cache" / "train" / "tokens", tok, tokenizer_fingerprint(tok_dir, tok))
    docs = cache.documents(target, "train", split_file(rd, target, "train"), partial(read_texts, rd, target, "train"))
    corpus_tokens = docs.n_tokens + len(docs)  # each document starts with the separator
    schedule = scratch.steps_for(cfg.scratch, corpus_tokens, seq_len, size.batch_size)
    sub = scratch.scratch_recipe(recipe, seq_len, size, schedule)
    log.info(
        "from scratch: %d bytes / byte premium %.3f = %.2f English-equivalent MB -> tier %s, %s, batch %d; "
        "%d steps (%s epochs of %d tokens)",
        corpus_bytes,
        premium["byte_premium"],
        size.scaled_mb,
        size.tier,
        scratch.describe(size),
        size.batch_size,
        schedule["steps"],
        schedule["epochs_scheduled"],
        corpus_tokens,
    )
    stream = TokenStream(docs, tok, separator.id, seq_len, recipe.seed)
    if cfg.eval_every:
        heldout = read_texts(rd, target, "heldout")
        stream.heldout = heldout
        stream.heldout_ids = cache.documents(
            target, "heldout", split_file(rd, target, "heldout"), heldout.copy, limit=HELDOUT_CANDIDATES
        )
    objective = masked_lm(MaskingPlan.from_tokenizer(tok, sub.train, launched_rank())) if masked else None
    objective = objective or OBJECTIVES.get(cfg.objective)
    model = scratch.build_model(config, recipe.seed)
    if cfg.dropout >= 0:  # train.dropout: the fresh model's own dropout layers, as for an adapted model
        set_dropout(model, cfg.dropout)
    n_params = scratch.parameters(model)
    model, summary = run_phases(model, [], {target: stream}, target, None, sub, out, objective)
    save_final(model, tok, out / "final", weights_dtype(recipe, resolve_device(cfg.device)))
    trained = sum(summary.get("tokens", {}).values())
    summary.update(
        parameters=n_params,
        document_separator=separator.record(),
        training_flops=summary.get("model_flops_per_token", 0) * trained,
        streams={target: {"epochs_completed": stream.epoch, "documents": len(docs), "tokens": docs.n_tokens}},
        scratch={
            "corpus_bytes": corpus_bytes,
            **{k: v for k, v in premium.items() if k != "bytes"},
            "size": size.record(),
            "architecture": {
                "config_class": type(config).__name__,
                "layers": size.layers,
                "hidden": size.hidden,
                "heads": size.hidden // scratch.HEAD_DIM,
                "ffn": getattr(config, "intermediate_size", None) or getattr(config, "n_inner", None),
                "vocab_size": config.vocab_size,
                "vocabulary": cfg.scratch.vocabulary,
            },
            "seq_len": seq_len,
            "corpus_tokens": corpus_tokens,
            "schedule": schedule,
            "epochs_trained": round(trained / corpus_tokens, 3),
            "lr": cfg.scratch.lr,
        },
    )
    return summary


def _build(recipe: "Recipe", rd: RunDir, ctx: StageContext) -> None:
    summary = train_from_scratch(recipe, rd, ctx.out)
    write_json(ctx.out / "summary.json", summary)


def inputs(recipe: "Recipe", rd: RunDir) -> dict[str, Any]:
    cfg = recipe.to_dict()["train"]
    # what the from-scratch training reads from the train section (train.scratch, and the loop's own settings);
    # where it runs, in how many pieces and with how many threads do not change what it computes
    keep = (
        "scratch",
        "objective",
        "precision",
        "low_precision_master_weights",
        "dropout",
        "grad_clip",
        "packed_attention",
        "early_stopping_patience",
        "save_every",
        "keep_checkpoints",
        "eval_every",
        "eval_tokens",
    )
    return {
        "corpus": rd.fingerprint_of("corpus"),
        SCRATCH_TOKENIZER: rd.fingerprint_of(SCRATCH_TOKENIZER),
        "model": recipe.to_dict()["model"],  # the base's config class and shape (read from model-init/config.json)
        "config": {k: cfg[k] for k in keep} | {"mlm": {k: v for k, v in cfg.items() if k.startswith("mlm_")}},
        "model_dtype": weights_dtype(recipe),
        "seed": recipe.seed,
    }


def run(recipe: "Recipe", rd: RunDir, force: bool = False) -> Path:
    """The reference stage, when the recipe asks for one (eval.reference: scratch); else nothing is done."""
    if recipe.eval.reference != "scratch":
        log.info("[%s] not requested (eval.reference is empty)", NAME)
        return rd.path(NAME)
    return run_stage(NAME, recipe, rd, inputs(recipe, rd), _build, force)
