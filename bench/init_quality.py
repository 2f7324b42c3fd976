"""Benchmark the init methods on the demo's model and corpus: how much training does a good init save?

    python bench/init_quality.py                       # defaults below; about 30-60 min on 2 CPU cores
    python bench/init_quality.py --budget 6 --methods random,fvt,focus   # a quicker look

The demo recipe (SmolLM2-135M, Chichewa Bible with English replay, 2,000 new tokens) runs
its corpus and tokenizer stages once; then every method runs the real init stage into its
own run directory (sharing one fastText cache) and is scored on held-out Chichewa (whole
books never trained on) in bits per byte, at zero steps and after the same small budget
of the demo's training method (LoRA + new rows, English replay). The learning rate is
constant after warm-up, so a longer run's first N steps are exactly an N-step run: the
named baseline, `random` (what a plain resize does), then trains on until it reaches the
best method's score at the end of the budget, or 8x the budget.

    ratio: R   where R = steps random needs / budget (">" when it did not get there in 8x)

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

DEFAULT_METHODS = "random,fvt,wechsel,focus,omp,ofa,mean,mvn"


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
    base: Any,
    args: Any,
    demo: Path,
    overrides: list[str],
    parallel: list[str],
    texts: list[str],
    train: bool = True,
) -> dict[str, Any]:
    """Init one method with the real stage, score it at zero steps, train the budget, score again."""
    from langadapt.init import flow as embed_init
    from langadapt.recipe import Recipe
    from langadapt.rundir import read_json

    rd = method_run_dir(base, args.out, method)
    extra = parallel if method == "wechsel" else []
    rec = Recipe.from_yaml(demo, [*overrides[1:], f"run_dir={rd.root}", f"init.method={method}", *extra])
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
        f"{method}: bpb {zero:.4f} at 0 steps, {after} after {args.budget if train else 0} steps "
        f"(init stage {init_s:.0f} s, load + score {t_zero - t_init:.0f} s, train {t_train - t_zero:.0f} s, "
        f"total {time.time() - t:.0f} s)",
        flush=True,
    )
    return {
        "zero": zero,
        "budget": after,
        "init_seconds": init_s,
        "by_method": report.get("rows_by_method", {}),
        "norms": report.get("norm_check", {}).get("input", {}),
        "dictionary": report.get("wechsel", {}),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("runs/bench-init"), help="where the run directories go")
    ap.add_argument("--methods", default=DEFAULT_METHODS, help="comma-separated init methods (random is always run)")
    ap.add_argument("--zero-only", default="", help="comma-separated methods scored at zero steps only (no training)")
    ap.add_argument("--budget", type=int, default=10, help="training steps every method gets")
    ap.add_argument("--max-factor", type=int, default=8, help="random trains on to this many times the budget")
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--heldout-chars", type=int, default=8000, help="held-out Chichewa scored (characters)")
    ap.add_argument("--new-tokens", type=int, default=2000)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--set", action="append", default=[], help="further recipe overrides (key=value)")
    args = ap.parse_args()
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

    zero_only = [m for m in args.zero_only.split(",") if m and m != "random"]
    methods = ["random"] + [m for m in args.methods.split(",") if m and m != "random" and m not in zero_only]
    # finished methods are kept in results.json, keyed by the settings, so a re-run only adds what is missing
    settings = {
        k: v for k, v in vars(args).items() if k not in ("methods", "zero_only", "out", "threads", "max_factor")
    }
    results_path = args.out / "results.json"
    saved = json.loads(results_path.read_text()) if results_path.is_file() else {}
    same = saved.get("settings") == settings
    rows: dict[str, dict[str, Any]] = saved.get("rows", {}) if same else {}
    curve: list[tuple[int, float]] = [tuple(p) for p in saved.get("random_curve", [])] if same else []  # type: ignore[misc]
    failed: dict[str, str] = {}

    def save() -> None:
        results_path.write_text(json.dumps({"settings": settings, "rows": rows, "random_curve": curve}, indent=1))

    for method in methods:
        if method in rows:
            print(f"{method}: kept from {results_path}")
            continue
        try:
            rows[method] = score_method(method, base, args, demo, overrides, parallel, texts)
        except Exception as e:  # one method's failure is reported in the table, not the end of the run
            logging.exception("%s failed", method)
            failed[method] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            if method == "random":
                raise
        save()
    for method in zero_only:
        if method in rows:
            continue
        try:
            rows[method] = score_method(method, base, args, demo, overrides, parallel, texts, train=False)
        except Exception as e:
            logging.exception("%s failed", method)
            failed[method] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        save()
    methods = [m for m in methods + zero_only if m in rows]
    trained = [m for m in methods if rows[m]["budget"] is not None]
    rd_random = RunDir(args.out / "random")
    rec_random = Recipe.from_yaml(demo, [*overrides[1:], f"run_dir={rd_random.root}", "init.method=random"])
    best = min((m for m in trained if m != "random"), key=lambda m: rows[m]["budget"], default="random")
    goal = rows[best]["budget"]
    # random trains on from its last checkpoint; earlier points of its curve are kept from previous runs
    curve = sorted(set(curve) | {(args.budget, rows["random"]["budget"])})
    reached = next((s for s, b in curve if b <= goal), None)
    step = curve[-1][0]
    increment = args.budget
    if reached is None and step < args.max_factor * args.budget:
        random_trainer = Trainer(rec_random, rd_random)
        random_trainer.step = step
        while reached is None and step < args.max_factor * args.budget:
            step = min(step + increment, args.max_factor * args.budget)
            random_trainer.train_to(step)
            score = random_trainer.bpb(texts)
            curve.append((step, score))
            save()
            print(f"random: {score:.4f} after {step} steps (goal {goal:.4f}, {best})", flush=True)
            if score <= goal:
                reached = step

    print()
    print(
        f"held-out {target} bits per byte; budget {args.budget} steps of {args.batch_size} x {args.seq_len} tokens, "
        f"{recipe.train.method}, lr {args.lr} constant; baseline: random"
    )
    print(f"| method | init s | bpb at 0 steps | vs random | bpb after {args.budget} | vs random | rows by |")
    print("|---|---|---|---|---|---|---|")
    r0, rb = rows["random"]["zero"], rows["random"]["budget"]
    for m in methods:
        r = rows[m]
        after = "not trained" if r["budget"] is None else f"{r['budget']:.4f} | {100 * (r['budget'] / rb - 1):+.1f}%"
        if r["budget"] is None:
            after += " | -"
        print(
            f"| {m} | {r['init_seconds']:.1f} | {r['zero']:.4f} | {100 * (r['zero'] / r0 - 1):+.1f}% | {after} | {r['by_method']} |"
        )
    for m in methods:
        if m in ("random", "mean", "mvn"):
            continue
        for when, key in (("at zero steps", "zero"), (f"after {args.budget} steps", "budget")):
            lost = [b for b in ("random", "mean") if b in rows and None not in (rows[m][key], rows[b][key])]
            lost = [b for b in lost if rows[m][key] >= rows[b][key]]
            if lost:
                print(f"NOTE: {m} does not beat {' and '.join(lost)} {when}")
    for m, why in failed.items():
        print(f"| {m} | failed: {why} |")
    if "wechsel" in rows:
        print(f"wechsel dictionary: {rows['wechsel']['dictionary']}")
    print("random's curve: " + ", ".join(f"{s} steps {b:.4f}" for s, b in curve))
    print(f"best method after {args.budget} steps: {best} ({goal:.4f})")
    if reached is None:
        print(f"random did not reach it within {args.max_factor * args.budget} steps")
        print(f"ratio: >{args.max_factor}")
    else:
        print(f"random needs {reached} steps to reach it")
        print(f"ratio: {reached / args.budget:.2f}")


if __name__ == "__main__":
    main()
