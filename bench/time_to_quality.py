"""Time to quality: how much sooner langadapt's demo recipe gets a good model than plain transformers + peft.

    python bench/time_to_quality.py                        # the demo's task, evaluated every 4 steps: `ratio: R`
    python bench/time_to_quality.py --run-dir runs/demo    # reuse that run's cleaned corpus
    python bench/time_to_quality.py --tiny                 # smoke run (a few small steps): checks the script only

The task is the demo's (`demo-nya-smollm2`): the bundled SmolLM2-135M adapted to Chichewa
with 10% English replay, 36 optimizer steps of 8 x 256 tokens, fp32. langadapt's corpus stage
runs once (or `--run-dir` names a run whose corpus stage has finished, which is only read),
and both sides train on the same cleaned training text and are scored on the eval stage's
held-out sets: held-out Chichewa, held-out English (the same held-out books) and the English
UDHR (out of domain), `eval.max_chars` each.

- langadapt: the demo recipe through `langadapt.pipeline.run`: the tokenizer stage (2,000
  new Chichewa tokens), the init stage (FVT rows) and the train stage (LoRA r=16 on every
  projection + the new rows, its loop, its checkpoints every 8 steps).
- Trainer: what a user writes from transformers' run_clm example: the base tokenizer,
  `group_texts` packing of each language's text (`train_throughput.group_texts`), the two
  mixed as `datasets.interleave_datasets` mixes them (each block English with probability
  `train.replay_ratio`, as each langadapt sequence is), the `Trainer` (which shuffles) with a
  peft LoRA of the same rank, alpha, dropout and target modules. Like with like: the same
  precision and micro-batch split as langadapt's run (read from its summary), the same tokens
  per step, peak learning rate, seed, gradient clipping, weight decay and AdamW betas
  (0.9, 0.95), and langadapt's learning-rate schedule itself (`train.loop.lr_at`: warmup,
  cosine to 10%; transformers' `cosine_with_min_lr` differs only in starting warmup at zero).
  The Trainer keeps its own defaults otherwise (its fused AdamW, a checkpoint at the end).

Each side runs in its own process. Its clock starts after the imports (the same for both:
torch, transformers, peft, langadapt, and DeepSpeed and bitsandbytes where installed, which
transformers and peft import on first use) and counts everything a user waits for: langadapt's
tokenizer and init stages and model loading, the Trainer's model loading, tokenisation and
packing of the whole corpus, then training. Evaluation is excluded from both clocks: each
point's wall time is the time since the start minus the time spent evaluating before it
(langadapt's data prefetcher may draw the next batch meanwhile, milliseconds of work). The
one-off import of the bundled model (GGUF) happens before either side and counts for
neither.

Both sides are scored at step 0 and every `--eval-every` steps with langadapt's scorer
(`scoring/bpb.py`: bits per byte, the eval stage's windows), each with its own tokenizer, so
the metric is identical. The points are equal in training tokens (both sides train the same
tokens per step), not in training text: langadapt's tokenizer packs more Chichewa into a
token, which is part of what is measured; what matters is the wall time on the x-axis. The
Trainer at step 0 is the base model itself (LoRA starts at zero), the reference English drift
is measured against.

The result: the wall time each side needs to reach the Trainer's final held-out Chichewa
figure (the first crossing, linear between evaluation points), English drift at that point
(interpolated likewise), and `ratio: R` = the Trainer's time over langadapt's. The goal on
2 CPU cores is R >= 2 with every English set within +2% of the base at langadapt's point;
the script says whether it was met. It exits non-zero when langadapt never reaches the figure.

`--tiny` reads only the first 240 chapters of each Bible (Ruth held out), trains 4 steps of
4 x 64 tokens, evaluates every 2 steps on 1,500 characters per set (at least one whole
document) and writes under runs/time-to-quality-tiny: its figures mean nothing. Everything
a run writes is under --out (runs/time-to-quality): the corpus stage's run (`corpus-run/`,
reused while up to date), langadapt's run (`langadapt-run/`) and the Trainer's output
(`trainer/`), both made anew each time, and every point of both sides in `results.json`.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import logging
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator

sys.path.insert(0, str(Path(__file__).parent))
from train_throughput import group_texts  # noqa: E402  (bench scripts share their helpers)

RECIPE = "demo-nya-smollm2"
GOAL_RATIO, GOAL_DRIFT = 2.0, 0.02
# --tiny: the first books only (Ruth held out), a few small steps and little held-out text, to check the
# script end to end in minutes
TINY = {
    "steps": 4,
    "eval_every": 2,
    "sets": [
        "corpus.target.max_documents=240",
        "corpus.replay.max_documents=240",
        "train.seq_len=64",
        "train.batch_size=4",
        "eval.max_chars=1500",
    ],
}


class Clock:
    """Wall time since the start, less the time spent inside `paused()` (evaluation)."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.excluded = 0.0

    def now(self) -> float:
        return time.perf_counter() - self.start - self.excluded

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        t = time.perf_counter()
        try:
            yield
        finally:
            self.excluded += time.perf_counter() - t


