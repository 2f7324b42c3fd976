"""Benchmark the cross-lingual objectives against their monolingual baselines at equal steps.

    python bench/objectives.py                         # encoder (mlm, tlm, codeswitch) and decoder (clm, translation-clm)
    python bench/objectives.py --only encoder --seeds 0,1,2 --encoder-steps 60

Encoder: the shipped encoder recipe (`demo-nya-e5`: multilingual-e5-small, vocabulary trimmed to
the training text) with a short schedule: one phase of LoRA, the created MLM head and every
embedding row under the objective of the arm: `mlm` (the baseline), `tlm` (half
the target's rows are Chichewa-English verse pairs of the bundled Bible, `builtin:bible-bitext`,
held-out books left out) or `codeswitch` (half the target's rows with Chichewa words replaced by
English ones with probability 0.3, from a dictionary induced with eflomal from the same training
verse pairs). Decoder: the shipped decoder recipe (`demo-nya-smollm2`: SmolLM2-135M, tokenizer
extended, FVT rows, LoRA) with `clm` (the baseline) against `translation-clm`. Every arm of a
model starts from the same initialised model (corpus, tokenizer and init stages run once) and
trains the same number of steps of the same size; only the objective and the seed differ.
The defaults are sized for a shared 2-core CPU (8 encoder steps of 8 x 64 tokens, 6 decoder
steps of 4 x 64): far too short to adapt a model, long enough to see which way each objective
moves alignment; raise them on a GPU.

Scores, on the books no training step saw (Ruth, Jonah, Philemon, Jude, 2 and 3 John): bitext
retrieval P@1 in both directions at the middle layer (mean-pooled, as the eval stage's
retrieval task) and MEXA alignment (mean over layers) on the eval stage's `bible-bitext` pairs;
beside them the (pseudo) bits per byte of the first held-out Chichewa verses of those pairs (600
characters; 64-token windows, stride 32, for the encoder's pseudo-likelihood). Mean and standard deviation over the seeds. The last line is `ratio: R`, TLM's mean
P@1 (both directions) over MLM's.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

ENCODER, DECODER = "demo-nya-e5", "demo-nya-smollm2"
SCORED_CHARS = 600  # held-out Chichewa scored for (pseudo) bits per byte: pseudo-likelihood costs a window per token


def _recipe(name: str, run_dir: Path, train: dict[str, Any], seed: int) -> Any:
    import dataclasses

    import yaml

    from langadapt.recipe import Recipe, shipped_recipes

    data = yaml.safe_load(shipped_recipes()[name].read_text())
    data["run_dir"] = str(run_dir)
    data["seed"] = seed
    data["train"] = {**data["train"], **train}
    data.pop("eval", None)
    recipe = Recipe.from_dict(data)
    return dataclasses.replace(recipe, name=f"{name}-{run_dir.name}")


def _pairs(n: int) -> tuple[list[str], list[str]]:
    from langadapt.evaluate.tasks.bible import bitext_set

    data = bitext_set()
    eng = {e.id: e.text for e in data.examples if e.language == "eng"}
    nya = [(e.text, eng[e.id]) for e in data.examples if e.language == "nya" and e.id in eng][:n]
    return [a for a, _ in nya], [b for _, b in nya]


def alignment_scores(model_dir: Path, nya: list[str], eng: list[str]) -> dict[str, float]:
    """Retrieval P@1 both ways at the middle layer and MEXA (mean over layers), as the eval stage's tasks, and
    the held-out Chichewa verses' (pseudo) bits per byte (the first of them, up to SCORED_CHARS)."""
    import types

    import numpy as np
    import torch

    from langadapt.evaluate.embed import Encoder, is_decoder, layer_index
    from langadapt.evaluate.tasks.retrieval import cosine, mexa, precision_at_1
    from langadapt.models.loading import load_model, load_tokenizer
    from langadapt.scoring.bpb import bits_per_byte
    from langadapt.scoring.pppl import pseudo_bits_per_byte

    model = load_model(str(model_dir), "float32").eval()
    tok = load_tokenizer(str(model_dir))
    enc = Encoder(model, tok)
    with torch.no_grad():
        xa, xb = enc.sentences(nya), enc.sentences(eng)
    mid = layer_index(model, "middle")
    sim = cosine(xa[:, mid], xb[:, mid])
    per_layer = [mexa(cosine(xa[:, i], xb[:, i])) for i in range(1, xa.shape[1])]
    scored, size = [], 0
    for text in nya:
        if size + len(text) > SCORED_CHARS:
            break
        scored.append(text)
        size += len(text)
    if is_decoder(model):
        bpb = bits_per_byte(model, tok, scored, types.SimpleNamespace(context_length=256, stride=128))
    else:
        bpb = pseudo_bits_per_byte(model, tok, scored, 64, 32)
    return {
        "p1_nya_eng": precision_at_1(sim),
        "p1_eng_nya": precision_at_1(sim.T),
        "mexa": float(np.mean(per_layer)),
        "bpb_nya": float(bpb["bits_per_byte"]),
    }


