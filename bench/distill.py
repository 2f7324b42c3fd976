"""Distillation on a finished run: the student against its teacher and against a from-scratch model of its size.

    python bench/distill.py --run-dir runs/demo [--steps 60] [--layers-every 3 | --layers 0,3,...] [--vocab-size N]

1. the distill stage on the run (`langadapt distill`; resumable, skipped when up to date): the adapted
   model is the teacher, the student keeps a trimmed vocabulary and the chosen layers;
2. the baseline: the student's architecture (its config: layers, width, vocabulary and tokenizer)
   randomly initialised and trained with plain CLM (MLM for an encoder) on the same number of tokens:
   the same steps, sequences per step, sequence length, replay mix and learning-rate schedule, from the
   same token streams (resumable too, in <run>/bench-distill/scratch);
3. all three scored on the same held-out text (the eval stage's bits per byte) and timed on the same
   forward passes on this machine.

It passes when the student has at most 40% of the teacher's parameters, its held-out target bits per
byte is within 10% of the teacher's and below the from-scratch model's; it exits 1 otherwise. The last
line is `ratio: R`, the teacher's parameters over the student's (goal R >= 2.5).
"""

from __future__ import annotations

import argparse
import logging
import sys
from functools import partial
from pathlib import Path

from langadapt.devices import autocast, resolve_device, resolve_eval_precision
from langadapt.distill.flow import forward_speed, student_schedule
from langadapt.distill.student import parameter_count
from langadapt.documents import languages, leading_documents, read_texts, split_file
from langadapt.models.loading import is_encoder, load_tokenizer
from langadapt.models.separator import document_separator
from langadapt.pipeline import run
from langadapt.recipe import Recipe
from langadapt.rundir import RunDir, read_json, write_json
from langadapt.scoring.bpb import bits_per_byte
from langadapt.scoring.pppl import score as pseudo_bits_per_byte
from langadapt.train.data import TokenStream
from langadapt.train.loop import train_loop
from langadapt.train.mlm import MaskingPlan, masked_lm
from langadapt.train.tokenised import TokenCache, tokenizer_fingerprint

log = logging.getLogger("bench.distill")
MAX_PARAMETER_SHARE = 0.40
WITHIN_TEACHER = 0.10


