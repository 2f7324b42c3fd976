"""How long each init method takes for up to 10,000 new tokens on the demo's 135M model.

    python bench/init_speed.py                         # every method that needs nothing the demo lacks
    python bench/init_speed.py --new-tokens 5000 --methods fvt,focus

The demo recipe's corpus and tokenizer stages run once asking for `--new-tokens` added
tokens (from a `--target-vocab` target tokenizer; the extension adds only tokens the target
text uses and that leave the replay language's encoding unchanged, so a small corpus may
yield fewer: the table says how many); then each method runs the real init stage into
its own run directory, sharing one fastText cache. Each method runs twice: the first run
trains (and caches) the fastText vectors it needs, the second finds them cached, and its
`init_report.json` `seconds` is the method's own work with model loading and fastText
training excluded, which is the figure the goal is about ("well under a minute"). The
baseline, timed in the same run, is `fvt` (the mean of each token's pieces).

    ratio: R   where R = slowest method's seconds (cached vectors) / 60
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from init_quality import method_run_dir, write_parallel  # noqa: E402  (bench scripts share their helpers)

DEFAULT_METHODS = "fvt,hf-resize,random,mean,mvn,focus,wechsel,omp,ofa"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("runs/bench-init-speed"))
    ap.add_argument("--methods", default=DEFAULT_METHODS)
    ap.add_argument("--new-tokens", type=int, default=10000)
    ap.add_argument("--target-vocab", type=int, default=64000)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")

    from langadapt.corpus import flow as corpus
    from langadapt.init import flow as embed_init
    from langadapt.recipe import Recipe, find_recipe
    from langadapt.rundir import RunDir, read_json
    from langadapt.tokenizer import flow as tokenizer

    demo = find_recipe("demo-nya-smollm2")
    overrides = [f"tokenizer.new_tokens={args.new_tokens}", f"tokenizer.target_vocab_size={args.target_vocab}"]
    base = RunDir(args.out / "base")
    recipe = Recipe.from_yaml(demo, [f"run_dir={base.root}", *overrides])
    t0 = time.time()
    corpus.run(recipe, base)
    tokenizer.run(recipe, base)
    added = read_json(base.path("tokenizer") / "metrics.json")["added_tokens"]
    print(f"corpus + tokenizer: {time.time() - t0:.0f} s; {added} tokens added", flush=True)
    src, tgt = write_parallel(base, args.out / "parallel")
    parallel = [
        f"init.parallel_source={{path: {src.resolve()}, language: eng, format: jsonl}}",
        f"init.parallel_target={{path: {tgt.resolve()}, language: nya, format: jsonl}}",
    ]

    rows = []
    for method in args.methods.split(","):
        rd = method_run_dir(base, args.out, method)
        extra = parallel if method == "wechsel" else []
        rec = Recipe.from_yaml(demo, [*overrides, f"run_dir={rd.root}", f"init.method={method}", *extra])
        seconds = []
        for force in (False, True):
            t = time.time()
            embed_init.run(rec, rd, force=force)
            stage = time.time() - t
            seconds.append((read_json(rd.path("init") / "init_report.json")["seconds"], stage))
        (first, first_stage), (cached, cached_stage) = seconds
        rows.append((method, first, cached, cached_stage))
        print(f"{method}: {first:.1f} s first (vectors trained), {cached:.1f} s with vectors cached", flush=True)

    print(f"\n{added} new tokens, SmolLM2-135M (tied head); baseline: fvt")
    print("| method | first run s (fastText trained) | method s, vectors cached | whole stage s, cached | vs fvt |")
    print("|---|---|---|---|---|")
    fvt = next((r[2] for r in rows if r[0] == "fvt"), None)
    for method, first, cached, stage in rows:
        vs = f"{cached / fvt:.1f}x" if fvt else "-"
        print(f"| {method} | {first:.1f} | {cached:.1f} | {stage:.1f} | {vs} |")
    slowest = max(rows, key=lambda r: r[2])
    print(f"slowest with vectors cached: {slowest[0]} ({slowest[2]:.1f} s; goal well under 60 s)")
    print(f"ratio: {slowest[2] / 60:.2f}")


if __name__ == "__main__":
    main()
