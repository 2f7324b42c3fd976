"""Benchmark the init methods on the demo's model and corpus: how much training does a good init save?

    python bench/init_quality.py                       # defaults below; hours on 2 CPU cores, minutes on a GPU
    python bench/init_quality.py --methods fvt,focus --seeds 0 --budget 6   # a quicker look

The demo recipe (SmolLM2-135M, Chichewa Bible with English replay, 2,000 new tokens) runs
its corpus and tokenizer stages once; then every method runs the real init stage into
its own run directory per seed (sharing one fastText cache) and is scored on held-out
Chichewa (whole books never trained on) in bits per byte, at zero steps and after the
same small budget of the demo's training method (LoRA + new rows, English replay). Each
figure is the mean over `--seeds` (the recipe's seed: initialisation, fastText vectors,
data order and adapter weights), with its standard deviation.

The baseline is `hf-resize`: what `model.resize_token_embeddings(n)` gives with
transformers' defaults, the library's own default a user gets without langadapt. The
learning rate is constant after warm-up, so a longer run's first N steps are exactly an
N-step run: the baseline trains on from the budget, scored every `--resolution` steps,
until the mean of its seeds reaches `fvt`'s mean figure at the end of the budget, or
`--max-factor` times the budget.

    ratio: R   where R = steps hf-resize needs to reach fvt's figure after the budget / budget
               (">" when it did not get there within max-factor x budget)

WECHSEL uses a dictionary induced with eflomal from the Chichewa and English Bibles'
aligned verses in the chapters both corpora train on (held-out books excluded): no
English-Chichewa dictionary is packaged anywhere. CLP needs a small model already trained on Chichewa;
none exists offline, so it is not in the table.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any

BASELINE = "hf-resize"  # transformers' own default resize
REFERENCE = "fvt"  # the figure the baseline must reach
DEFAULT_METHODS = "hf-resize,fvt,wechsel,focus,omp,ofa,random,mean,mvn"


def heldout_texts(rd: Any, lang: str, max_chars: int) -> list[str]:
    from langadapt.documents import read_texts

    out, n = [], 0
    for text in read_texts(rd, lang, "heldout"):
        if n >= max_chars:
            break
        out.append(text[: max_chars - n])
        n += len(out[-1])
    return out


def write_parallel(rd: Any, folder: Path) -> tuple[Path, Path]:
    """Verse pairs of the chapters both Bibles train on, as jsonl (held-out books never reach the dictionary).

    Verses, not chapters: a word aligner's cost grows with the square of a sentence's length,
    and chapter-long "sentences" took eflomal over half an hour where verses take a minute.
    """
    from langadapt.documents import languages, read_docs
    from langadapt.evaluate.tasks.bible import aligned_verses

    target, replay = languages(rd)
    chapters = [{d.id for d in read_docs(rd.path("corpus") / lang / "train.parquet")} for lang in (replay, target)]
    training = chapters[0] & chapters[1]
    verses = {vid: t for vid, t in aligned_verses().items() if vid.rsplit(".", 1)[0] in training}
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for lang in (replay, target):
        path = folder / f"{lang}.jsonl"
        path.write_text("".join(json.dumps({"id": v, "text": t[lang]}) + "\n" for v, t in verses.items()))
        paths.append(path)
    print(f"parallel text for wechsel: {len(verses)} aligned verses of {len(training)} training chapters")
    return paths[0], paths[1]


def method_run_dir(base: Any, out: Path, method: str) -> Any:
    """A run directory with the shared corpus, tokenizer and fastText cache, for one method."""
    from langadapt.rundir import RunDir

    root = out / method
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    for stage in ("corpus", "tokenizer"):
        shutil.copytree(base.path(stage), root / stage, symlinks=True)
    (base.root / "cache").mkdir(exist_ok=True)
    (root / "cache").symlink_to((base.root / "cache").resolve())
    return RunDir(root)


class Trainer:
    """The demo's training method on one initialised model, continued in steps on demand."""

    def __init__(self, recipe: Any, rd: Any) -> None:
        from langadapt.documents import languages, read_texts
        from langadapt.models.loading import doc_separator_id, load_model, load_tokenizer
        from langadapt.rundir import read_json
        from langadapt.train.data import TokenStream
        from langadapt.train.methods import TRAIN_METHODS

        self.recipe, self.rd = recipe, rd
        init_dir = rd.path("init")
        self.tok = load_tokenizer(str(init_dir))
        model = load_model(str(init_dir), "float32")
        new_ids = list(read_json(rd.path("tokenizer") / "metrics.json").get("new_token_ids", []))
        self.model = TRAIN_METHODS.get(recipe.train.method)(model, recipe.train, new_ids)
        self.target, self.replay = languages(rd)
        sep = doc_separator_id(self.tok)
        self.streams = {
            lang: TokenStream(read_texts(rd, lang, "train"), self.tok, sep, recipe.train.seq_len, recipe.seed + i)
            for i, lang in enumerate(x for x in (self.target, self.replay) if x)
        }
        self.out = rd.root / "train-bench"
        self.out.mkdir(parents=True, exist_ok=True)
        self.step = 0

    def train_to(self, steps: int) -> None:
        import dataclasses

        from langadapt.train.loop import train_loop

        if steps <= self.step:
            return
        train = dataclasses.replace(self.recipe.train, max_steps=steps, save_every=steps)
        recipe = dataclasses.replace(self.recipe, train=train)
        train_loop(self.model, self.streams, self.target, self.replay, recipe, self.out)
        self.step = steps

    def bpb(self, texts: list[str]) -> float:
        from langadapt.scoring.bpb import bits_per_byte

        return float(bits_per_byte(self.model, self.tok, texts, self.recipe.eval)["bits_per_byte"])


