"""Training throughput: langadapt's loop against a plain transformers `Trainer`, same model, data, tokens.

    python bench/train_throughput.py                 # demo model, 8 steps each, prints `ratio: R`
    python bench/train_throughput.py --steps 4 --micro-batch 2

Both sides train the demo's base model (builtin:smollm2-135m, +2000 new token rows as the
demo's extended tokenizer adds) with the demo recipe's LoRA configuration (the `lora` train
method: LoRA on every projection, trainable new-token rows) on the same Chichewa text, for
the same number of optimizer steps of batch x seq_len tokens.

The baseline is what a user writes from transformers' run_clm example: tokenise, concatenate,
cut into blocks (`group_texts`), labels = inputs, `default_data_collator`, `Trainer` with the
same batch, learning rate and schedule. langadapt runs its own loop (`train.loop.train_loop`)
with the demo recipe's training section and its defaults (precision auto, fused chunked loss,
document attention, micro-batches sized for the device).

Like with like: the `ratio: R` line is langadapt's tokens/s over the Trainer's at the same
precision and the same micro-batch split (`per_device_train_batch_size` x
`gradient_accumulation_steps` set to langadapt's passes): the best configuration a Trainer
user could set. Below it, `defaults ratio:` compares langadapt's defaults with run_clm's
(the device's usual precision, fp32 on a CPU and bf16 on a GPU that has it, and the whole
batch in one pass); that Trainer run is skipped with `--matched-only`, or when it would be
the matched run itself.

Each side runs in its own process (peak resident memory is that process's). Tokens/s count
real tokens (neither side pads) over the steps after the first `--warmup` ones. MFU beside
them: those tokens/s times the model FLOPs per token (`train/flops.py`, the same model and
method on both sides) over the device's peak at that side's precision (on a CPU, its
measured matmul peak, and the output says so).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from langadapt.train.flops import device_peak, flops_per_token

NEW_TOKENS = 2000  # rows the demo's tokenizer stage adds


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def demo_recipe(args: argparse.Namespace, precision: str) -> Any:
    from langadapt.recipe import Recipe, find_recipe

    sets = [
        f"train.max_steps={args.steps}",
        f"train.warmup_steps={min(args.steps, 4)}",  # the demo's 4, or fewer for very short runs
        "train.save_every=0",
        "train.replay_ratio=0",
        f"train.seq_len={args.seq_len}",
        f"train.batch_size={args.batch}",
        f"train.precision={precision}",
        f"train.micro_batch_size={args.micro_batch}",
        *args.set,
    ]
    return Recipe.from_yaml(find_recipe("demo-nya-smollm2"), sets)


def model_and_data(recipe: Any, n_docs: int) -> tuple[Any, Any, list[str]]:
    """The demo's base model with NEW_TOKENS extra rows (mean-initialised), wrapped by the lora method."""
    import torch

    import langadapt.train.methods  # noqa: F401  (registers the train methods apply_method names)
    from langadapt.config import SourceConfig
    from langadapt.models.loading import load_model, load_tokenizer, resolve_base
    from langadapt.sources.reading import read_source
    from langadapt.train.precision import weights_dtype
    from langadapt.train.trainable import apply_method

    torch.manual_seed(0)
    path = resolve_base(recipe.model)
    tok = load_tokenizer(path)
    model = load_model(path, weights_dtype(recipe))
    n = model.get_input_embeddings().weight.shape[0]
    model.resize_token_embeddings(n + NEW_TOKENS, mean_resizing=False)
    with torch.no_grad():
        emb = model.get_input_embeddings().weight
        emb[n:] = emb[:n].mean(0)
    model = apply_method("lora", model, recipe.train, list(range(n, n + NEW_TOKENS)))
    docs, _ = read_source(SourceConfig(path="builtin:bible-nya", language="nya"))
    texts = [d.text for _, d in zip(range(n_docs), docs)]
    return model, tok, texts


def run_langadapt(args: argparse.Namespace) -> dict[str, Any]:
    from langadapt.models.loading import doc_separator_id
    from langadapt.train.data import TokenStream
    from langadapt.train.loop import train_loop

    recipe = demo_recipe(args, args.precision)
    model, tok, texts = model_and_data(recipe, args.docs)
    if args.plain_loss:  # ablation: without a recognised output head, clm falls back to the full-logits loss
        from langadapt.train import objectives

        objectives.output_head = lambda model: None
    streams = {"nya": TokenStream(texts, tok, doc_separator_id(tok), args.seq_len, recipe.seed)}
    before = current_rss_mb()
    with tempfile.TemporaryDirectory() as out:
        summary = train_loop(model, streams, "nya", None, recipe, Path(out))
        rows = [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]
    times = [r["elapsed_s"] for r in rows]
    return {
        "precision": summary["precision"],
        "micro_batch": summary["micro_batch"],
        "times": times,
        "losses": [r["loss"] for r in rows],
        "rss_before_train_mb": before,
        # the loop's own accounting: model FLOPs per token and the peak its MFU is against
        "flops_per_token": summary["model_flops_per_token"],
        "peak_tflops": summary.get("peak_tflops"),
        "mfu_against": summary.get("mfu_against"),
    }


