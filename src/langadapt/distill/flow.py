"""Stage distill: the trained model (teacher) distilled into a small language-specific student.

Top to bottom: the teacher is `train/final/` (the merged adapted model); the student's
vocabulary is the teacher's tokenizer trimmed to what the target and replay training text
use (the tokenizer stage's `trim`, rows copied from the teacher); its layers are every k-th
of the teacher's (or `distill.layers`); it trains with the train stage's loop (same data
streams and replay mix, same checkpoints, so an interrupted distillation resumes where it
stopped) on the distillation objective (`losses.py`). Then teacher and student are scored
on the same held-out text (bits per byte; encoders: pseudo bits per byte) and timed on the
same forward passes, and `distill/summary.json` holds both side by side.

This flow composes other stages' parts (the tokenizer's trim, the train loop and its
masking plan): it is the one stage that is built from them, run on the teacher's outputs.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import time
from collections import Counter
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from langadapt.devices import autocast, describe_device, resolve_device, resolve_dtype, resolve_eval_precision
from langadapt.distill.card import student_card
from langadapt.distill.checks import teacher_problems
from langadapt.distill.losses import Distillation
from langadapt.distill.student import build_student, layer_list, parameter_count, student_layers
from langadapt.documents import languages, leading_documents, read_texts, split_file
from langadapt.errors import ConfigError
from langadapt.models.encoder import document_inputs
from langadapt.models.loading import is_encoder, load_config, load_model, load_tokenizer
from langadapt.models.separator import document_separator
from langadapt.rundir import RunDir, StageContext, read_json, write_json
from langadapt.scoring.bpb import bits_per_byte
from langadapt.scoring.pppl import score as pseudo_bits_per_byte
from langadapt.stage import run_stage
from langadapt.tokenizer.state import alphabet, special_tokens, tokenizer_from_state, tokenizer_state, vocab_of
from langadapt.tokenizer.trim import choose, restrict, token_counts
from langadapt.train.data import TokenStream
from langadapt.train.loop import train_loop
from langadapt.train.mlm import MaskingPlan
from langadapt.train.tokenised import TokenCache, tokenizer_fingerprint

if TYPE_CHECKING:
    from langadapt.recipe import Recipe

log = logging.getLogger(__name__)
NAME = "distill"
STUDENT = "student"


def trim_vocabulary(
    teacher_tok: Any, texts: dict[str, list[str]], vocab_size: int, min_count: int, folder: Path
) -> tuple[Any, list[int], dict[str, Any]]:
    """(student tokenizer saved in `folder`, teacher id of each student id, record) from the teacher's tokenizer.

    The tokenizer stage's trim: special and added tokens and the alphabet (single characters,
    byte pieces: any text stays encodable) always, then the tokens `texts` use at least
    `min_count` times, most used first, up to `vocab_size` (0: no cap); ids in the teacher's order.
    """
    state = tokenizer_state(teacher_tok)
    counts: Counter = Counter()
    for t in texts.values():
        counts.update(token_counts(teacher_tok, t))
    always = special_tokens(teacher_tok) | {t["content"] for t in state.get("added_tokens", [])} | alphabet(state)
    keep = choose(state, always, counts, min_count, vocab_size)
    trimmed = restrict(state, keep)
    old, new = vocab_of(state), vocab_of(trimmed)
    kept_ids = [old[t] for t, _ in sorted(new.items(), key=lambda kv: kv[1])]
    tok = tokenizer_from_state(teacher_tok, trimmed, folder)
    record = {
        "teacher_tokens": len(teacher_tok),
        "student_tokens": len(kept_ids),
        "tokens_used_in_text": sum(1 for n in counts.values() if n >= min_count),
        "texts": {lang: len(t) for lang, t in texts.items()},
    }
    return tok, kept_ids, record


def _build(recipe: "Recipe", rd: RunDir, ctx: StageContext) -> None:
    import torch

    d, cfg = recipe.distill, recipe.train
    final = rd.path("train") / "final"
    target, replay = languages(rd)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(recipe.seed)
    device = resolve_device(cfg.device)
    encoder = is_encoder(load_config(str(final)))
    attention = "eager" if encoder and d.attention_weight else recipe.model.attn_implementation
    dtype = resolve_dtype(recipe.model.dtype, device, cfg.precision)
    teacher = load_model(str(final), dtype, device=device, attn_implementation=attention)
    teacher.eval().requires_grad_(False)
    teacher_tok = load_tokenizer(str(final))

    # the student: trimmed vocabulary (target and replay training text), chosen layers, the teacher's rows
    texts = {lang: read_texts(rd, lang, "train") for lang in (target, replay) if lang}
    folder = ctx.out / STUDENT
    tok, kept_ids, vocab = trim_vocabulary(teacher_tok, texts, d.vocab_size, d.vocab_min_count, folder)
    layers = student_layers(d, teacher.config.num_hidden_layers)
    student = build_student(teacher, kept_ids, layers).float()  # trained weights are float32 master copies
    if encoder and d.attention_weight:
        student.config._attn_implementation = "eager"
    n_teacher, n_student = parameter_count(teacher), parameter_count(student)
    if n_student >= n_teacher:
        raise ConfigError(
            [
                f"distill: the student has {n_student:,} parameters, not fewer than its teacher's {n_teacher:,}; "
                "keep fewer layers or cap distill.vocab_size"
            ]
        )
    log.info(
        "distill: student of %d layers %s and %d tokens: %.1fM parameters, teacher %.1fM (ratio %.2f)",
        len(layers),
        list(layers),
        len(kept_ids),
        n_student / 1e6,
        n_teacher / 1e6,
        n_teacher / n_student,
    )

    # the data: the corpus as train streams it, in the student's tokens, with train's replay mix
    separator = document_separator(tok, masked=encoder)
    cache = TokenCache(rd.root / "cache" / "distill" / "tokens", tok, tokenizer_fingerprint(folder, tok), True)
    streams = {}
    for lang in (target, replay if cfg.replay_ratio else None):
        if lang:
            docs = cache.documents(lang, "train", split_file(rd, lang, "train"), partial(read_texts, rd, lang, "train"))
            streams[lang] = TokenStream(docs, tok, separator.id, cfg.seq_len, recipe.seed + len(streams))
    objective = Distillation(
        teacher,
        layer_list(teacher)[1],
        layer_list(student)[1],
        torch.tensor(kept_ids, device=device),
        list(enumerate(layers)),
        d,
        plan=MaskingPlan.from_tokenizer(tok, cfg) if encoder else None,
        packed_inputs=document_inputs,
    )
    schedule = student_schedule(recipe)
    trained = train_loop(
        student,
        streams,
        target,
        replay if cfg.replay_ratio else None,
        schedule,
        ctx.out,
        device=device,
        objective=objective,
    )
    # the loop's loss and speed records speak of the objective it was given and of the student's own FLOPs
    trained["loss"] = "distillation (distill.losses): logit KL + hidden-state matching" + (
        " + attention KL" if encoder and d.attention_weight else ""
    )
    trained["flops_counted"] = (
        "the student's forward and backward passes only; the teacher's forward passes are not in the MFU"
    )
    student.save_pretrained(folder)

    # teacher and student side by side: the same held-out text, the same forward passes timed
    precision = resolve_eval_precision(recipe.eval.precision, device)
    sets = {
        f"{lang}-heldout": leading_documents(read_texts(rd, lang, "heldout"), recipe.eval.max_chars)
        for lang in (target, replay)
        if lang
    }
    models = {"teacher": (teacher, teacher_tok), "student": (student, tok)}
    scores: dict[str, dict[str, Any]] = {}
    speed: dict[str, dict[str, float]] = {}
    for label, (model, model_tok) in models.items():
        scorer = pseudo_bits_per_byte if encoder else bits_per_byte
        with autocast(device, precision):
            scores[label] = {
                name: scorer(model, model_tok, t, recipe.eval, desc=f"{label}: {name}") for name, t in sets.items()
            }
            speed[label] = forward_speed(model, model_tok, sets[f"{target}-heldout"], d.speed_tokens, cfg.seq_len)
        for name, r in scores[label].items():
            log.info("%s on %s: %.4f bits/byte", label, name, r["bits_per_byte"])
    summary = {
        "teacher": str(final),
        "student": STUDENT,
        "teacher_parameters": n_teacher,
        "student_parameters": n_student,
        "parameter_ratio": round(n_teacher / n_student, 3),
        "teacher_layers": teacher.config.num_hidden_layers,
        "student_layers": list(layers),
        "vocabulary": vocab,
        "objective": "mlm" if encoder else "clm",
        "losses": {
            "temperature": d.temperature,
            "kl_weight": d.kl_weight,
            "hidden_weight": d.hidden_weight,
            "hidden_loss": d.hidden_loss,
            "attention_weight": d.attention_weight if encoder else 0.0,
        },
        "bits_per_byte": {name: {label: scores[label][name]["bits_per_byte"] for label in models} for name in sets},
        "metric": "pseudo_bits_per_byte" if encoder else "bits_per_byte",
        "scores": scores,
        "inference": speed,
        "precision": precision,
        "device": describe_device(device),
        "training": trained,
    }
    write_json(ctx.out / "summary.json", summary)
    write_json(folder / "distill_summary.json", summary)


def forward_speed(
    model: Any, tok: Any, texts: list[str], tokens: int, seq_len: int, repeats: int = 3
) -> dict[str, float]:
    """Forward-pass (inference) tokens/s on rows of `seq_len` tokens of `texts`, `tokens` in all: the best of
    `repeats` timed passes after one warm-up, no gradients."""
    import torch

    ids = [i for t in texts for i in tok(t, add_special_tokens=False)["input_ids"]]
    while len(ids) < tokens:
        ids = ids + ids
    rows = max(1, tokens // seq_len)
    batch = torch.tensor(ids[: rows * seq_len]).view(rows, seq_len).to(model.device)
    model.eval()
    times = []
    with torch.no_grad():
        model(input_ids=batch)
        for _ in range(repeats):
            if batch.device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            model(input_ids=batch)
            if batch.device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
    return {
        "tokens": batch.numel(),
        "seconds": round(min(times), 4),
        "tokens_per_s": round(batch.numel() / min(times), 1),
    }


def inputs(recipe: "Recipe", rd: RunDir) -> dict[str, Any]:
    train = recipe.to_dict()["train"]
    for key in (
        "threads",
        "device",
        "micro_batch_size",
        "gradient_checkpointing",
        "compile",
        "sharding",
        "peak_tflops",
    ):
        train.pop(key, None)  # where and in how many pieces it runs does not change what it computes
    return {
        "train": rd.fingerprint_of("train"),
        "corpus": rd.fingerprint_of("corpus"),
        "config": recipe.to_dict()["distill"],
        "train_config": train,  # the data: sequence length, batch, replay mix; the schedule's floor
        "eval": {k: recipe.to_dict()["eval"][k] for k in ("max_chars", "context_length", "stride", "precision")},
        "dtype": recipe.model.dtype,
        "seed": recipe.seed,
    }


def problems(recipe: "Recipe", rd: RunDir) -> list[str]:
    """What is wrong with distilling this run, read from its run directory and the teacher's config alone."""
    final = rd.path("train") / "final"
    trained = rd.is_complete("train") and (final / "config.json").is_file()
    return teacher_problems(recipe, load_config(str(final)) if trained else None, trained)