def score_method(
    method: str,
    seed: int,
    base: Any,
    args: Any,
    demo: Path,
    overrides: list[str],
    parallel: list[str],
    texts: list[str],
    train: bool = True,
) -> tuple[dict[str, Any], Trainer]:
    """Init one method with the real stage under one seed, score it at zero steps, train the budget, score again."""
    from langadapt.init import flow as embed_init
    from langadapt.recipe import Recipe
    from langadapt.rundir import read_json

    rd = method_run_dir(base, args.out, f"{method}-s{seed}")
    extra = parallel if method == "wechsel" else []
    rec = Recipe.from_yaml(
        demo, [*overrides[1:], f"run_dir={rd.root}", f"init.method={method}", f"seed={seed}", *extra]
    )
    t = time.time()
    embed_init.run(rec, rd)
    init_s = read_json(rd.manifest_path)["stages"]["init"]["seconds"]
    report = read_json(rd.path("init") / "init_report.json")
    t_init = time.time()
    trainer = Trainer(rec, rd)
    zero = trainer.bpb(texts)
    t_zero = time.time()
    if train:
        trainer.train_to(args.budget)
    t_train = time.time()
    after = trainer.bpb(texts) if train else None
    print(
        f"{method} seed {seed}: bpb {zero:.4f} at 0 steps, {after} after {args.budget if train else 0} steps "
        f"(init stage {init_s:.0f} s, load + score {t_zero - t_init:.0f} s, train {t_train - t_zero:.0f} s, "
        f"total {time.time() - t:.0f} s)",
        flush=True,
    )
    row = {
        "zero": zero,
        "budget": after,
        "init_seconds": init_s,
        "by_method": report.get("rows_by_method", {}),
        "norms": report.get("norm_check", {}).get("input", {}),
        "dictionary": report.get("wechsel", {}),
    }
    return row, trainer


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    import statistics

    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def fmt(values: list[float]) -> str:
    m, sd = mean_std(values)
    return f"{m:.4f} ± {sd:.4f}"


