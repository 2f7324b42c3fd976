"""Benchmark batched pseudo-perplexity against the one-mask-per-forward reference.

    python bench/pppl.py                       # multilingual-e5-small on held-out Chichewa (Ruth 1)
    python bench/pppl.py --chars 600 --window 128 --copies 128 --threads 2

Baseline: `pseudo_log_likelihood_reference`, the definition run as written (one masked
copy of the window per forward pass, the full masked-LM head at every position), on the
same model, text, windows and within-word masking, in the same process. The batched
scorer (`pseudo_bits_per_byte`) must give the same value (relative difference <= 1e-4)
and is timed against it; the last line is `ratio: R` = reference seconds / batched seconds.
"""

from __future__ import annotations

import argparse
import sys
import time


def chichewa_text(chars: int) -> str:
    """The start of Ruth 1 in Chichewa (a book the demo recipes hold out), cut at a word boundary."""
    from langadapt.config import SourceConfig
    from langadapt.sources.reading import read_source

    docs, _ = read_source(SourceConfig(path="builtin:bible-nya", language="nya"))
    text = next(d.text for d in docs if d.id == "RUT.1")
    return text[:chars].rsplit(" ", 1)[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="builtin:multilingual-e5-small", help="encoder: builtin:NAME, folder or hub id")
    ap.add_argument("--chars", type=int, default=600, help="characters of held-out Chichewa to score")
    ap.add_argument("--window", type=int, default=128, help="tokens per window (eval.context_length)")
    ap.add_argument("--stride", type=int, default=64, help="tokens scored per window (eval.stride)")
    ap.add_argument("--copies", type=int, default=128, help="masked copies per forward pass in the batched scorer")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    ap.add_argument("--plain", action="store_true", help="no within-word correction")
    args = ap.parse_args()

    import torch

    from langadapt.config import ModelConfig
    from langadapt.models.loading import load_model, load_tokenizer, resolve_base
    from langadapt.scoring.pppl import pseudo_bits_per_byte, pseudo_log_likelihood_reference

    torch.set_num_threads(args.threads)
    path = resolve_base(ModelConfig(base=args.model))
    model, tok = load_model(path), load_tokenizer(path)
    texts = [chichewa_text(args.chars)]
    common = dict(context_length=args.window, stride=args.stride, within_word=not args.plain)

    t0 = time.perf_counter()
    batched = pseudo_bits_per_byte(model, tok, texts, copies_per_batch=args.copies, desc="batched", **common)
    t_batched = time.perf_counter() - t0
    t0 = time.perf_counter()
    reference = pseudo_log_likelihood_reference(model, tok, texts, **common)
    t_reference = time.perf_counter() - t0

    rel = abs(batched["bits_per_byte"] - reference["bits_per_byte"]) / reference["bits_per_byte"]
    print(f"model: {args.model}  text: {batched['bytes']} bytes, {batched['tokens']} scored tokens")
    print(f"window {args.window}, stride {args.stride}, within-word {not args.plain}, {args.threads} threads")
    print(f"reference (one masked copy per forward, full head): {t_reference:8.2f} s  {reference['bits_per_byte']:.6f}")
    print(
        f"batched ({args.copies} copies per forward, head at the scored position): {t_batched:8.2f} s  {batched['bits_per_byte']:.6f}"
    )
    print(f"relative difference: {rel:.2e} (limit 1e-4)")
    print(f"ratio: {t_reference / t_batched:.2f}")
    if rel > 1e-4:
        sys.exit("batched and reference pseudo bits per byte differ")


if __name__ == "__main__":
    main()
