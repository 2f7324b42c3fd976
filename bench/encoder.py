"""Benchmark the encoder recipe against two baselines trained for as many steps: the head alone,
and the head with the whole embedding matrix.

    python bench/encoder.py                                   # demo-nya-e5, timed, and its baselines
    python bench/encoder.py --methods seq-bn,seq-bn-inv,lora,full    # the same budget, other methods
    python bench/encoder.py --set train.phases='[...]'        # try another budget (applies to every run)

The recipe (`demo-nya-e5`: multilingual-e5-small, a created MLM head warmed up alone,
then LoRA with every embedding row) runs as a user runs it, `langadapt demo --recipe
demo-nya-e5`, in a fresh run directory, timed. The e5 import cache (`$LANGADAPT_CACHE`)
is whatever it is on this machine; the script says whether it was warm. The first baseline is the same recipe with one
phase, `{method: head, max_steps: <the recipe's total steps>}`: the encoder frozen, its
head alone trained for as many steps on the same data, so the gain measured is what
adaptation adds beyond head training, and forgetting is measured against a head that has
finished learning. The second baseline is the same phase with `embeddings: all`: the head
and every embedding row (tied to the head) train, the transformer body stays frozen, so it
trains what the recipe trains beside its LoRA, and what the recipe gains over it is what
adapting the body adds. Every model is scored by the eval stage's own scorer on the recipe
run's evaluation sets (pseudo bits per byte, same windows): held-out Chichewa, held-out
English (in-domain) and the English UDHR (out-of-domain).

Targets: held-out Chichewa at least 20% below the head-only baseline; English (both sets) at most
5% above it; the recipe's wall time at most 15 minutes. The last line is `ratio: R` =
head-only baseline's Chichewa pseudo bits per byte / adapted; the line above it gives the
same ratio against the head-with-embeddings baseline.

`--methods` trains the same schedule with its adapter phase replaced by each method
(same steps, data and head warm-up; learning rates from `--method-lr`) and prints
trainable parameters, peak memory, training time and the three scores for each.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

RECIPE = "demo-nya-e5"
SETS = ("nya-heldout", "eng-heldout", "eng-ood")
TARGETS = {"nya-heldout": -0.20, "eng-heldout": 0.05, "eng-ood": 0.05}
DEFAULT_LR = {"full": 1e-4}  # adapters and LoRA keep the recipe's rate; all weights need a smaller one
LANGADAPT = str(Path(sys.executable).parent / "langadapt")  # the command of this environment


def launch(cmd: list[str], log: Path) -> tuple[float, float]:
    """Run a command, its output to `log`; returns (wall seconds, peak resident MB of that process tree's largest)."""
    t0 = time.time()
    with log.open("w") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed (exit {proc.returncode}); see {log}")
    return time.time() - t0, usage.ru_maxrss / 1024


BASELINES = {  # name -> the embedding rows that train beside the head
    "head-only": "",  # the recipe's own setting (new rows, or none after a trim)
    "head+embeddings": "all",
}


def baseline_phase(run_dir: Path, name: str) -> str:
    """One head phase as long as the recipe's whole schedule, at the learning rate of its head phase."""
    import yaml

    train = yaml.safe_load((run_dir / "recipe.yaml").read_text())["train"]
    phases = train["phases"] or [{"method": train["method"], "max_steps": train["max_steps"], "lr": 0.0}]
    steps = sum(p["max_steps"] for p in phases)
    lr = next((p["lr"] for p in phases if p["method"] == "head" and p["lr"]), train["lr"])
    phase = {"name": name, "method": "head", "max_steps": steps, "lr": lr}
    if BASELINES[name]:
        phase["embeddings"] = BASELINES[name]
    return json.dumps([phase])


def train_variant(root: Path, name: str, phases: str, overrides: list[str], resume: bool = False) -> dict:
    """Corpus to train of the recipe with another phase schedule, in its own processes and run directory."""
    run_dir = root / name
    if not resume:
        shutil.rmtree(run_dir, ignore_errors=True)
    sets = [a for o in overrides for a in ("--set", o)] + ["--set", f"train.phases={phases}"]
    seconds, peak = 0.0, 0.0
    for stage in ("corpus", "tokenizer", "init", "train"):
        s, p = launch([LANGADAPT, stage, RECIPE, "--run-dir", str(run_dir), *sets], root / f"{name}-{stage}.log")
        seconds, peak = seconds + (s if stage == "train" else 0.0), max(peak, p)
    summary = json.loads((run_dir / "train" / "summary.json").read_text())
    return {
        "run_dir": run_dir,
        "train_seconds": seconds,
        "peak_mb": peak,
        "trainable": summary["trainable_parameters"],
        "phase_seconds": [p.get("seconds_this_session", 0.0) for p in summary.get("phases", [summary])],
    }


def recipe_as_variant(root: Path, recipe_run: Path) -> dict:
    """The timed recipe run as a row of the method table (its peak memory includes its evaluation)."""
    summary = json.loads((recipe_run / "train" / "summary.json").read_text())
    manifest = json.loads((recipe_run / "manifest.json").read_text())
    return {
        "run_dir": recipe_run,
        "train_seconds": manifest["stages"]["train"]["seconds"],
        "peak_mb": json.loads((root / "recipe-time.json").read_text())["peak_mb"],
        "trainable": summary["trainable_parameters"],
    }


def score(model_dir: Path, recipe_run: Path, label: str, threads: int) -> tuple[dict[str, float], float]:
    """Pseudo bits per byte of one model on the recipe run's evaluation sets, with the eval stage's scorer."""
    import torch

    from langadapt.evaluate.flow import eval_sets, evaluate_model
    from langadapt.models.loading import load_model, load_tokenizer
    from langadapt.recipe import Recipe
    from langadapt.rundir import RunDir

    torch.set_num_threads(threads)
    recipe = Recipe.from_yaml(str(recipe_run / "recipe.yaml"))
    sets = eval_sets(recipe, RunDir(recipe_run))
    t0 = time.time()
    model, tok = load_model(str(model_dir), recipe.model.dtype), load_tokenizer(str(model_dir))
    out = evaluate_model(model, tok, sets, recipe.eval, label)
    return {name: r["bits_per_byte"] for name, r in out.items()}, time.time() - t0


def pct(new: float, old: float) -> str:
    return f"{100 * (new - old) / old:+.1f}%"


def print_table(base: dict[str, float], baselines: dict[str, dict[str, float]], adapted: dict[str, float]) -> bool:
    """Every model on every set; the targets are against the head-only baseline."""
    head, emb = baselines["head-only"], baselines["head+embeddings"]
    print(
        "\n| set | base (untouched) | head-only baseline | head + all embeddings | adapted "
        "| adapted vs head-only | adapted vs head + embeddings | target (vs head-only) | |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    ok = True
    for s in SETS:
        change = (adapted[s] - head[s]) / head[s]
        passed = change <= TARGETS[s]
        ok &= passed
        print(
            f"| {s} | {base[s]:.4f} | {head[s]:.4f} | {emb[s]:.4f} | {adapted[s]:.4f} | {pct(adapted[s], head[s])} "
            f"| {pct(adapted[s], emb[s])} | <= {100 * TARGETS[s]:+.0f}% | {'pass' if passed else 'FAIL'} |"
        )
    return ok


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=Path, default=Path("runs/bench-encoder"), help="folder of the runs (wiped first)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="recipe override for every run")
    ap.add_argument("--methods", default="", help="comma-separated methods for the adapter phase, same budget")
    ap.add_argument("--method-lr", action="append", default=[], help="METHOD=LR for --methods (default full=1e-4)")
    ap.add_argument(
        "--resume",
        action="store_true",
        help="keep ROOT: finished runs are skipped, the recipe's recorded time is reused",
    )
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads when scoring in this process")
    ap.add_argument("--cold-cache", action="store_true", help="an empty LANGADAPT_CACHE: the e5 import is timed too")
    args = ap.parse_args()

    from langadapt.models.loading import cache_dir

    root = args.root
    if args.cold_cache and not args.resume:
        shutil.rmtree(root, ignore_errors=True)
        os.environ["LANGADAPT_CACHE"] = str((root.parent / f"{root.name}-cache").resolve())
        shutil.rmtree(os.environ["LANGADAPT_CACHE"], ignore_errors=True)
    cached = (cache_dir() / "models" / "multilingual-e5-small").is_dir()
    print(f"e5 import cache: {'warm (import not timed)' if cached else 'cold (the import is part of the time)'}")
    recipe_run = root / "recipe"
    sets = [a for o in args.overrides for a in ("--set", o)]
    if not args.resume:
        shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True, exist_ok=True)
    if not (root / "recipe-time.json").is_file():
        wall, peak = launch(
            [LANGADAPT, "demo", "--recipe", RECIPE, "--run-dir", str(recipe_run), *sets], root / "recipe.log"
        )
        (root / "recipe-time.json").write_text(json.dumps({"wall_s": wall, "peak_mb": peak}))
    timing = json.loads((root / "recipe-time.json").read_text())
    manifest = json.loads((recipe_run / "manifest.json").read_text())
    stage_s = {k: v.get("seconds") for k, v in manifest.get("stages", {}).items()}
    print(f"recipe {RECIPE}: wall {timing['wall_s'] / 60:.1f} min (target <= 15), peak {timing['peak_mb']:.0f} MB")
    print(f"stage seconds: {json.dumps(stage_s)}")
    summary = json.loads((recipe_run / "train" / "summary.json").read_text())
    for ph in summary.get("phases", [summary]):
        print(
            f"  phase {ph.get('phase', '')}: {ph['steps']} steps, {ph['trainable_parameters'] / 1e6:.2f}M trainable, "
            f"{ph.get('seconds_this_session', 0):.0f} s"
        )
    baselines = {}
    for name in BASELINES:  # the same encoder, its body frozen, on the same data and steps
        phase = baseline_phase(recipe_run, name)
        print(f"baseline {name}: phases {phase}", flush=True)
        run = train_variant(root, f"baseline-{name}", phase, args.overrides, args.resume)
        print(f"  trained in {run['train_seconds']:.0f} s, {run['trainable'] / 1e6:.2f}M trainable", flush=True)
        baselines[name], secs = score(run["run_dir"] / "train" / "final", recipe_run, name, args.threads)
        print(f"  scored in {secs:.0f} s", flush=True)

    results = json.loads((recipe_run / "eval" / "results.json").read_text())["bits_per_byte"]
    base = {s: results[s]["base"] for s in SETS}
    adapted = {s: results[s]["adapted"] for s in SETS}
    ok = print_table(base, baselines, adapted)

    if args.methods:
        compare_methods(args, root, recipe_run, baselines["head-only"])
    print(f"\nall targets met: {ok and timing['wall_s'] <= 15 * 60}")
    emb = baselines["head+embeddings"]["nya-heldout"]
    print(f"ratio against head + all embeddings: {emb / adapted['nya-heldout']:.3f}")
    print(f"ratio: {baselines['head-only']['nya-heldout'] / adapted['nya-heldout']:.3f}")


def compare_methods(args: argparse.Namespace, root: Path, recipe_run: Path, baseline: dict[str, float]) -> None:
    """The recipe's schedule with its last phase's method replaced: same steps, data and warm-up."""
    import yaml

    rates = DEFAULT_LR | {k: float(v) for k, v in (x.split("=", 1) for x in args.method_lr)}
    phases = yaml.safe_load((recipe_run / "recipe.yaml").read_text())["train"]["phases"]
    recipe_scores = json.loads((recipe_run / "eval" / "results.json").read_text())["bits_per_byte"]
    print("\n| method (last phase) | lr | trainable parameters | peak MB | train s | " + " | ".join(SETS) + " |")
    print("|---|---|---|---|---|" + "---|" * len(SETS), flush=True)
    for method in args.methods.split(","):  # each row as soon as it is measured: a long run keeps what it found
        last = dict(phases[-1], name=method, method=method)
        if method in rates:
            last["lr"] = rates[method]
        if (last["method"], last["lr"]) == (phases[-1]["method"], phases[-1]["lr"]):  # the recipe itself
            run, scores = recipe_as_variant(root, recipe_run), {s: r["adapted"] for s, r in recipe_scores.items()}
        else:
            schedule = json.dumps([*phases[:-1], last])
            run = train_variant(root, f"method-{method}", schedule, args.overrides, args.resume)
            scores, _ = score(run["run_dir"] / "train" / "final", recipe_run, method, args.threads)
        cells = " | ".join(f"{scores[s]:.4f} ({pct(scores[s], baseline[s])})" for s in SETS)
        print(
            f"| {method} | {last['lr']:g} | {run['trainable'] / 1e6:.2f}M | {run['peak_mb']:.0f} "
            f"| {run['train_seconds']:.0f} | {cells} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
