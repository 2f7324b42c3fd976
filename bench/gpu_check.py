"""One GPU, one table: langadapt's training and evaluation through its own entry points.

    bash bench/gpu_check.sh                         # a fresh venv from the package registries, then this
    python bench/gpu_check.py                       # the table, on the CUDA GPU
    python bench/gpu_check.py --dry-run             # the same code at toy sizes on the CPU (--device cpu --tiny)

Rows, each in its own process (a failure or an out-of-memory stays in its row, and peak
memory is that row's):

- decoder training in bf16, LoRA and full (and QLoRA when bitsandbytes imports), for the
  bundled SmolLM2-135M (`builtin:smollm2-135m`, as the demo recipe names it) and for a
  Llama-architecture model of about 1B parameters built here from a config with random
  weights and the bundled tokenizer: tokens/s, MFU and peak GPU memory
  (`torch.cuda.max_memory_allocated` over the train stage);
- the encoder recipe (demo-nya-e5, both phases shortened): training and evaluation times;
- the export check of bench/demo.py on the SmolLM2 LoRA run: the exported folder, loaded
  alone in a fresh process, gives the held-out bits per byte the eval stage measured and
  generates no chat-template token at a document's end (the eval stage runs on the CPU
  here, so both sides compute in float32 on the same device).

Every row runs the demo recipe through the Python API (`langadapt.pipeline.run`, the stages
the CLI runs) with `--set`-style overrides: corpus, tokenizer and init once per base model,
then the train stage again for each method. Tokens/s and MFU come from the run's own
`train/metrics.jsonl` (the loop's per-step accounting, `train/flops.py`), over the steps
after the first three (one at toy sizes: CUDA kernels and the allocator warm up there); each
step's time is its optimizer step's. Peak memory is `torch.cuda.max_memory_allocated` from
the start of the train stage (the encoder row: of all its stages); at toy sizes on a CPU,
the worker process's peak resident memory. The script exits 1 when any row fails and names
the failed rows; a row that cannot run here (QLoRA without bitsandbytes or a GPU) is
skipped with the reason.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import resource
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from langadapt.train.flops import CPU_LABEL  # how a CPU's MFU is labelled

HERE = Path(__file__).resolve().parent
SMOLLM2 = "smollm2-135m"
LLAMA = "llama-1b"

# about 1B: Llama-3.2-1B's shape with the bundled tokenizer's 49k vocabulary (1.07B parameters)
LLAMA_1B = dict(
    hidden_size=2048,
    intermediate_size=8192,
    num_hidden_layers=16,
    num_attention_heads=32,
    num_key_value_heads=8,
    max_position_embeddings=2048,
    rope_theta=500000.0,
    tie_word_embeddings=True,
)
LLAMA_TINY = dict(  # --tiny: the same code path at toy size
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=512,
    tie_word_embeddings=True,
)


@dataclass(frozen=True)
class Sizes:
    steps: int
    warmup: int
    seq_len: int
    batch: dict[str, int]
    encoder_steps: tuple[int, int]  # head-warmup, lora
    eval_chars: int  # eval.max_chars of the export row
    encoder_eval_chars: int
    timeout_s: int  # per row


GPU = Sizes(
    steps=12,
    warmup=3,
    seq_len=1024,
    batch={SMOLLM2: 16, LLAMA: 8},
    encoder_steps=(10, 20),
    eval_chars=4000,
    encoder_eval_chars=1500,
    timeout_s=300,
)
TINY = Sizes(
    steps=3,
    warmup=1,
    seq_len=64,
    batch={SMOLLM2: 2, LLAMA: 2},
    encoder_steps=(2, 2),
    eval_chars=600,
    encoder_eval_chars=200,
    timeout_s=1800,  # a CPU shared with other work is slow: the corpus and tokenizer stages run in full
)


@dataclass
class Row:
    name: str
    worker: list[str]  # arguments of the worker process
    status: str = "not run"  # ok, FAIL, skipped
    tokens_per_s: float | None = None
    mfu: float | None = None
    peak_gib: float | None = None
    seconds: str = ""
    note: str = ""
    result: dict[str, Any] = field(default_factory=dict)


# -- workers: each runs in its own process and prints one RESULT line ------------------------


def _recipe(name: str, sets: list[str]) -> Any:
    from langadapt.recipe import Recipe, find_recipe

    return Recipe.from_yaml(find_recipe(name), sets)


def _decoder_sets(args: argparse.Namespace, base: str, method: str) -> list[str]:
    sizes = TINY if args.tiny else GPU
    sets = [
        f"run_dir={args.work / base}",
        f"train.method={method}",
        f"train.max_steps={sizes.steps}",
        f"train.warmup_steps={min(2, sizes.steps)}",
        "train.save_every=0",
        f"train.seq_len={sizes.seq_len}",
        f"train.batch_size={sizes.batch[base]}",
        f"train.device={args.device}",
        # bf16 on the GPU; on a CPU what it computes natively (bf16 with AVX-512 BF16 or AMX, else fp32)
        f"train.precision={'bf16' if args.device == 'cuda' else 'auto'}",
    ]
    if base == LLAMA:
        sets.append(f"model.base={args.work / 'llama-1b-model'}")
    if args.tiny:  # a smaller target BPE and fewer new rows: the same stages, a fraction of the CPU time
        sets += ["tokenizer.new_tokens=200", "tokenizer.target_vocab_size=1000"]
    return sets


def _peak_memory_gib() -> tuple[float, str]:
    import torch

    if torch.cuda.is_available() and torch.cuda.is_initialized():
        return torch.cuda.max_memory_allocated() / 2**30, "GPU"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, "RSS"


def _reset_peak_memory() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()


def _timed(rows: list[dict[str, Any]], tokens_per_step: int) -> dict[str, Any]:
    seconds = [tokens_per_step / r["tokens_per_s"] for r in rows]
    total = sum(seconds)
    out: dict[str, Any] = {"tokens_per_s": tokens_per_step * len(rows) / total}
    if all("mfu" in r for r in rows):
        out["mfu"] = sum(r["mfu"] * s for r, s in zip(rows, seconds)) / total
        out["mfu_against"] = rows[-1]["mfu_against"]
    return out


def work_make_llama(args: argparse.Namespace) -> dict[str, Any]:
    """The ~1B Llama from its config with random weights, saved with the bundled tokenizer."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from langadapt.config import ModelConfig
    from langadapt.models.loading import load_tokenizer, resolve_base

    folder = args.work / "llama-1b-model"
    tok = load_tokenizer(resolve_base(ModelConfig(base=f"builtin:{SMOLLM2}")))
    shape = LLAMA_TINY if args.tiny else LLAMA_1B
    config = LlamaConfig(vocab_size=len(tok), bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, **shape)
    torch.manual_seed(0)
    with torch.device(args.device):  # a GPU draws 1B random weights in a moment
        model = LlamaForCausalLM(config)
    model.to(torch.bfloat16).save_pretrained(folder)  # bf16 on disk: half the bytes; loading casts as asked
    tok.save_pretrained(folder)
    return {"parameters": sum(p.numel() for p in model.parameters()), "folder": str(folder)}


