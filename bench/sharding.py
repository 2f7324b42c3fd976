"""Memory and speed of each multi-process strategy: DDP, FSDP2 (full) and DeepSpeed ZeRO 1-3.

    python bench/sharding.py                              # 2 processes, full fine-tuning of the demo model
    python bench/sharding.py --strategies none,zero3 --steps 6 --method lora

Every strategy trains the demo's base model (builtin:smollm2-135m) with the same recipe
section (method `full` by default, where the training state is largest: fp32 weights,
gradients and two AdamW moments for every weight), the same global batch and the same
steps, launched by torchrun on this machine. The baseline is DDP (`none`): every process
holds the whole training state. Per strategy it prints the loss of the last step (the
strategies must agree), real tokens/s over the steps after the first `--warmup`, and the
resident memory of the process that uses most:

- during the steps (sampled every 10 ms from the end of the engine's set-up: weights,
  gradients, optimizer state and activations), and how much that is above the loaded model;
- between steps (read after each optimizer step, the highest: the training state without
  activations);
- including loading and the engine's set-up (DeepSpeed flattens and copies the weights as
  it starts);
- including the final checkpoint, for which rank 0 gathers full fp32 weights and optimizer
  state in CPU memory whatever the strategy.

On a GPU it also prints peak allocated GPU memory. The last lines give each strategy's
figures as ratios of DDP's. On a CPU the processes share the cores, so tokens/s mostly show
the cost of the collectives; memory is what sharding is for.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from train_throughput import current_rss_mb, demo_recipe, rss_mb  # noqa: E402


class Sampler:
    """The highest resident memory of this process between start() and stop(), read every 10 ms."""

    def __init__(self) -> None:
        import threading

        self.peak, self._done = 0.0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._done.wait(0.01):
            self.peak = max(self.peak, current_rss_mb())

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._done.set()
        self._thread.join()


def worker(args: argparse.Namespace) -> None:
    import torch

    import langadapt.train.methods  # noqa: F401  (registers the train methods apply_method names)
    from langadapt.config import SourceConfig
    from langadapt.models.loading import doc_separator_id, load_model, load_tokenizer, resolve_base
    from langadapt.sources.reading import read_source
    from langadapt.train import loop
    from langadapt.train.data import TokenStream
    from langadapt.train.precision import weights_dtype
    from langadapt.train.trainable import apply_method

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    args.set = [*args.set, f"train.method={args.method}"]
    recipe = demo_recipe(args, args.precision)
    path = resolve_base(recipe.model)
    tok = load_tokenizer(path)
    model = apply_method(args.method, load_model(path, weights_dtype(recipe)), recipe.train, [])
    docs, _ = read_source(SourceConfig(path="builtin:bible-nya", language="nya"))
    texts = [d.text for _, d in zip(range(args.docs), docs)]
    streams = {"nya": TokenStream(texts, tok, doc_separator_id(tok), args.seq_len, recipe.seed)}
    before, at_checkpoint, after_steps, sampler = current_rss_mb(), [], [], Sampler()
    real_setup, real_save = loop.setup, loop.save_checkpoint

    def setup(*a: Any, **k: Any) -> Any:  # the steps start once the engine is set up
        procs, module, opt = real_setup(*a, **k)
        real_step = procs.step

        def step(*sa: Any, **sk: Any) -> None:  # between steps: no activations held
            real_step(*sa, **sk)
            after_steps.append(current_rss_mb())

        procs.step = step
        sampler.start()
        return procs, module, opt

    def save(*a: Any, **k: Any) -> None:  # the final checkpoint gathers full tensors: measured apart
        sampler.stop()
        at_checkpoint.append(rss_mb())
        real_save(*a, **k)

    loop.setup, loop.save_checkpoint = setup, save
    summary = loop.train_loop(model, streams, "nya", None, recipe, Path(args.out))
    result = {
        "rank": int(os.environ.get("RANK", "0")),
        "sharding": summary["sharding"],
        "precision": summary["precision"],
        "rss_before_train_mb": round(before),
        "steps_peak_rss_mb": round(sampler.peak),
        "between_steps_rss_mb": round(max(after_steps)),
        "peak_train_rss_mb": round(at_checkpoint[0]),
        "peak_rss_mb": round(rss_mb()),
    }
    if torch.cuda.is_available():
        result["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated() / 2**20)
    Path(args.out, f"result-rank{result['rank']}.json").write_text(json.dumps(result))


def measure(strategy: str, args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as out:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={args.processes}"]
        cmd += [__file__, "--worker", "--out", out, "--set", f"train.sharding={strategy}", *_passed(args)]
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
        if args.ds_config and strategy.startswith("zero"):  # as `accelerate launch --deepspeed_config_file` sets it
            env.update(
                ACCELERATE_USE_DEEPSPEED="true", ACCELERATE_DEEPSPEED_CONFIG_FILE=str(Path(args.ds_config).resolve())
            )
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if proc.returncode:
            ranks = [line for line in proc.stderr.splitlines() if line.startswith("[rank")]
            sys.exit(f"{strategy} failed:\n" + "\n".join(ranks[-40:] or proc.stderr.splitlines()[-40:]))
        ranks = [json.loads(f.read_text()) for f in sorted(Path(out).glob("result-rank*.json"))]
        rows = [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]
    timed = rows[args.warmup :]
    seconds = timed[-1]["elapsed_s"] - rows[args.warmup - 1]["elapsed_s"] if args.warmup else timed[-1]["elapsed_s"]
    tokens = len(timed) * args.batch * args.seq_len
    growth = max(r["steps_peak_rss_mb"] - r["rss_before_train_mb"] for r in ranks)
    return {
        "strategy": strategy,
        "ran_as": ranks[0]["sharding"],
        "precision": ranks[0]["precision"],
        "last_loss": rows[-1]["loss"],
        "tokens_per_s": round(tokens / seconds, 1),
        "steps_peak_rss_mb": max(r["steps_peak_rss_mb"] for r in ranks),
        "between_steps_rss_mb": max(r["between_steps_rss_mb"] for r in ranks),
        "peak_train_rss_mb": max(r["peak_train_rss_mb"] for r in ranks),  # with loading and engine set-up
        "peak_rss_mb": max(r["peak_rss_mb"] for r in ranks),  # with the final checkpoint
        "train_growth_mb": growth,
        **({"peak_gpu_mb": max(r["peak_gpu_mb"] for r in ranks)} if "peak_gpu_mb" in ranks[0] else {}),
    }


def _passed(args: argparse.Namespace) -> list[str]:
    out = []
    for name in ("steps", "seq_len", "batch", "micro_batch", "docs", "threads", "precision", "method"):
        out += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
    for s in args.set:
        out += ["--set", s]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--strategies", default="none,full,zero1,zero2,zero3", help="train.sharding values, none first")
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--method", default="full", help="train method (full: the largest training state)")
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--warmup", type=int, default=2, help="steps left out of tokens/s")
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--batch", type=int, default=4, help="sequences per step, over all processes")
    ap.add_argument("--micro-batch", type=int, default=1)
    ap.add_argument("--docs", type=int, default=400)
    ap.add_argument("--threads", type=int, default=1, help="torch threads per process")
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--set", action="append", default=[], help="extra recipe override, KEY=VALUE")
    ap.add_argument(
        "--ds-config", default="", help="a DeepSpeed JSON file for the zero strategies, handed over as accelerate does"
    )
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--out", default="", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args)
        return
    results = []
    for strategy in args.strategies.split(","):
        r = measure(strategy, args)
        results.append(r)
        print(json.dumps(r), flush=True)
    base = results[0]
    print(f"baseline: {base['strategy']} ({base['ran_as']}), {args.processes} processes, method {args.method}")
    for r in results[1:]:
        ratio = r["train_growth_mb"] / base["train_growth_mb"]
        gpu = f", peak GPU ratio {r['peak_gpu_mb'] / base['peak_gpu_mb']:.2f}" if "peak_gpu_mb" in r else ""
        print(
            f"{r['strategy']}: peak RSS during the steps {r['steps_peak_rss_mb'] / base['steps_peak_rss_mb']:.2f} "
            f"(growth over the loaded model {ratio:.2f}), between steps "
            f"{r['between_steps_rss_mb'] / base['between_steps_rss_mb']:.2f}, with engine set-up "
            f"{r['peak_train_rss_mb'] / base['peak_train_rss_mb']:.2f}, with the final checkpoint "
            f"{r['peak_rss_mb'] / base['peak_rss_mb']:.2f}, tokens/s ratio "
            f"{r['tokens_per_s'] / base['tokens_per_s']:.2f}{gpu}"
        )


if __name__ == "__main__":
    main()