def _dictionary(out: Path) -> Path:
    """A Chichewa-English dictionary induced with eflomal from the training verse pairs (held-out books left out)."""
    from langadapt.config import ParallelConfig
    from langadapt.init.align import induce
    from langadapt.sources.parallel import read_pairs

    path = out / "dictionary.tsv"
    if not path.is_file():
        held = {"RUT", "JON", "PHM", "JUD", "2JN", "3JN"}
        pairs = [p for p in read_pairs(ParallelConfig(path="builtin:bible-bitext")) if p.group not in held]
        (out / "cache").mkdir(parents=True, exist_ok=True)
        words, _ = induce([p.second for p in pairs], [p.first for p in pairs], out / "cache")  # (eng, nya)
        path.write_text("".join(f"{a}\t{b}\n" for a, b in words), encoding="utf-8")
    return path


def family(
    name: str, arms: dict[str, dict[str, Any]], shared: dict[str, Any], seeds: list[int], out: Path, pairs: int
) -> dict[str, list[dict[str, float]]]:
    """Train every arm at every seed from one prepared run directory; the scores per arm and seed."""
    from langadapt.pipeline import run

    prepared = out / f"{name}-prepared"
    if not (prepared / "model-init").is_dir():
        run(_recipe(name, prepared, shared, 0), stages=("corpus", "tokenizer", "init"))
    nya, eng = _pairs(pairs)
    results: dict[str, list[dict[str, float]]] = {"base": [alignment_scores(prepared / "model-init", nya, eng)]}
    print(f"{name} base (initialised, untrained): {results['base'][0]}", flush=True)
    for arm in arms:
        results[arm] = []
    for seed in seeds:  # every arm at a seed before the next seed: a cut-short run still compares like with like
        for arm, train in arms.items():
            folder = out / f"{name}-{arm}-{seed}"
            if not (folder / "train" / "summary.json").is_file():
                shutil.rmtree(folder, ignore_errors=True)
                shutil.copytree(prepared, folder)
                t0 = time.time()
                run(_recipe(name, folder, {**shared, **train}, seed), stages=("train",))
                print(f"{name} {arm} seed {seed}: trained in {time.time() - t0:.0f} s", flush=True)
            scores = alignment_scores(folder / "train" / "final", nya, eng)
            results[arm].append(scores)
            print(f"{name} {arm} seed {seed}: {scores}", flush=True)
    return results


def _stat(rows: list[dict[str, float]], key: str) -> tuple[float, float]:
    vals = [r[key] for r in rows if key in r]
    if not vals:
        return float("nan"), float("nan")
    return statistics.mean(vals), statistics.stdev(vals) if len(vals) > 1 else 0.0


