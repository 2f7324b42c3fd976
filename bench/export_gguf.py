"""Benchmark the GGUF export on a finished run: token-id parity and llama.cpp's bits per byte.

    python bench/export_gguf.py --run-dir runs/demo --build-seconds 896
    python bench/export_gguf.py --run-dir runs/demo --build-sdist llama_cpp_python-0.3.36.tar.gz

Exports the run with `langadapt export --format gguf` in f16 and q8_0 (each export checks
parity itself and refuses on a difference), then, through llama-cpp-python (llama.cpp):

1. token-id parity: the share of held-out texts (target and source language, the run's
   corpus held-out files) and of their tokens whose ids equal the adapted HF tokenizer's,
   per reader of the GGUF tokenizer (transformers' and llama.cpp's);
2. bits per byte on the eval stage's sets (the same documents, windows, stride, scored
   tokens and bytes: `scoring.bpb.bits_per_byte_llama_cpp`) for the f16 and the q8_0 file.

Baseline: the eval stage's figure for the adapted model (`eval/results.json`, HF
transformers in the eval precision). `ratio:` lines are llama.cpp f16 (and q8_0) bits per
byte / the eval stage's; the goal for f16 is within 1% (0.99-1.01).
The build time of llama-cpp-python from its source distribution is measured here with
`--build-sdist` or recorded from a measurement made elsewhere with `--build-seconds`.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def build(sdist: str) -> float:
    """Seconds `pip wheel` takes to build llama-cpp-python from its source distribution."""
    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", out, sdist], check=True)
        return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run-dir", required=True, help="a finished run (copied: the export only reads it)")
    ap.add_argument("--out", default="", help="where the exports go (default: a temporary folder)")
    ap.add_argument("--quants", default="f16,q8_0", help="GGUF types to export and score; the first is the headline")
    ap.add_argument("--threads", type=int, default=2, help="llama.cpp threads")
    ap.add_argument("--build-sdist", default="", help="build llama-cpp-python from this sdist and time it")
    ap.add_argument("--build-seconds", type=float, default=None, help="a build time measured elsewhere, to record")
    args = ap.parse_args()

    from langadapt.documents import languages, read_texts
    from langadapt.evaluate.flow import eval_sets
    from langadapt.export import export
    from langadapt.gguf_vocab import readers
    from langadapt.models.loading import load_tokenizer
    from langadapt.recipe import Recipe
    from langadapt.rundir import RunDir, read_json
    from langadapt.scoring.bpb import bits_per_byte_llama_cpp

    build_seconds = build(args.build_sdist) if args.build_sdist else args.build_seconds
    rd = RunDir(args.run_dir)
    recipe = Recipe.from_yaml(rd.root / "recipe.yaml")
    results = read_json(rd.path("eval") / "results.json")
    tok = load_tokenizer(str(rd.path("train") / "final"))
    out = Path(args.out or tempfile.mkdtemp(prefix="gguf-bench-"))
    quants = args.quants.split(",")

    files, seconds = {}, {}
    for q in quants:
        t0 = time.perf_counter()
        folder = export(rd.root, out / q, "gguf", force=True, quant=q)
        seconds[q] = time.perf_counter() - t0
        files[q] = folder / read_json(folder / "gguf_export.json")["file"]
        print(f"exported {q}: {files[q]} ({files[q].stat().st_size / 1e6:.1f} MB) in {seconds[q]:.1f} s", flush=True)

    print("\ntoken-id parity with the adapted tokenizer (held-out corpus text):")
    target, replay = languages(rd)
    texts = {f"{lang}-heldout": read_texts(rd, lang, "heldout") for lang in (target, replay) if lang}
    parity_pct = []
    for reader, read in readers(files[quants[0]])[0].items():
        for name, docs in texts.items():
            want, got = tok(docs, add_special_tokens=False)["input_ids"], read(docs)
            same_texts = sum(list(a) == list(b) for a, b in zip(want, got))
            same_tokens = sum(sum(x == y for x, y in zip(a, b)) for a, b in zip(want, got))
            n_tokens = sum(len(a) for a in want)
            parity_pct.append(100 * same_texts / len(docs))
            print(
                f"  {reader:32s} {name:12s} texts {same_texts}/{len(docs)} ({100 * same_texts / len(docs):.1f}%), "
                f"tokens {same_tokens}/{n_tokens} ({100 * same_tokens / n_tokens:.2f}%)"
            )

    print(
        f"\nbits per byte on the eval sets (context {recipe.eval.context_length}, stride {recipe.eval.stride}; "
        f"eval stage: HF transformers, {results.get('precision', '?')}):"
    )
    header = f"  {'set':12s} {'bytes':>7s} {'eval stage':>10s}" + "".join(f" {'llama.cpp ' + q:>15s}" for q in quants)
    print(header)
    ratios: dict[str, list[tuple[str, float]]] = {q: [] for q in quants}
    timing = {q: 0.0 for q in quants}
    for s in eval_sets(recipe, rd):
        ref = results["bits_per_byte"][s.name]["adapted"]
        row = f"  {s.name:12s} {sum(len(t.encode()) for t in s.texts):7d} {ref:10.4f}"
        for q in quants:
            t0 = time.perf_counter()
            got = bits_per_byte_llama_cpp(str(files[q]), tok, s.texts, recipe.eval, threads=args.threads)
            timing[q] += time.perf_counter() - t0
            assert got["tokens"] == results["bits_per_byte"][s.name]["adapted_tokens"], "not the eval stage's tokens"
            row += f" {got['bits_per_byte']:15.4f}"
            ratios[q].append((s.name, got["bits_per_byte"] / ref))
        print(row, flush=True)
    print("  llama.cpp scoring seconds: " + ", ".join(f"{q} {timing[q]:.1f}" for q in quants))
    if build_seconds is not None:
        how = "measured here" if args.build_sdist else "measured elsewhere, recorded"
        print(f"\nllama-cpp-python build from its source distribution: {build_seconds:.0f} s ({how})")
    print()
    print(f"parity: min {min(parity_pct):.1f}% of held-out texts identical over readers and sets")
    for q in quants:
        for name, r in ratios[q]:
            print(f"ratio: llama.cpp {q} / eval stage bits per byte, {name}: {r:.4f}")
    worst = max(abs(r - 1) for _, r in ratios[quants[0]])
    print(
        f"{quants[0]} within 1% of the eval stage on every set: {'yes' if worst <= 0.01 else 'no'} (worst {100 * worst:.2f}%)"
    )


if __name__ == "__main__":
    main()