def work_train(args: argparse.Namespace) -> dict[str, Any]:
    """One base model and method: corpus, tokenizer and init once (skipped when done), then the train stage."""
    from langadapt.pipeline import run
    from langadapt.rundir import read_json

    sizes = TINY if args.tiny else GPU
    recipe = _recipe("demo-nya-smollm2", _decoder_sets(args, args.base, args.method))
    t0 = time.time()
    run(recipe, stages=("corpus", "tokenizer", "init"))
    prepared = time.time() - t0
    _reset_peak_memory()
    t0 = time.time()
    run(recipe, stages=("train",), force=True)
    seconds = time.time() - t0
    out = recipe.resolved_run_dir / "train"
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    summary = read_json(out / "summary.json")
    peak, kind = _peak_memory_gib()
    return {
        **_timed(rows[sizes.warmup :] or rows, sizes.batch[args.base] * sizes.seq_len),
        "timed_steps": len(rows[sizes.warmup :] or rows),
        "steps": len(rows),
        "peak_gib": peak,
        "peak_kind": kind,
        "train_s": seconds,
        "prepare_s": prepared,
        "precision": summary.get("precision"),
        "device_name": summary.get("name", summary.get("device")),
        "parameters": summary.get("total_parameters"),
        "trainable": summary.get("trainable_parameters"),
        "flops_per_token": summary.get("model_flops_per_token"),
        "attention": summary.get("attn_implementation"),
        "micro_batch": summary.get("micro_batch"),
    }