def table(name: str, results: dict[str, list[dict[str, float]]], metric: str) -> None:
    print(f"\n{name}")
    print(f"| arm | P@1 nya→eng | P@1 eng→nya | P@1 mean | MEXA | {metric} |")
    print("|---|---|---|---|---|---|")
    for arm, rows in results.items():
        for r in rows:
            r["p1_mean"] = (r["p1_nya_eng"] + r["p1_eng_nya"]) / 2
        cells = []
        for key in ("p1_nya_eng", "p1_eng_nya", "p1_mean", "mexa", "bpb_nya"):
            m, s = _stat(rows, key)
            cells.append("n/a" if m != m else (f"{m:.4f}" if len(rows) == 1 else f"{m:.4f} ± {s:.4f}"))
        print(f"| {arm} | " + " | ".join(cells) + " |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/bench-objectives")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--only", choices=("encoder", "decoder"), default=None)
    ap.add_argument("--encoder-steps", type=int, default=8)
    ap.add_argument("--decoder-steps", type=int, default=6)
    ap.add_argument("--encoder-batch", type=int, default=8, help="sequences per step")
    ap.add_argument("--decoder-batch", type=int, default=4, help="sequences per step")
    ap.add_argument("--seq-len", type=int, default=64, help="tokens per sequence (both models)")
    ap.add_argument("--pairs", type=int, default=100, help="held-out verse pairs scored (retrieval candidates)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    seeds = [int(s) for s in args.seeds.split(",")]
    bitext = {"path": "builtin:bible-bitext"}
    ratio = None
    t0 = time.time()
    if args.only != "decoder":
        steps = args.encoder_steps
        shared = {
            "seq_len": args.seq_len,
            "batch_size": args.encoder_batch,
            "warmup_steps": 2,
            "eval_every": 0,
            "save_every": 0,
            "threads": args.threads,
            # one phase: LoRA, the created head and every embedding row train together (no head warm-up: short runs)
            "phases": [{"name": "lora", "method": "lora", "max_steps": steps, "lr": 3.0e-3, "embeddings": "all"}],
        }

        def arm(objective: str, **extra: Any) -> dict[str, Any]:
            phases = [dict(p) for p in shared["phases"]]
            phases[0]["objective"] = objective
            return {"phases": phases, **extra}

        arms = {
            "mlm": arm("mlm"),
            "tlm": arm("tlm", parallel=bitext),
            "codeswitch": arm("codeswitch", codeswitch_dictionary=str(_dictionary(out))),
        }
        enc = family(ENCODER, arms, shared, seeds, out, args.pairs)
        size = f"{args.encoder_batch} x {args.seq_len} tokens per step"
        table(f"encoder ({ENCODER}, {steps} steps of the objective, {size})", enc, "pseudo bits per byte")
        tlm = statistics.mean(r["p1_mean"] for r in enc["tlm"])
        mlm = statistics.mean(r["p1_mean"] for r in enc["mlm"])
        spread = max(_stat(enc["tlm"], "p1_mean")[1], _stat(enc["mlm"], "p1_mean")[1])
        cs = statistics.mean(r["p1_mean"] for r in enc["codeswitch"])
        print(f"\ncodeswitch over mlm (mean P@1): {cs / mlm:.3f}" if mlm else "\ncodeswitch over mlm: mlm P@1 is 0")
        print(f"tlm - mlm mean P@1: {tlm - mlm:+.4f}, largest seed spread (sd) {spread:.4f}")
        ratio = tlm / mlm if mlm else float("inf")
    if args.only != "encoder":
        steps = args.decoder_steps
        shared = {
            "max_steps": steps,
            "seq_len": args.seq_len,
            "batch_size": args.decoder_batch,
            "warmup_steps": 2,
            "eval_every": 0,
            "save_every": 0,
            "threads": args.threads,
        }
        arms = {"clm": {"objective": "clm"}, "translation-clm": {"objective": "translation-clm", "parallel": bitext}}
        dec = family(DECODER, arms, shared, seeds, out, args.pairs)
        table(
            f"decoder ({DECODER}, {steps} steps of {args.decoder_batch} x {args.seq_len} tokens)", dec, "bits per byte"
        )
        t = statistics.mean(r["p1_mean"] for r in dec["translation-clm"])
        c = statistics.mean(r["p1_mean"] for r in dec["clm"])
        print(
            f"\ntranslation-clm over clm (mean P@1): {t / c:.3f}" if c else "\ntranslation-clm over clm: clm P@1 is 0"
        )
    print(f"\nwall time {time.time() - t0:.0f} s")
    if ratio is not None:
        print(f"ratio: {ratio:.3f}")


if __name__ == "__main__":
    main()