def first_reach(curve: dict[int, float], goal: float) -> int | None:
    """The first scored step at which a curve is at or below the goal."""
    return next((step for step in sorted(curve) if curve[step] <= goal), None)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("runs/bench-init"), help="where the run directories go")
    ap.add_argument(
        "--methods",
        default=DEFAULT_METHODS,
        help=f"comma-separated init methods ({BASELINE} and {REFERENCE} always run)",
    )
    ap.add_argument("--zero-only", default="", help="comma-separated methods scored at zero steps only (no training)")
    ap.add_argument("--seeds", default="0,1,2", help="comma-separated recipe seeds; figures are their mean and spread")
    ap.add_argument("--budget", type=int, default=10, help="training steps every method gets")
    ap.add_argument(
        "--resolution", type=int, default=1, help=f"{BASELINE} is scored every this many steps after the budget"
    )
    ap.add_argument("--max-factor", type=int, default=8, help=f"{BASELINE} trains on to this many times the budget")
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--heldout-chars", type=int, default=8000, help="held-out Chichewa scored (characters)")
    ap.add_argument("--new-tokens", type=int, default=2000)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--set", action="append", default=[], help="further recipe overrides (key=value)")
    args = ap.parse_args()
    if args.resolution < 1 or args.budget < 1:
        ap.error("--budget and --resolution must be at least 1")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    for noisy in ("langadapt.train.loop", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    import torch

    from langadapt.corpus import flow as corpus
    from langadapt.recipe import Recipe, find_recipe
    from langadapt.rundir import RunDir, read_json
    from langadapt.tokenizer import flow as tokenizer

    if args.threads:
        torch.set_num_threads(args.threads)
    seeds = [int(x) for x in args.seeds.split(",") if x.strip()]
    base_root = args.out / "base"
    overrides = [
        f"run_dir={base_root}",
        f"tokenizer.new_tokens={args.new_tokens}",
        f"train.seq_len={args.seq_len}",
        f"train.batch_size={args.batch_size}",
        f"train.lr={args.lr}",
        "train.warmup_steps=2",
        "train.min_lr_ratio=1.0",  # constant after warm-up: the first N steps of a longer run are an N-step run
        "eval.context_length=256",
        "eval.stride=192",
        *args.set,
    ]
    demo = find_recipe("demo-nya-smollm2")
    recipe = Recipe.from_yaml(demo, overrides)
    base = RunDir(base_root)
    t0 = time.time()
    corpus.run(recipe, base)
    tokenizer.run(recipe, base)
    src, tgt = write_parallel(base, args.out / "parallel")
    parallel = [
        f"init.parallel_source={{path: {src.resolve()}, language: eng, format: jsonl}}",
        f"init.parallel_target={{path: {tgt.resolve()}, language: nya, format: jsonl}}",
    ]
    target = read_json(base.path("corpus") / "stats.json")["target"]
    texts = heldout_texts(base, target, args.heldout_chars)
    print(f"corpus + tokenizer: {time.time() - t0:.0f} s; held-out {target}: {sum(map(len, texts))} characters")

    zero_only = [m for m in args.zero_only.split(",") if m and m not in (BASELINE, REFERENCE)]
    listed = [m for m in args.methods.split(",") if m and m not in (BASELINE, REFERENCE) and m not in zero_only]
    methods = [BASELINE, REFERENCE, *listed]
    # finished (method, seed) runs are kept in results.json, keyed by the settings, so a re-run only adds what is
    # missing; the baseline's curve is kept too, but its trainers are not, so a re-run retrains the baseline
    settings = {
        k: v
        for k, v in vars(args).items()
        if k not in ("methods", "zero_only", "out", "threads", "max_factor", "seeds", "resolution")
    }
    results_path = args.out / "results.json"
    saved = json.loads(results_path.read_text()) if results_path.is_file() else {}
    same = saved.get("settings") == settings
    rows: dict[str, dict[str, dict[str, Any]]] = saved.get("rows", {}) if same else {}
    failed: dict[str, str] = {}
    curves: dict[int, dict[int, float]] = {s: {} for s in seeds}  # baseline: seed -> step -> bpb
    trainers: dict[int, Trainer] = {}

    def save() -> None:
        results_path.write_text(json.dumps({"settings": settings, "rows": rows}, indent=1))

    for method in methods + zero_only:
        for seed in seeds:
            key = str(seed)
            if key in rows.get(method, {}) and method != BASELINE:
                print(f"{method} seed {seed}: kept from {results_path}")
                continue
            try:
                train = method not in zero_only
                row, trainer = score_method(method, seed, base, args, demo, overrides, parallel, texts, train)
                rows.setdefault(method, {})[key] = row
                if method == BASELINE:
                    trainers[seed] = trainer
                    curves[seed][args.budget] = row["budget"]
                else:
                    del trainer
            except Exception as e:  # one method's failure is reported in the table, not the end of the run
                logging.exception("%s seed %d failed", method, seed)
                failed[method] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
                if method in (BASELINE, REFERENCE):
                    raise
            save()

    def values(method: str, key: str) -> list[float]:
        return [rows[method][str(s)][key] for s in seeds if rows[method][str(s)][key] is not None]

    # the baseline trains on, all seeds in step, until the mean of its seeds reaches the reference's mean after the
    # budget and every seed has reached its own seed's reference figure (for the spread), or the cap
    goal = mean_std(values(REFERENCE, "budget"))[0]
    own_goal = {s: rows[REFERENCE][str(s)]["budget"] for s in seeds}
    cap = args.max_factor * args.budget
    step = args.budget

    def mean_curve() -> dict[int, float]:
        return {t: sum(curves[s][t] for s in seeds) / len(seeds) for t in curves[seeds[0]]}

    while step < cap and not (
        first_reach(mean_curve(), goal) is not None and all(first_reach(curves[s], own_goal[s]) for s in seeds)
    ):
        step = min(step + args.resolution, cap)
        for s in seeds:
            trainers[s].train_to(step)
            curves[s][step] = trainers[s].bpb(texts)
        print(f"{BASELINE}: {mean_curve()[step]:.4f} after {step} steps (goal {goal:.4f}, {REFERENCE})", flush=True)

    ran = [m for m in methods + zero_only if m in rows]
    print()
    print(
        f"held-out {target} bits per byte, mean ± standard deviation over seeds {args.seeds}; budget {args.budget} "
        f"steps of {args.batch_size} x {args.seq_len} tokens, {recipe.train.method}, lr {args.lr} constant; "
        f"baseline: {BASELINE}"
    )
    print(f"| method | init s | bpb at 0 steps | vs {BASELINE} | bpb after {args.budget} | vs {BASELINE} | rows by |")
    print("|---|---|---|---|---|---|---|")
    b0 = mean_std(values(BASELINE, "zero"))[0]
    bb = mean_std(values(BASELINE, "budget"))[0]
    for m in ran:
        zero, after = values(m, "zero"), values(m, "budget")
        init_s = mean_std([rows[m][str(s)]["init_seconds"] for s in seeds])[0]
        trained = f"{fmt(after)} | {100 * (mean_std(after)[0] / bb - 1):+.1f}%" if after else "not trained | -"
        by = rows[m][str(seeds[0])]["by_method"]
        print(f"| {m} | {init_s:.1f} | {fmt(zero)} | {100 * (mean_std(zero)[0] / b0 - 1):+.1f}% | {trained} | {by} |")
    for m in ran:
        if m in (BASELINE, "random", "mean", "mvn"):
            continue
        for when, key in (("at zero steps", "zero"), (f"after {args.budget} steps", "budget")):
            if not values(m, key):
                continue
            lost = [b for b in (BASELINE, "random", "mean") if b in rows and values(b, key)]
            lost = [b for b in lost if mean_std(values(m, key))[0] >= mean_std(values(b, key))[0]]
            if lost:
                print(f"NOTE: {m} does not beat {' and '.join(lost)} {when}")
    for m, why in failed.items():
        print(f"| {m} | failed: {why} |")
    if "wechsel" in rows:
        print(f"wechsel dictionary: {rows['wechsel'][str(seeds[0])]['dictionary']}")
    curve = mean_curve()
    print(f"{BASELINE}'s curve (mean of seeds): " + ", ".join(f"{t} {curve[t]:.4f}" for t in sorted(curve)))
    per_seed = {s: first_reach(curves[s], own_goal[s]) for s in seeds}
    reach_text = ", ".join(f"seed {s}: {'>' + str(cap) if r is None else r}" for s, r in per_seed.items())
    print(f"{REFERENCE} after {args.budget} steps: {fmt(values(REFERENCE, 'budget'))}")
    print(f"steps {BASELINE} needs to reach {REFERENCE}'s figure of the same seed: {reach_text}")
    reached = first_reach(curve, goal)
    if reached is None:
        print(f"{BASELINE} (mean of seeds) did not reach it within {cap} steps")
        print(f"ratio: >{args.max_factor}")
    else:
        print(f"{BASELINE} (mean of seeds) needs {reached} steps to reach it (scored every {args.resolution})")
        print(f"ratio: {reached / args.budget:.2f}")


if __name__ == "__main__":
    main()