def run(recipe: "Recipe", rd: RunDir, force: bool = False) -> Path | None:
    """Distil when the recipe asks for it (`distill.enabled`); every bad choice is a ConfigError before any work."""
    if not recipe.distill.enabled:
        return None
    found = problems(recipe, rd)
    if found:
        raise ConfigError(found, source="distill")
    return run_stage(NAME, recipe, rd, inputs(recipe, rd), _build, force)


def export_student(rd: RunDir, to: Path, force: bool = False) -> Path:
    """Copy the finished student (model, tokenizer, summary) to `to`, with a model card."""
    from langadapt.errors import StageError

    src = rd.require(NAME, f"{STUDENT}/config.json", "summary.json") / STUDENT
    if to.exists():
        if not force and any(to.iterdir()):
            raise StageError(f"{to} exists and is not empty", hint="choose another --to folder, or pass --force")
        shutil.rmtree(to)
    shutil.copytree(src, to)
    summary = read_json(rd.path(NAME) / "summary.json")
    (to / "README.md").write_text(student_card(summary), encoding="utf-8")
    return to


def student_schedule(recipe: "Recipe") -> "Recipe":
    """The recipe the train loop runs for a student: every weight trains in one phase of distill.max_steps at
    distill.lr, in one process, checkpointing every distill.save_every steps, with no held-out evaluation."""
    cfg, d = recipe.train, recipe.distill
    return dataclasses.replace(
        recipe,
        train=dataclasses.replace(
            cfg,
            method="full",
            embeddings="all",
            max_steps=d.max_steps,
            lr=d.lr,
            embedding_lr=0.0,
            warmup_steps=d.warmup_steps,
            save_every=d.save_every,
            eval_every=0,
            early_stopping_patience=0,
            phases=(),
            sharding="none",
            log_to=(),
        ),
    )