class Scorer:
    """Scores a model on the held-out sets at an evaluation point, outside the clock, and keeps the points."""

    def __init__(self, side: str, cfg: dict[str, Any], windowing: Any, tokens_per_step: int, clock: Clock) -> None:
        self.side, self.windowing, self.tokens_per_step, self.clock = side, windowing, tokens_per_step, clock
        self.every, self.steps = cfg["eval_every"], cfg["steps"]
        self.sets = json.loads(Path(cfg["heldout"]).read_text())
        self.points: list[dict[str, Any]] = []

    def due(self, step: int) -> bool:
        return step % self.every == 0 or step == self.steps

    def __call__(self, step: int, model: Any, tok: Any) -> None:
        from langadapt.scoring.bpb import bits_per_byte

        seconds = self.clock.now()
        t = time.perf_counter()
        with self.clock.paused():
            was_training = model.training
            bpb = {
                s["name"]: bits_per_byte(model, tok, s["texts"], self.windowing, desc=f"{self.side}: {s['name']}")[
                    "bits_per_byte"
                ]
                for s in self.sets
            }
            model.train(was_training)
        point = {
            "step": step,
            "tokens": step * self.tokens_per_step,
            "seconds": round(seconds, 2),
            "eval_seconds": round(time.perf_counter() - t, 2),
            "bpb": bpb,
        }
        self.points.append(point)
        scores = "  ".join(f"{k} {v:.4f}" for k, v in bpb.items())
        print(
            f"[{self.side}] step {step}: {point['tokens']:,} tokens, {seconds:.1f} s; {scores} "
            f"(evaluation {point['eval_seconds']:.1f} s, not counted)",
            flush=True,
        )


def recipe_for(sets: list[str]) -> Any:
    from langadapt.recipe import Recipe, find_recipe

    return Recipe.from_yaml(find_recipe(RECIPE), sets)


# -- side A: langadapt ------------------------------------------------------------------------------


def run_langadapt(cfg: dict[str, Any]) -> dict[str, Any]:
    """The tokenizer, init and train stages of the demo recipe, scored from inside the train stage.

    Two hooks on public contracts, no change to the loop: the train method (looked up in
    `TRAIN_METHODS`) hands over the model it wraps, which is scored then (step 0); every
    metrics row the loop writes (`MetricsLog.write`, after the step's optimizer update) scores
    it again when the step is due.
    """
    from langadapt import pipeline
    from langadapt.models.loading import load_tokenizer
    from langadapt.rundir import RunDir, read_json
    from langadapt.train.config import effective_batch_size
    from langadapt.train.methods import TRAIN_METHODS
    from langadapt.train.tracking import MetricsLog

    clock = Clock()
    recipe = recipe_for(cfg["sets"])
    rd = RunDir(recipe.resolved_run_dir)
    score = Scorer("langadapt", cfg, recipe.eval, effective_batch_size(recipe.train) * recipe.train.seq_len, clock)
    watched: dict[str, Any] = {}

    def scored_method(name: str) -> Callable[..., Any]:
        method = get(name)

        @functools.wraps(method)
        def apply(model: Any, train_cfg: Any, new_ids: list[int]) -> Any:
            watched["model"] = method(model, train_cfg, new_ids)
            with clock.paused():  # the tokenizer the eval stage would load: evaluation's cost
                watched["tok"] = load_tokenizer(str(rd.path("init")))
            score(0, watched["model"], watched["tok"])
            return watched["model"]

        return apply

    def write_and_score(self: Any, row: dict[str, Any]) -> None:
        write(self, row)
        if score.due(row["step"]):
            score(row["step"], watched["model"], watched["tok"])

    get, write = TRAIN_METHODS.get, MetricsLog.write
    TRAIN_METHODS.get = scored_method  # type: ignore[method-assign]
    MetricsLog.write = write_and_score  # type: ignore[method-assign]
    pipeline.run(recipe, stages=("tokenizer", "init", "train"))
    total = clock.now()

    expected = [s for s in range(cfg["steps"] + 1) if score.due(s)]
    if [p["step"] for p in score.points] != expected:
        sys.exit(
            f"langadapt was scored at steps {[p['step'] for p in score.points]}, not {expected}: the train stage "
            "no longer calls the hooks this benchmark uses (TRAIN_METHODS.get, MetricsLog.write)"
        )
    summary = read_json(rd.path("train") / "summary.json")
    stages = rd.manifest()["stages"]
    return {
        "points": score.points,
        "seconds": round(total, 2),
        "precision": summary["precision"],
        "micro_batch": summary["micro_batch"],
        "tokens_per_language": summary["tokens"],
        "before_training": {f"{s} stage": stages[s]["seconds"] for s in ("tokenizer", "init")},
    }