def run_trainer(args: argparse.Namespace) -> dict[str, Any]:
    """transformers' run_clm recipe, as a user writes it, on the same model and text."""
    import torch
    from transformers import Trainer, TrainerCallback, TrainingArguments, default_data_collator

    recipe = demo_recipe(args, "fp32")  # the model and data only: the Trainer keeps its own precision
    model, tok, texts = model_and_data(recipe, args.docs)
    data = group_texts(tok(texts)["input_ids"], args.seq_len)  # run_clm: tokenize_function, then group_texts
    times: list[float] = []
    losses: list[float] = []

    class Clock(TrainerCallback):
        def on_train_begin(self, *a: Any, **k: Any) -> None:
            self.t0 = time.time()

        def on_step_end(self, *a: Any, **k: Any) -> None:
            times.append(round(time.time() - self.t0, 2))

        def on_log(self, _args: Any, _state: Any, _control: Any, logs: dict | None = None, **k: Any) -> None:
            if logs and "loss" in logs:
                losses.append(round(logs["loss"], 4))

    precision = trainer_default_precision() if args.precision == "auto" else args.precision
    # the same model and method as langadapt's side: the same FLOPs per token; the peak at this side's precision
    flops = flops_per_token(model, args.seq_len)
    peak, _ = device_peak(torch.device("cuda" if torch.cuda.is_available() else "cpu"), precision)
    with tempfile.TemporaryDirectory() as out:
        micro = args.trainer_micro or args.batch  # run_clm's default: the whole batch in one pass
        targs = TrainingArguments(
            output_dir=out,
            per_device_train_batch_size=micro,
            gradient_accumulation_steps=args.batch // micro,
            max_steps=args.steps,
            learning_rate=recipe.train.lr,
            warmup_steps=recipe.train.warmup_steps,
            lr_scheduler_type="cosine",
            logging_steps=1,
            save_strategy="no",
            report_to=[],
            seed=recipe.seed,
            bf16=precision == "bf16",
            fp16=precision == "fp16",
            use_cpu=not torch.cuda.is_available(),  # without it TrainingArguments refuses bf16 on a CPU
        )
        trainer = Trainer(
            model=model, args=targs, train_dataset=data, data_collator=default_data_collator, callbacks=[Clock()]
        )
        before = current_rss_mb()
        trainer.train()
    return {
        "precision": precision,
        "micro_batch": micro,
        "times": times,
        "losses": losses,
        "rss_before_train_mb": before,
        "flops_per_token": round(flops.total),
        "peak_tflops": peak.flops / 1e12 if peak else None,
        "mfu_against": peak.label if peak else None,
    }


