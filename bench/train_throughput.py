"""Training throughput: langadapt's loop against a plain transformers `Trainer`, same model, data, tokens.

    python bench/train_throughput.py                 # demo model, 8 steps each, prints `ratio: R`
    python bench/train_throughput.py --steps 4 --micro-batch 2

Both sides train the demo's base model (builtin:smollm2-135m, +2000 new token rows as the
demo's extended tokenizer adds) with the demo recipe's LoRA configuration (the `lora` train
method: LoRA on every projection, trainable new-token rows) on the same Chichewa text, for
the same number of optimizer steps of batch x seq_len tokens.

The baseline is what a user writes from transformers' run_clm example: tokenise, concatenate,
cut into blocks (`group_texts`), labels = inputs, `default_data_collator`, `Trainer` with its
defaults for the device (fp32 on CPU, bf16 on a GPU that has it), same batch, learning rate
and schedule. langadapt runs its own loop (`train.loop.train_loop`) with the demo recipe's
training section and its defaults (precision auto, fused chunked loss, document attention).

Each side runs in its own process (peak resident memory is that process's). Tokens/s count
real tokens (neither side pads) over the steps after the first `--warmup` ones. The last
line is `ratio: R` = langadapt tokens/s over Trainer tokens/s at each side's default.
When the two defaults differ in precision (langadapt's auto is bf16 on a CPU with AMX or
AVX-512 BF16, where the Trainer's CPU default is fp32), each side also runs in the other's
precision, and the same-precision ratios are printed for both.

When langadapt's default splits the step into micro-batches (on a CPU: passes of about 512
tokens in fp32, 1,024 in bf16), a further Trainer run uses the same split as gradient accumulation
(`per_device_train_batch_size` x `gradient_accumulation_steps`): not the baseline, since
run_clm does not accumulate by default, but it shows what that choice alone is worth.
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

    from langadapt.config import SourceConfig
    from langadapt.models.loading import load_model, load_tokenizer, resolve_base
    from langadapt.sources.reading import read_source
    from langadapt.train.methods import TRAIN_METHODS

    torch.manual_seed(0)
    path = resolve_base(recipe.model)
    tok = load_tokenizer(path)
    model = load_model(path, recipe.model.dtype)
    n = model.get_input_embeddings().weight.shape[0]
    model.resize_token_embeddings(n + NEW_TOKENS, mean_resizing=False)
    with torch.no_grad():
        emb = model.get_input_embeddings().weight
        emb[n:] = emb[:n].mean(0)
    model = TRAIN_METHODS.get("lora")(model, recipe.train, list(range(n, n + NEW_TOKENS)))
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
    }


def run_trainer(args: argparse.Namespace) -> dict[str, Any]:
    """transformers' run_clm recipe, as a user writes it, on the same model and text."""
    import torch
    from transformers import Trainer, TrainerCallback, TrainingArguments, default_data_collator

    recipe = demo_recipe(args, "fp32")  # the model and data only: the Trainer keeps its own precision
    model, tok, texts = model_and_data(recipe, args.docs)
    # run_clm: tokenize_function, then group_texts into block_size chunks, labels = input_ids
    ids = [t for ids in tok(texts)["input_ids"] for t in ids]
    block = args.seq_len
    data = [
        {"input_ids": ids[i : i + block], "labels": ids[i : i + block]}
        for i in range(0, (len(ids) // block) * block, block)
    ]
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

    on_gpu = torch.cuda.is_available()
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
            # the device's default a user would pick, unless asked for bf16 (the same-precision comparison)
            bf16=args.precision == "bf16" or (on_gpu and torch.cuda.is_bf16_supported()),
            use_cpu=not on_gpu,  # without it TrainingArguments refuses bf16 on a CPU
        )
        trainer = Trainer(
            model=model, args=targs, train_dataset=data, data_collator=default_data_collator, callbacks=[Clock()]
        )
        before = current_rss_mb()
        trainer.train()
    return {
        "precision": "bf16" if targs.bf16 else "fp32",
        "times": times,
        "losses": losses,
        "rss_before_train_mb": before,
    }


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
        "--no-accumulation-baseline",
        action="store_true",
        help="skip the extra Trainer run that uses langadapt's micro-batches as gradient accumulation",
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
    results = {} if args.langadapt_only else {"trainer": measure("trainer", args)}
    results["langadapt"] = measure("langadapt", args)
    if args.langadapt_only:
        r = results["langadapt"]
        print(f"langadapt {r['precision']}: {r['tokens_per_s']:.1f} tokens/s, peak RSS {r['peak_rss_mb']:.0f} MB")
        return
    if results["langadapt"]["precision"] != results["trainer"]["precision"]:
        # both sides in each precision: langadapt at the Trainer's default, the Trainer at langadapt's
        results["langadapt, same precision as Trainer"] = measure("langadapt", args, results["trainer"]["precision"])
        results["trainer, same precision as langadapt"] = measure("trainer", args, results["langadapt"]["precision"])
    micro = results["langadapt"]["micro_batch"]
    if micro < args.batch and not args.no_accumulation_baseline:
        # not the baseline (run_clm does not accumulate), but what a Trainer user could set by hand
        results[f"trainer, accumulating {args.batch // micro} x {micro}"] = measure(
            "trainer", args, trainer_micro=micro
        )
    tokens = args.steps * args.batch * args.seq_len
    print(
        f"{args.steps} steps x {args.batch} x {args.seq_len} tokens = {tokens} tokens per side; timing skips {args.warmup}"
    )
    print(
        f"{'run':38s} {'precision':9s} {'tokens/s':>9s} {'peak RSS MB':>12s} {'RSS at start MB':>16s}  loss first->last"
    )
    for name, r in results.items():
        print(
            f"{name:38s} {r['precision']:9s} {r['tokens_per_s']:9.1f} {r['peak_rss_mb']:12.0f} "
            f"{r['rss_before_train_mb']:16.0f}  {r['losses'][0]:.3f} -> {r['losses'][-1]:.3f}"
        )
    if "langadapt, same precision as Trainer" in results:
        same = results["langadapt, same precision as Trainer"]["tokens_per_s"] / results["trainer"]["tokens_per_s"]
        print(f"same-precision ratio ({results['trainer']['precision']}): {same:.2f}")
        same = results["langadapt"]["tokens_per_s"] / results["trainer, same precision as langadapt"]["tokens_per_s"]
        print(f"same-precision ratio ({results['langadapt']['precision']}): {same:.2f}")
    print(f"ratio: {results['langadapt']['tokens_per_s'] / results['trainer']['tokens_per_s']:.2f}")


if __name__ == "__main__":
    main()