# -- side B: the Trainer a user writes ----------------------------------------------------------------


def interleave(
    first: list[dict[str, Any]], second: list[dict[str, Any]], p_second: float, seed: int
) -> list[dict[str, Any]]:
    """`datasets.interleave_datasets([first, second], probabilities=[1 - p, p], seed, "first_exhausted")`:
    each example comes from `second` with probability p, until either runs out."""
    rng, out = random.Random(seed), []
    sources = {False: iter(first), True: iter(second)}
    while True:
        pick = rng.random() < p_second
        example = next(sources[pick], None)
        if example is None:
            return out
        out.append({**example, "replay": pick})


def run_trainer(cfg: dict[str, Any]) -> dict[str, Any]:
    import torch
    from peft import LoraConfig, get_peft_model
    from torch.optim.lr_scheduler import LambdaLR
    from transformers import (
        AutoModelForCausalLM,
        AutoTokenizer,
        Trainer,
        TrainerCallback,
        TrainingArguments,
        default_data_collator,
        set_seed,
    )

    from langadapt.documents import languages, read_texts
    from langadapt.models.loading import resolve_base
    from langadapt.rundir import RunDir
    from langadapt.train.config import effective_batch_size
    from langadapt.train.loop import lr_at

    recipe = recipe_for(cfg["sets"])  # the numbers a user would type into the script
    tr = recipe.train
    rows, micro = effective_batch_size(tr), cfg["micro_batch"]
    path = resolve_base(recipe.model)  # the folder the GGUF was imported into, before either clock
    clock = Clock()
    score = Scorer("Trainer", cfg, recipe.eval, rows * tr.seq_len, clock)

    set_seed(recipe.seed)
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    corpus = RunDir(cfg["corpus"])
    target, replay = languages(corpus)
    blocks = {
        lang: group_texts(tok(read_texts(corpus, lang, "train"))["input_ids"], tr.seq_len)
        for lang in (target, replay)
        if lang
    }
    data = interleave(blocks[target], blocks.get(replay, []), tr.replay_ratio if replay else 0.0, recipe.seed)
    lora = LoraConfig(
        r=tr.lora_rank,
        lora_alpha=tr.lora_alpha,
        lora_dropout=tr.lora_dropout,
        target_modules=list(tr.lora_targets),
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(model, lora)
    prepared = clock.now()

    replay_rows: list[int] = []  # per micro-batch as drawn (the data loader draws one ahead)

    def collate(features: list[dict[str, Any]]) -> dict[str, Any]:
        replay_rows.append(sum(f["replay"] for f in features))
        return default_data_collator([{"input_ids": f["input_ids"], "labels": f["labels"]} for f in features])

    class Points(TrainerCallback):
        def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kw: Any) -> None:
            score(0, model, tok)

        def on_step_end(self, args: Any, state: Any, control: Any, model: Any = None, **kw: Any) -> None:
            if score.due(state.global_step):
                score(state.global_step, model, tok)

    class SameSchedule(Trainer):
        """langadapt's learning-rate schedule, so that both sides step at the same rates."""

        def create_scheduler(self, num_training_steps: int, optimizer: Any = None) -> Any:
            if self.lr_scheduler is None:
                self.lr_scheduler = LambdaLR(optimizer or self.optimizer, lambda step: lr_at(step, tr) / tr.lr)
                self._created_lr_scheduler = True
            return self.lr_scheduler

    precision = cfg["precision"]
    args = TrainingArguments(
        output_dir=cfg["trainer_dir"],
        per_device_train_batch_size=micro,
        gradient_accumulation_steps=rows // micro,
        max_steps=cfg["steps"],
        learning_rate=tr.lr,
        weight_decay=tr.weight_decay,
        adam_beta2=0.95,  # langadapt's AdamW betas are (0.9, 0.95)
        max_grad_norm=tr.grad_clip,
        seed=recipe.seed,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        use_cpu=not torch.cuda.is_available(),
        remove_unused_columns=False,  # the collator drops the replay flag it counts
        report_to=[],
        disable_tqdm=True,
    )
    trainer = SameSchedule(
        model=model, args=args, train_dataset=data, data_collator=collate, processing_class=tok, callbacks=[Points()]
    )
    trainer.train()
    total = clock.now()
    trained_replay = sum(replay_rows[: cfg["steps"] * (rows // micro)])
    tokens = {target: (cfg["steps"] * rows - trained_replay) * tr.seq_len}
    if replay:
        tokens[replay] = trained_replay * tr.seq_len
    return {
        "points": score.points,
        "seconds": round(total, 2),
        "precision": precision,
        "micro_batch": micro,
        "tokens_per_language": tokens,
        "before_training": {"loading, tokenising and packing": round(prepared, 2)},
        "blocks": {lang: len(b) for lang, b in blocks.items()},
    }


def worker(config_file: Path) -> None:
    import importlib
    import importlib.util

    import peft  # noqa: F401  (what either side imports, imported before either clock starts)
    import torch
    import transformers  # noqa: F401
    from transformers import AutoModelForCausalLM, Trainer  # noqa: F401

    import langadapt.pipeline  # noqa: F401

    for optional in ("deepspeed", "bitsandbytes"):  # imported by transformers and peft when installed
        if importlib.util.find_spec(optional) is not None:
            importlib.import_module(optional)
    cfg = json.loads(config_file.read_text())
    logging.basicConfig(level=logging.INFO, format=f"[{cfg['side']}] %(message)s", stream=sys.stderr)
    if cfg["threads"]:
        torch.set_num_threads(cfg["threads"])
    result = (run_langadapt if cfg["side"] == "langadapt" else run_trainer)(cfg)
    Path(cfg["result"]).write_text(json.dumps(result, indent=1))


def run_side(side: str, cfg: dict[str, Any], out: Path) -> dict[str, Any]:
    cfg = {**cfg, "side": side, "result": str(out / f"{side}.json")}
    config_file = out / f"{side}.config.json"
    config_file.write_text(json.dumps(cfg, indent=1))
    print(f"\n== {side} (its own process) ==", flush=True)
    proc = subprocess.run([sys.executable, __file__, "--worker", str(config_file)])
    if proc.returncode:
        sys.exit(f"the {side} run failed (exit {proc.returncode}); its output is above")
    return json.loads(Path(cfg["result"]).read_text())


# -- the comparison ------------------------------------------------------------------------------------


def corpus_run(args: argparse.Namespace, recipe: Any) -> Path:
    """A run directory whose corpus stage has finished: --run-dir (only read), or the corpus stage run under --out."""
    import dataclasses

    import yaml

    from langadapt import pipeline
    from langadapt.errors import LangAdaptError
    from langadapt.rundir import RunDir

    if args.run_dir is None:
        folder = args.out / "corpus-run"
        print(f"corpus stage in {folder} (skipped when up to date; not timed)", flush=True)
        pipeline.run(dataclasses.replace(recipe, run_dir=str(folder)), stages=("corpus",))
        return folder
    rd = RunDir(args.run_dir)
    try:
        rd.fingerprint_of("corpus")
    except LangAdaptError as e:
        sys.exit(f"--run-dir: {e.message}" + (f" ({e.hint})" if e.hint else ""))
    theirs = yaml.safe_load((rd.root / "recipe.yaml").read_text(encoding="utf-8")).get("corpus", {})
    ours = json.loads(json.dumps(recipe.to_dict()["corpus"]))
    differ = sorted(k for k in set(theirs) & set(ours) if json.loads(json.dumps(theirs[k])) != ours[k])
    if differ:
        sys.exit(
            f"--run-dir {rd.root}: its corpus stage ran with another corpus section than {RECIPE} "
            f"({', '.join(differ)}); give the run directory of a {RECIPE} run, or leave --run-dir out"
        )
    return rd.root


def reach(points: list[dict[str, Any]], name: str, figure: float) -> dict[str, Any] | None:
    """Where `name`'s bits per byte first falls to `figure` or below: the wall time and every set's value there,
    linear between the two evaluation points around it; None if it never does."""
    if points[0]["bpb"][name] <= figure:
        return {"seconds": points[0]["seconds"], "bpb": dict(points[0]["bpb"]), "between": (0, 0)}
    for a, b in zip(points, points[1:]):
        if b["bpb"][name] <= figure:
            f = (a["bpb"][name] - figure) / (a["bpb"][name] - b["bpb"][name])
            return {
                "seconds": a["seconds"] + f * (b["seconds"] - a["seconds"]),
                "bpb": {k: a["bpb"][k] + f * (b["bpb"][k] - a["bpb"][k]) for k in a["bpb"]},
                "between": (b["step"], b["step"]) if f == 1 else (a["step"], b["step"]),
            }
    return None


def report(
    results: dict[str, dict[str, Any]], sets: list[dict[str, Any]], args: argparse.Namespace, tokens_per_step: int
) -> int:
    ours, theirs = results["langadapt"], results["Trainer"]
    target = next(s["name"] for s in sets if s["kind"] == "target-heldout")
    english = [s["name"] for s in sets if s["name"] != target]
    base = theirs["points"][0]["bpb"]  # the Trainer's step 0 is the base model (LoRA starts at zero)

    def drift(bpb: dict[str, float], name: str) -> float:
        return (bpb[name] - base[name]) / base[name]

    print(
        f"\n{RECIPE}: {args.steps} steps of {tokens_per_step:,} tokens, {ours['precision']}, micro-batch "
        f"{ours['micro_batch']} on both sides; {os.cpu_count()} CPU cores. Wall time excludes evaluation; "
        f"English columns: change in bits per byte against the base model ({', '.join(f'{n} {base[n]:.4f}' for n in english)})"
    )
    for side, r in results.items():
        before = ", ".join(f"{k} {v:.1f} s" for k, v in r["before_training"].items())
        mix = ", ".join(f"{lang} {n:,}" for lang, n in r["tokens_per_language"].items())
        print(f"  {side}: before training {before}; tokens trained {mix}; {r['seconds']:.1f} s in all")
    cols = f"{'wall s':>8s} {target:>12s} " + " ".join(f"{n:>12s}" for n in english)
    print(f"\n{'step':>5s} {'tokens':>8s} | langadapt {cols} | Trainer {cols}")
    by_step = {side: {p["step"]: p for p in r["points"]} for side, r in results.items()}
    for step in sorted(set(by_step["langadapt"]) | set(by_step["Trainer"])):
        cells = []
        for side in results:
            p = by_step[side].get(step)
            cells.append(
                f"{p['seconds']:8.1f} {p['bpb'][target]:12.4f} "
                + " ".join(f"{drift(p['bpb'], n):+12.2%}" for n in english)
                if p
                else " " * len(cols)
            )
        print(f"{step:5d} {step * tokens_per_step:8,d} | {' ' * 9} {cells[0]} | {' ' * 7} {cells[1]}")

    figure = theirs["points"][-1]["bpb"][target]
    print(
        f"\nthe Trainer's final held-out {target}: {figure:.4f} bits per byte (base {base[target]:.4f}). Wall time "
        "to reach it, linear between evaluation points (English interpolated likewise):"
    )
    at = {side: reach(r["points"], target, figure) for side, r in results.items()}
    for side, point in at.items():
        if point is None:
            print(f"  {side:9s} never reached it in {args.steps} steps")
            continue
        a, b = point["between"]
        where = f"at step {b}" if a == b else f"between steps {a} and {b}"
        english_there = ", ".join(f"{n} {drift(point['bpb'], n):+.2%}" for n in english)
        print(f"  {side:9s} {point['seconds']:8.1f} s  ({where}); English against the base: {english_there}")
    if at["langadapt"] is None:
        print(f"ratio: none (langadapt did not reach the Trainer's final {target} figure in {args.steps} steps)")
        return 1
    ratio = at["Trainer"]["seconds"] / at["langadapt"]["seconds"]
    worst = max(drift(at["langadapt"]["bpb"], n) for n in english)
    met = ratio >= GOAL_RATIO and worst <= GOAL_DRIFT
    note = "; --tiny: a smoke run, not a measurement" if args.tiny else ""
    print(
        f"goal (2 CPU cores: ratio >= {GOAL_RATIO:g}, every English set within {GOAL_DRIFT:+.0%} of the base at "
        f"langadapt's point): {'met' if met else 'not met'}; ratio {ratio:.2f}, English at most {worst:+.2%} "
        f"(this machine: {os.cpu_count()} cores{note})"
    )
    print(f"ratio: {ratio:.2f}")
    return 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=None, help="optimizer steps per side (default: the recipe's 36)")
    ap.add_argument("--eval-every", type=int, default=None, help="steps between evaluation points (default 4)")
    ap.add_argument(
        "--run-dir", type=Path, default=None, help="a demo run whose corpus stage has finished (read, never written)"
    )
    ap.add_argument(
        "--out", type=Path, default=None, help="where both runs and results go (runs/time-to-quality[-tiny])"
    )
    ap.add_argument("--threads", type=int, default=0, help="torch threads in each side's process (0: torch's default)")
    ap.add_argument("--tiny", action="store_true", help="a few small steps on little held-out text: checks the script")
    ap.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(args.worker)

    from langadapt.evaluate.flow import eval_sets
    from langadapt.models.loading import resolve_base
    from langadapt.rundir import RunDir
    from langadapt.train.config import effective_batch_size

    sets = list(TINY["sets"]) if args.tiny else []
    args.steps = args.steps or (TINY["steps"] if args.tiny else recipe_for([]).train.max_steps)
    args.eval_every = args.eval_every or (TINY["eval_every"] if args.tiny else 4)
    recipe = recipe_for(sets)
    sets += [f"train.max_steps={args.steps}"]
    if args.steps < recipe.train.warmup_steps:
        sets += [f"train.warmup_steps={args.steps}"]
    args.out = (args.out or Path("runs/time-to-quality" + ("-tiny" if args.tiny else ""))).resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    recipe = recipe_for(sets)

    resolve_base(recipe.model)  # import the bundled GGUF once, before either clock
    corpus = corpus_run(args, recipe)
    heldout = [
        {"name": s.name, "language": s.language, "kind": s.kind, "texts": s.texts}
        for s in eval_sets(recipe, RunDir(corpus))
    ]
    (args.out / "heldout.json").write_text(json.dumps(heldout, ensure_ascii=False))
    print("held-out sets: " + ", ".join(f"{s['name']} {sum(map(len, s['texts'])):,} characters" for s in heldout))

    run_dir = args.out / "langadapt-run"  # fresh every time: every stage runs
    trainer_dir = args.out / "trainer"
    for folder in (run_dir, trainer_dir):
        if folder.exists():
            shutil.rmtree(folder)
    shutil.copytree(Path(corpus) / "corpus", run_dir / "corpus")  # the same cleaned text, the stage not re-run
    cfg = {
        "steps": args.steps,
        "eval_every": args.eval_every,
        "threads": args.threads,
        "heldout": str(args.out / "heldout.json"),
        "corpus": str(corpus),
        "trainer_dir": str(trainer_dir),
    }
    results = {"langadapt": run_side("langadapt", {**cfg, "sets": [*sets, f"run_dir={run_dir}"]}, args.out)}
    ours = results["langadapt"]
    matched = {**cfg, "sets": sets, "precision": ours["precision"], "micro_batch": ours["micro_batch"]}
    results["Trainer"] = run_side("trainer", matched, args.out)
    tokens_per_step = effective_batch_size(recipe.train) * recipe.train.seq_len
    (args.out / "results.json").write_text(json.dumps({"steps": args.steps, "sides": results}, indent=1))
    print(f"\nevery point of both sides: {args.out / 'results.json'}")
    sys.exit(report(results, heldout, args, tokens_per_step))


if __name__ == "__main__":
    main()