def train_scratch(recipe: Recipe, rd: RunDir, summary: dict, out: Path):  # type: ignore[no-untyped-def]
    """The student's architecture, randomly initialised, trained like the student but on the plain objective."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForMaskedLM

    student_dir = rd.path("distill") / "student"
    tok = load_tokenizer(str(student_dir))
    config = AutoConfig.from_pretrained(student_dir)
    encoder = is_encoder(config)
    final = out / "final"
    if (final / "config.json").is_file():
        cls = AutoModelForMaskedLM if encoder else AutoModelForCausalLM
        return cls.from_pretrained(final), tok
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(recipe.seed)
    model = (AutoModelForMaskedLM if encoder else AutoModelForCausalLM).from_config(config).float()
    target, replay = languages(rd)
    cfg = recipe.train
    replay = replay if cfg.replay_ratio else None
    separator = document_separator(tok, masked=encoder)
    cache = TokenCache(rd.root / "cache" / "distill" / "tokens", tok, tokenizer_fingerprint(student_dir, tok), True)
    streams = {}
    for lang in (target, replay):
        if lang:
            docs = cache.documents(lang, "train", split_file(rd, lang, "train"), partial(read_texts, rd, lang, "train"))
            streams[lang] = TokenStream(docs, tok, separator.id, cfg.seq_len, recipe.seed + len(streams))
    schedule = student_schedule(recipe)  # the student's own schedule, on the plain objective
    objective = masked_lm(MaskingPlan.from_tokenizer(tok, cfg)) if encoder else None
    trained = train_loop(model, streams, target, replay, schedule, out, objective=objective)
    assert trained["tokens"] == summary["training"]["tokens"], (trained["tokens"], summary["training"]["tokens"])
    model.save_pretrained(final)
    write_json(out / "summary.json", trained)
    return model, tok


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run-dir", type=Path, required=True, help="a finished run (its train stage done); written into")
    ap.add_argument("--steps", type=int, default=60, help="distillation steps, and the from-scratch model's")
    ap.add_argument("--layers-every", type=int, default=3, help="the student keeps every k-th teacher layer")
    ap.add_argument("--layers", default="", help="explicit teacher layers, comma-separated (instead of --layers-every)")
    ap.add_argument("--vocab-size", type=int, default=0, help="cap on the student's vocabulary (0: every used token)")
    ap.add_argument("--lr", type=float, default=1e-3, help="peak learning rate of both trainings")
    ap.add_argument(
        "--warmup", type=int, default=-1, help="warmup steps of both trainings (-1: steps // 8, at least 1)"
    )
    ap.add_argument(
        "--batch-size", type=int, default=0, help="sequences per step of both trainings (0: the run's train.batch_size)"
    )
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")

    rd = RunDir(args.run_dir)
    sets = [
        "distill.enabled=true",
        f"distill.max_steps={args.steps}",
        f"distill.layers_every={args.layers_every}",
        f"distill.layers=[{args.layers}]",
        f"distill.vocab_size={args.vocab_size}",
        f"distill.lr={args.lr}",
        f"distill.warmup_steps={args.warmup if args.warmup >= 0 else max(1, args.steps // 8)}",
        f"distill.save_every={max(1, args.steps // 4)}",
        f"train.threads={args.threads}",
        *([f"train.batch_size={args.batch_size}", "train.tokens_per_step=0"] if args.batch_size else []),
        f"run_dir={rd.root}",
    ]
    recipe = Recipe.from_yaml(rd.root / "recipe.yaml", overrides=sets)
    run(recipe, stages=("distill",))
    summary = read_json(rd.path("distill") / "summary.json")
    scratch, scratch_tok = train_scratch(recipe, rd, summary, rd.root / "bench-distill" / "scratch")

    # the from-scratch model on the same held-out text and forward passes as teacher and student
    device = resolve_device(recipe.eval.device)
    scratch.to(device)
    precision = resolve_eval_precision(recipe.eval.precision, device)
    target, replay = languages(rd)
    held = {
        f"{lang}-heldout": leading_documents(read_texts(rd, lang, "heldout"), recipe.eval.max_chars)
        for lang in (target, replay)
        if lang
    }
    scorer = pseudo_bits_per_byte if is_encoder(scratch.config) else bits_per_byte
    with autocast(device, precision):
        scratch_bpb = {name: scorer(scratch, scratch_tok, t, recipe.eval)["bits_per_byte"] for name, t in held.items()}
        scratch_speed = forward_speed(
            scratch, scratch_tok, held[f"{target}-heldout"], recipe.distill.speed_tokens, recipe.train.seq_len
        )
    n_teacher, n_student = summary["teacher_parameters"], summary["student_parameters"]
    assert parameter_count(scratch) == n_student

    bpb = summary["bits_per_byte"]
    speed = summary["inference"]
    print(
        f"\nteacher: {rd.path('train') / 'final'}; student: teacher layers {summary['student_layers']} of "
        f"{summary['teacher_layers']}, {summary['vocabulary']['student_tokens']:,} of "
        f"{summary['vocabulary']['teacher_tokens']:,} tokens; {summary['training']['steps']} steps, "
        f"tokens {summary['training']['tokens']} (the from-scratch model: the same)"
    )
    print(f"{'':28s} {'teacher':>12s} {'student':>12s} {'from scratch':>13s}")
    print(f"{'parameters':28s} {n_teacher:12,d} {n_student:12,d} {n_student:13,d}")
    for name in held:
        print(
            f"{name + ' bits/byte':28s} {bpb[name]['teacher']:12.4f} {bpb[name]['student']:12.4f} {scratch_bpb[name]:13.4f}"
        )
    print(
        f"{'inference tokens/s':28s} {speed['teacher']['tokens_per_s']:12,.0f} {speed['student']['tokens_per_s']:12,.0f} "
        f"{scratch_speed['tokens_per_s']:13,.0f}   (forward passes of {speed['teacher']['tokens']} tokens, same machine)"
    )
    name = f"{target}-heldout"
    share = n_student / n_teacher
    gap = bpb[name]["student"] / bpb[name]["teacher"] - 1
    checks = {
        f"student parameters {100 * share:.1f}% of the teacher's (at most {100 * MAX_PARAMETER_SHARE:.0f}%)": share
        <= MAX_PARAMETER_SHARE,
        f"{name}: student {100 * gap:+.1f}% against the teacher (within {100 * WITHIN_TEACHER:.0f}%)": gap
        <= WITHIN_TEACHER,
        f"{name}: student {bpb[name]['student']:.4f} below from scratch {scratch_bpb[name]:.4f}": bpb[name]["student"]
        < scratch_bpb[name],
    }
    for text, ok in checks.items():
        print(f"{'PASS' if ok else 'FAIL'}  {text}")
    write_json(
        rd.root / "bench-distill" / "result.json",
        {
            "summary": summary,
            "scratch_bits_per_byte": scratch_bpb,
            "scratch_inference": scratch_speed,
            "checks": checks,
        },
    )
    print(f"ratio: {n_teacher / n_student:.2f}")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