def group_texts(token_lists: list[list[int]], block: int) -> list[dict[str, list[int]]]:
    """run_clm's group_texts: the documents' tokens concatenated and cut into blocks, labels = input_ids.

    The tail shorter than a block is dropped; documents are separated only by the special tokens
    the tokenizer itself adds (the demo model's puts `<|im_start|>` before each), as in run_clm.
    """
    ids = [t for ids in token_lists for t in ids]
    return [
        {"input_ids": ids[i : i + block], "labels": ids[i : i + block]}
        for i in range(0, (len(ids) // block) * block, block)
    ]


def _mfu(r: dict[str, Any]) -> str:
    """'MFU 23.1% against ...' (on a CPU: against its measured matmul peak), or why there is none."""
    if "mfu" not in r:
        return "MFU not reported (no peak known for this device)"
    return f"MFU {100 * r['mfu']:.1f}% {r['mfu_against']}"


def trainer_default_precision() -> str:
    """The precision a run_clm user picks for the device: bf16 on a GPU that has it, else fp32."""
    import torch

    return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "fp32"


def worker(args: argparse.Namespace) -> None:
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    result = (run_langadapt if args.worker == "langadapt" else run_trainer)(args)
    result["peak_rss_mb"] = rss_mb()
    if torch.cuda.is_available():
        result["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
    print("RESULT " + json.dumps(result), flush=True)


def measure(side: str, args: argparse.Namespace, precision: str = "auto", trainer_micro: int = 0) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--worker", side, "--precision", precision]
    for name in ("steps", "warmup", "seq_len", "batch", "micro_batch", "docs", "threads"):
        cmd += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
    cmd += ["--plain-loss"] if args.plain_loss else []
    cmd += [a for o in args.set for a in ("--set", o)]
    cmd += ["--trainer-micro", str(trainer_micro)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode or not lines:
        sys.exit(f"{side} run failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    result = json.loads(lines[-1][len("RESULT ") :])
    t = result["times"]
    tokens = (len(t) - args.warmup) * args.batch * args.seq_len
    result["tokens_per_s"] = tokens / (t[-1] - t[args.warmup - 1])
    if result.get("peak_tflops"):  # MFU at the same tokens/s: model FLOPs per token over the peak
        result["mfu"] = result["tokens_per_s"] * result["flops_per_token"] / (result["peak_tflops"] * 1e12)
    print(f"{side} ({result['precision']}): {json.dumps(result)}", flush=True)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--warmup", type=int, default=1, help="first steps left out of the timing")
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--micro-batch", type=int, default=0, help="langadapt train.micro_batch_size (0: its default)")
    ap.add_argument("--docs", type=int, default=200, help="Chichewa chapters to draw from")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument(
        "--langadapt-only", action="store_true", help="skip the Trainer run (e.g. to compare micro-batches)"
    )
    ap.add_argument(
        "--plain-loss",
        action="store_true",
        help="langadapt with the textbook loss (full logits) instead of the fused one",
    )
    ap.add_argument(
        "--matched-only",
        action="store_true",
        help="skip the Trainer run at run_clm's defaults (the comparison of defaults below the ratio)",
    )
    ap.add_argument(
        "--set", action="append", default=[], help="recipe override for langadapt's side, e.g. train.compile=true"
    )
    ap.add_argument("--trainer-micro", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--worker", choices=["langadapt", "trainer"], help=argparse.SUPPRESS)
    ap.add_argument("--precision", default="auto", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(args)

    from langadapt.config import ModelConfig
    from langadapt.models.loading import resolve_base

    resolve_base(ModelConfig())  # import the bundled GGUF once, outside the timed runs
    results = {"langadapt (defaults)": measure("langadapt", args)}
    ours = results["langadapt (defaults)"]
    if args.langadapt_only:
        print(
            f"langadapt {ours['precision']}: {ours['tokens_per_s']:.1f} tokens/s, {_mfu(ours)}, "
            f"peak RSS {ours['peak_rss_mb']:.0f} MB"
        )
        return
    precision, micro = ours["precision"], ours["micro_batch"]
    split = f"{args.batch // micro} x {micro}" if micro < args.batch else f"batch {args.batch} in one pass"
    matched = f"Trainer, {precision}, {split} (as langadapt)"
    results[matched] = measure("trainer", args, precision, trainer_micro=micro)
    defaults = "Trainer (run_clm defaults)"
    if not args.matched_only and (trainer_default_precision(), args.batch) != (precision, micro):
        results[defaults] = measure("trainer", args)
    tokens = args.steps * args.batch * args.seq_len
    print(
        f"{args.steps} steps x {args.batch} x {args.seq_len} tokens = {tokens} tokens per side; timing skips {args.warmup}"
    )
    print(
        f"{'run':44s} {'precision':9s} {'passes':>7s} {'tokens/s':>9s} {'MFU':>6s} {'peak RSS MB':>12s} "
        f"{'RSS at start MB':>16s}  loss first->last"
    )
    for name, r in results.items():
        passes = f"{args.batch // r['micro_batch']} x {r['micro_batch']}"
        mfu = f"{100 * r['mfu']:5.1f}%" if "mfu" in r else "     -"
        print(
            f"{name:44s} {r['precision']:9s} {passes:>7s} {r['tokens_per_s']:9.1f} {mfu:>6s} {r['peak_rss_mb']:12.0f} "
            f"{r['rss_before_train_mb']:16.0f}  {r['losses'][0]:.3f} -> {r['losses'][-1]:.3f}"
        )
    print(f"model FLOPs per token {ours['flops_per_token'] / 1e9:.3g} G (both sides); MFU of each run:")
    for name, r in results.items():
        print(f"  {name}: {_mfu(r)}")
    # like with like: the Trainer at the best configuration a user could set (same precision, same passes)
    print(f"ratio: {ours['tokens_per_s'] / results[matched]['tokens_per_s']:.2f}  ({precision}, {split}, both sides)")
    if defaults not in results and (trainer_default_precision(), args.batch) == (precision, micro):
        defaults = matched  # run_clm's defaults are the matched configuration here
    if defaults in results:
        r = results[defaults]
        print(
            f"defaults ratio: {ours['tokens_per_s'] / r['tokens_per_s']:.2f}  (langadapt {precision}, {split}; "
            f"run_clm's Trainer {r['precision']}, batch {args.batch} in one pass)"
        )
    else:
        print("defaults ratio: not measured (--matched-only)")


if __name__ == "__main__":
    main()