def work_export(args: argparse.Namespace) -> dict[str, Any]:
    """The SmolLM2 LoRA run (trained by its row, else here) evaluated on the CPU, exported and checked."""
    sys.path.insert(0, str(HERE))
    import demo  # the demo bench's check, as `bench/demo.py --export-check` runs it

    if args.tiny:  # toy size: 4 held-out documents continued by 8 tokens instead of 16 by 24
        demo.generation_check = functools.partial(demo.generation_check, n_docs=4, n_new=8)

    from langadapt.pipeline import run
    from langadapt.rundir import read_json

    sizes = TINY if args.tiny else GPU
    sets = _decoder_sets(args, SMOLLM2, "lora") + [
        "eval.device=cpu",
        "eval.tasks=[]",
        f"eval.max_chars={sizes.eval_chars}",
    ]
    recipe = _recipe("demo-nya-smollm2", sets)
    result = run(recipe, stages=("corpus", "tokenizer", "init", "train", "eval"))
    eval_s = read_json(recipe.resolved_run_dir / "manifest.json")["stages"]["eval"]["seconds"]
    t0 = time.time()
    same = demo.export_check(recipe.resolved_run_dir, result.results)
    return {"ok": bool(same), "eval_s": eval_s, "check_s": time.time() - t0}


def work_encoder(args: argparse.Namespace) -> dict[str, Any]:
    """The encoder recipe with both phases shortened: every stage, timed from the run's manifest."""
    from langadapt.pipeline import run
    from langadapt.rundir import read_json

    sizes = TINY if args.tiny else GPU
    head, lora = sizes.encoder_steps
    phases = (
        f"[{{name: head-warmup, method: head, max_steps: {head}, lr: 2.0e-3}}, "
        f"{{name: lora, method: lora, max_steps: {lora}, lr: 3.0e-3, embeddings: all}}]"
    )
    sets = [
        f"run_dir={args.work / 'e5'}",
        f"train.phases={phases}",
        "train.save_every=0",
        "train.warmup_steps=1",
        f"train.device={args.device}",
        f"train.precision={'bf16' if args.device == 'cuda' else 'auto'}",
        f"eval.device={args.device}",
        f"eval.max_chars={sizes.encoder_eval_chars}",
    ]
    recipe = _recipe("demo-nya-e5", sets)
    _reset_peak_memory()
    run(recipe)
    manifest = read_json(recipe.resolved_run_dir / "manifest.json")["stages"]
    summary = read_json(recipe.resolved_run_dir / "train" / "summary.json")
    tokens = sum(p.get("tokens_this_session", 0) for p in summary.get("phases", [summary]))
    peak, kind = _peak_memory_gib()
    out = {
        "train_s": manifest["train"]["seconds"],
        "eval_s": manifest["eval"]["seconds"],
        "peak_gib": peak,
        "peak_kind": kind,
        "steps": summary.get("steps"),
    }
    if summary.get("train_step_seconds"):
        out["tokens_per_s"] = tokens / summary["train_step_seconds"]
    if "mfu" in summary:
        out.update(mfu=summary["mfu"], mfu_against=summary["mfu_against"])
    return out


WORKERS = {"make-llama": work_make_llama, "train": work_train, "export": work_export, "encoder": work_encoder}


def worker(args: argparse.Namespace) -> None:
    result = WORKERS[args.worker](args)
    print("RESULT " + json.dumps(result), flush=True)


# -- the driver --------------------------------------------------------------------------------


def environment(args: argparse.Namespace) -> list[str]:
    import importlib.metadata as md
    import importlib.util

    import torch

    lines = [f"torch {torch.__version__} (CUDA {torch.version.cuda or 'none'})"]
    if args.device == "cuda":
        props = torch.cuda.get_device_properties(0)
        lines.append(f"device: {props.name}, {props.total_memory / 2**30:.0f} GiB")
    else:
        lines.append(f"device: CPU, {os.cpu_count()} cores ({torch.backends.cpu.get_cpu_capability()})")
    for package, module in (("bitsandbytes", "bitsandbytes"), ("flash-attn", "flash_attn")):
        try:
            version = md.version(package) if importlib.util.find_spec(module) else None
        except md.PackageNotFoundError:
            version = None
        lines.append(f"{package}: {version or 'not installed'}")
    return lines


