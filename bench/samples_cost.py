"""What the generation samples (`eval.samples`) add to the eval stage of a finished run.

    python bench/samples_cost.py runs/demo-nya-smollm2
    python bench/samples_cost.py runs/demo-nya-smollm2 --threads 1 --models base   # on a busy machine
    python bench/samples_cost.py runs/demo-nya-smollm2 --threads 1 --batching      # together vs one by one

For the base and the adapted model, loaded as the eval stage loads them (its device, dtype
and precision): the seconds (wall and CPU) of the samples at the run's `eval.samples`
settings, against the baseline measured in the same run on the same loaded model: the
stage's bits per byte on the same held-out sets. Prints each, the ratio samples / bits per
byte, and every continuation, so the figures and what they bought are seen together. Writes
nothing into the run. On a machine shared with other jobs, `--threads 1` keeps the CPU seconds
a measure of work: with two threads, each of generation's many small operations waits for
the other thread, and that waiting, counted as CPU time, grows with the machine's load.

`--batching` measures instead the prompts continued together (as the stage does) against the
baseline of each prompt alone, and whether the continuations are identical.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from langadapt.devices import autocast, resolve_device, resolve_eval_precision
from langadapt.evaluate.flow import (
    _samples_entry,
    eval_sets,
    evaluate_model,
    generation_samples,
    load_evaluated,
    model_labels,
    sample_prompts,
)
from langadapt.evaluate.samples import continue_greedily
from langadapt.models.loading import load_tokenizer
from langadapt.recipe import Recipe
from langadapt.rundir import RunDir


def _timed(fn, *args):  # type: ignore[no-untyped-def]
    """Wall and CPU seconds of fn(*args): on a shared machine the CPU seconds are the fair measure."""
    wall, cpu = time.time(), time.process_time()
    fn(*args)
    return time.time() - wall, time.process_time() - cpu


def _batching(label: str, model, tok, prompts: list[str], n: int) -> None:  # type: ignore[no-untyped-def]
    together: list = []
    alone: list = []
    wall, cpu = _timed(lambda: together.extend(continue_greedily(model, tok, prompts, n)))
    wall1, cpu1 = _timed(lambda: alone.extend(continue_greedily(model, tok, [p], n)[0] for p in prompts))
    same = sum(a.ids == b.ids for a, b in zip(together, alone))
    print(
        f"{label}: together {cpu:.1f} CPU s ({wall:.1f} s), one by one {cpu1:.1f} CPU s ({wall1:.1f} s); "
        f"ratio {cpu1 / cpu:.2f} (CPU); identical continuations {same}/{len(prompts)}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path, help="a run directory whose train stage finished")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (default: as the eval stage sets them)")
    ap.add_argument("--models", default="base,adapted", help="which of base,adapted to measure")
    ap.add_argument("--batching", action="store_true", help="prompts together against one by one, nothing else")
    args = ap.parse_args()
    recipe = Recipe.from_yaml(args.run / "recipe.yaml", overrides=[f"run_dir={args.run}"])
    import torch

    if args.threads or recipe.train.threads:
        torch.set_num_threads(args.threads or recipe.train.threads)
    rd = RunDir(args.run)
    device = resolve_device(recipe.eval.device)
    precision = resolve_eval_precision(recipe.eval.precision, device)
    sets = eval_sets(recipe, rd)
    prompts = sample_prompts(sets, recipe.eval)
    samples = _samples_entry(recipe.eval, precision)
    s = recipe.eval.samples
    print(
        f"{len(prompts)} prompts (count {s.count} per held-out set, {s.prompt_chars} characters), "
        f"max_new_tokens {s.max_new_tokens}, {precision} on {device}, {torch.get_num_threads()} threads"
    )
    totals = {"samples": [0.0, 0.0], "bits per byte": [0.0, 0.0]}
    chosen = args.models.split(",")
    for label, path in [(k, v) for k, v in model_labels(recipe, rd.path("train") / "final").items() if k in chosen]:
        model = load_evaluated(recipe, path, device)
        tok = load_tokenizer(path)
        if args.batching:
            with autocast(device, precision):
                _batching(label, model, tok, [p.text for p in prompts], s.max_new_tokens)
            continue
        with autocast(device, precision):
            gen = _timed(generation_samples, label, model, tok, prompts, recipe.eval, samples)
            bpb = _timed(evaluate_model, model, tok, sets, recipe.eval, label)
        for name, (wall, cpu) in (("samples", gen), ("bits per byte", bpb)):
            totals[name][0] += wall
            totals[name][1] += cpu
        print(
            f"{label}: samples {gen[0]:.1f} s ({gen[1]:.1f} CPU s); baseline, bits per byte on the same sets "
            f"{bpb[0]:.1f} s ({bpb[1]:.1f} CPU s); ratio {gen[1] / bpb[1]:.3f} (CPU)"
        )
        del model
    if args.batching:
        return
    (gw, gc), (bw, bc) = totals["samples"], totals["bits per byte"]
    print(f"{' and '.join(chosen)}: samples {gw:.1f} s ({gc:.1f} CPU s), bits per byte {bw:.1f} s ({bc:.1f} CPU s)")
    print(f"ratio: {gc / bc:.3f} (samples / bits per byte, CPU seconds)")
    for name, entry in samples["sets"].items():
        for p in entry["prompts"]:
            print(f"\n[{name} document {p['document']}] {p['prompt']!r}\n  held-out: {p['reference']!r}")
            for label, c in p["continuations"].items():
                end = f"ended by {c['stopped_by']}" if c["stopped_by"] else "token limit"
                print(f"  {label} ({c['new_tokens']} tokens, {end}): {c['text']!r}")


if __name__ == "__main__":
    main()