def bitsandbytes_works() -> str:
    """'' when QLoRA can run here, else why not."""
    import torch

    if not torch.cuda.is_available():
        return "needs a CUDA GPU"
    probe = subprocess.run([sys.executable, "-c", "import bitsandbytes"], capture_output=True, text=True)
    return "" if probe.returncode == 0 else "bitsandbytes does not import: " + _last_line(probe.stderr)


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    errors = [line for line in lines if "Error" in line or "error:" in line]
    return (errors or lines or ["no output"])[-1][:160]


def run_row(row: Row, args: argparse.Namespace, timeout: int) -> None:
    """The row's worker in its own process (and process group), its output streamed to the row's log."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--work", str(args.work), "--device", args.device]
    cmd += (["--tiny"] if args.tiny else []) + ["--worker", *row.worker]
    log_file = args.work / "logs" / f"{row.name.replace(' ', '-')}.log"
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    t0 = time.time()
    with open(log_file, "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        try:
            code: int | None = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # the worker and whatever it started (corpus workers)
            proc.wait()
            code = None
    output = log_file.read_text(errors="replace")
    results = [line for line in output.splitlines() if line.startswith("RESULT ")]
    if code is None:
        row.status, row.note = "FAIL", f"timed out after {timeout} s"
    elif code or not results:
        row.status, row.note = "FAIL", _last_line(output)
    else:
        row.status, row.result = "ok", json.loads(results[-1][len("RESULT ") :])
    row.result.setdefault("wall_s", time.time() - t0)


def _count(n: float) -> str:
    return f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.1f}M" if n >= 1e5 else f"{n / 1e3:.1f}k"


def describe(row: Row, sizes: Sizes) -> None:
    r = row.result
    row.tokens_per_s, row.mfu, row.peak_gib = r.get("tokens_per_s"), r.get("mfu"), r.get("peak_gib")
    if row.status != "ok":
        return
    kind = row.worker[0]
    if kind == "train":
        base = row.worker[row.worker.index("--base") + 1]
        row.seconds = f"train {r['train_s']:.0f}"
        params = f"{_count(r['parameters'])} params, {_count(r['trainable'])} trained" if r.get("parameters") else ""
        batch = f"{sizes.batch[base]} x {sizes.seq_len} tokens/step, micro-batch {r.get('micro_batch')}"
        timed = f"steps {r['steps'] - r['timed_steps'] + 1}-{r['steps']} timed"
        row.note = ", ".join(x for x in (params, batch, timed, r.get("precision") or "") if x)
        if r.get("attention"):
            row.note += f", attention {r['attention']}"
        if "mfu" not in r:
            row.note += "; MFU not reported: no peak known for this GPU (train.peak_tflops)"
    elif kind == "encoder":
        row.seconds = f"train {r['train_s']:.0f} + eval {r['eval_s']:.0f}"
        row.note = f"{r.get('steps')} steps in two phases (head, then LoRA + embeddings), pseudo bits/byte eval"
    elif kind == "export":
        row.status = "ok" if r.get("ok") else "FAIL"
        row.seconds = f"eval {r['eval_s']:.0f} + check {r['check_s']:.0f}"
        row.note = "exported model scores as the eval stage, no chat token at a document's end"
        if not r.get("ok"):
            row.note = "the exported model differs from the eval stage or generated a chat token (see its log)"
    elif kind == "make-llama":
        row.seconds = f"{r['wall_s']:.0f}"
        row.note = f"{_count(r['parameters'])} parameters, random weights, the bundled tokenizer"


def print_table(rows: list[Row], args: argparse.Namespace, header: list[str]) -> None:
    mem = "peak GPU GiB" if args.device == "cuda" else "peak RSS GiB"
    print()
    for line in header:
        print(f"# {line}")
    print(f"{'row':30s} {'status':7s} {'tokens/s':>10s} {'MFU':>6s} {mem:>12s} {'seconds':>18s}  note")
    for row in rows:
        tps = f"{row.tokens_per_s:,.0f}" if row.tokens_per_s else "-"
        mfu = f"{100 * row.mfu:.1f}%" if row.mfu is not None else "-"
        peak = f"{row.peak_gib:.2f}" if row.peak_gib is not None else "-"
        print(f"{row.name:30s} {row.status:7s} {tps:>10s} {mfu:>6s} {peak:>12s} {row.seconds:>18s}  {row.note}")
    against = sorted({r.result["mfu_against"] for r in rows if r.result.get("mfu_against")})
    measured = [a for a in against if a.startswith(CPU_LABEL)]
    if len(measured) > 1:  # each row's process measured its CPU's peak: the range, once
        peaks = [float(a.split("(")[1].split(" TFLOP/s")[0]) for a in measured]
        detail = measured[0].split("TFLOP/s, ")[1].rstrip(")")
        print(f"# MFU {CPU_LABEL}, measured in each row's process: {min(peaks)}-{max(peaks)} TFLOP/s ({detail})")
        against = [a for a in against if a not in measured]
    for label in against:
        print(f"# MFU {label}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=Path("runs/gpu-check"), help="folder for the runs and logs")
    ap.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    ap.add_argument("--tiny", action="store_true", help="toy sizes (a tiny Llama, a few short steps)")
    ap.add_argument("--dry-run", action="store_true", help="--device cpu --tiny: the same code on the CPU")
    ap.add_argument("--only", action="append", default=[], help="run only rows whose name contains this")
    ap.add_argument(
        "--timeout", type=int, default=0, help="seconds a row may take before it fails (0: 300 on a GPU, 1800 --tiny)"
    )
    ap.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    ap.add_argument("--base", choices=[SMOLLM2, LLAMA], help=argparse.SUPPRESS)
    ap.add_argument("--method", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        args.work = args.work.resolve()
        return worker(args)
    if args.dry_run:
        args.device, args.tiny = "cpu", True
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("gpu_check: no CUDA GPU visible to torch (for the CPU rehearsal: --dry-run)")
    args.work = args.work.resolve()
    (args.work / "logs").mkdir(parents=True, exist_ok=True)
    sizes = TINY if args.tiny else GPU
    qlora = bitsandbytes_works()
    llama = "llama-1b (random)" if not args.tiny else "llama-tiny (random)"
    rows = [
        Row(f"{llama} build", ["make-llama"]),
        Row(f"{SMOLLM2} lora", ["train", "--base", SMOLLM2, "--method", "lora"]),
        Row("export check", ["export"]),
        Row(f"{SMOLLM2} full", ["train", "--base", SMOLLM2, "--method", "full"]),
        Row(f"{SMOLLM2} qlora", ["train", "--base", SMOLLM2, "--method", "qlora"]),
        Row(f"{llama} lora", ["train", "--base", LLAMA, "--method", "lora"]),
        Row(f"{llama} full", ["train", "--base", LLAMA, "--method", "full"]),
        Row(f"{llama} qlora", ["train", "--base", LLAMA, "--method", "qlora"]),
        Row("encoder demo-nya-e5", ["encoder"]),
    ]
    if args.only:
        rows = [r for r in rows if any(o in r.name for o in args.only)]
    header = environment(args)
    t0 = time.time()
    for row in rows:
        if "qlora" in row.name and qlora:
            row.status, row.note = "skipped", f"QLoRA {qlora}"
            continue
        if row.worker[-1:] != ["make-llama"] and LLAMA in row.worker and not (args.work / "llama-1b-model").is_dir():
            row.status, row.note = "FAIL", "the model build failed (see its row)"
            continue
        print(f"[{time.time() - t0:5.0f} s] {row.name} ...", flush=True)
        run_row(row, args, args.timeout or sizes.timeout_s)
        describe(row, sizes)
        print(f"[{time.time() - t0:5.0f} s] {row.name}: {row.status} {row.note}", flush=True)
    total = time.time() - t0
    header.append(
        f"{'GPU' if args.device == 'cuda' else 'CPU'} rows in {total / 60:.1f} min{' (toy sizes)' if args.tiny else ''}"
    )
    print_table(rows, args, header)
    failed = [r.name for r in rows if r.status == "FAIL"]
    if failed:
        print(f"FAILED: {', '.join(failed)} (logs in {args.work / 'logs'})")
        sys.exit(1)
    print(
        "all rows ok"
        + (
            f"; skipped: {', '.join(r.name for r in rows if r.status == 'skipped')}"
            if any(r.status == "skipped" for r in rows)
            else ""
        )
    )


if __name__ == "__main__":
    main()
