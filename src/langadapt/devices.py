"""Where tensors live: `device: auto | cpu | cuda | cuda:N | mps`, shared by training and evaluation.

`device_problems` runs at validation, so a recipe that asks for a GPU the machine lacks
fails before any work; `resolve_device` turns the recipe's word into a torch device and
`describe_device` records what ran the stage (its summary keeps it, and a resumed run may
use another device: checkpoints are stored on the CPU). `resolve_dtype` decides what
`model.dtype: auto` holds the weights in on a device.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

DEVICES = ("auto", "cpu", "cuda", "mps")
DTYPES = ("auto", "float32", "bfloat16", "float16")


def _mps_available() -> bool:
    import torch

    return bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())


def device_problems(name: str, key: str) -> list[str]:
    """What is wrong with asking for device `name` on this machine (empty: nothing)."""
    import torch

    kind, _, index = name.partition(":")
    if kind not in DEVICES or (index and (kind != "cuda" or not index.isdigit())):
        return [f"{key}: '{name}' is not one of {', '.join(DEVICES)} (or cuda:N)"]
    if kind == "cuda":
        if not torch.cuda.is_available():
            return [f"{key}: cuda asked for, but torch sees no CUDA GPU here (use {key}: auto or cpu)"]
        if index and int(index) >= torch.cuda.device_count():
            return [f"{key}: {name} asked for, but this machine has {torch.cuda.device_count()} CUDA GPU(s)"]
    if kind == "mps" and not _mps_available():
        return [f"{key}: mps asked for, but this machine has no Apple GPU (use {key}: auto or cpu)"]
    return []


def resolve_device(name: str = "auto") -> "torch.device":
    """The torch device for a recipe's `device` word; auto picks CUDA, then Apple's MPS, then the CPU.

    Under `accelerate launch` / `torchrun` each process takes the GPU of its LOCAL_RANK and
    makes it the current one (`torch.cuda.set_device`): kernels, NCCL communicators and
    allocations that name no index then go to that GPU rather than all to GPU 0.
    """
    import os

    import torch

    from langadapt.errors import ConfigError

    problems = device_problems(name, "device")
    if problems:
        raise ConfigError(problems)
    if name == "auto":
        if torch.cuda.is_available():
            name = "cuda"
        elif _mps_available():
            name = "mps"
        else:
            name = "cpu"
    if name == "cuda" and "LOCAL_RANK" in os.environ:
        name = f"cuda:{int(os.environ['LOCAL_RANK']) % torch.cuda.device_count()}"
        torch.cuda.set_device(name)
    return torch.device(name)


def resolve_dtype(name: str, device: "torch.device", precision: str = "auto") -> str:
    """What `model.dtype` holds the (frozen) weights in on `device`: float32, bfloat16 or float16.

    `auto`, on a CUDA GPU: bfloat16 (float16 on a GPU without bf16), or what an explicit
    `train.precision` computes in (fp32: float32). Half the memory of float32, and under
    autocast the frozen weights are no longer cast again on every pass. On a CPU, auto keeps
    float32: the CPU demo's figures were measured with it, and a CPU without bf16 instructions
    computes bf16 several times slower. On an Apple GPU too (its bf16 training is not verified).
    Weights that train are float32 master copies whatever this says (`train/trainable.py`: `hold_master_weights`).
    """
    import torch

    if name != "auto":
        return name
    if device.type != "cuda":
        return "float32"
    explicit = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}
    if precision in explicit:
        return explicit[precision]
    return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"


def describe_device(device: "torch.device") -> dict[str, Any]:
    """What ran a stage, for its summary: the device and, for GPUs, the model and memory."""
    import torch

    info: dict[str, Any] = {"device": str(device)}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(name=props.name, memory_gb=round(props.total_memory / 2**30, 1))
    elif device.type == "cpu":
        info.update(threads=torch.get_num_threads(), cpu_capability=torch.backends.cpu.get_cpu_capability())
    return info


EVAL_PRECISIONS = ("auto", "fp32", "bf16")


def computes_bf16(device: "torch.device") -> bool:
    """Whether `device` has bf16 arithmetic units: CUDA GPUs from Ampere on, CPUs with AVX-512 BF16 or AMX."""
    import torch

    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    if device.type == "cpu":
        cpu = getattr(torch, "cpu", None)
        checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
        return any(bool(getattr(cpu, c, lambda: False)()) for c in checks)
    return False


def resolve_eval_precision(name: str, device: "torch.device") -> str:
    """fp32 or bf16 for scoring on `device` (`eval.precision`; auto: bf16 on a GPU that computes it natively).

    auto keeps fp32 on a CPU even where it has bf16 instructions: CPU figures stay comparable
    with those measured before, and a CPU evaluation is short next to training; ask for bf16
    by name to have it there.
    """
    if name == "auto":
        return "bf16" if device.type == "cuda" and computes_bf16(device) else "fp32"
    return name


def eval_precision_problems(name: str, device_name: str, key: str) -> list[str]:
    """What is wrong with scoring in precision `name` on the device a recipe names (empty: nothing)."""
    if name not in EVAL_PRECISIONS:
        return [f"{key}: '{name}' is not one of {', '.join(EVAL_PRECISIONS)}"]
    if name == "bf16" and not device_problems(device_name, key) and not computes_bf16(resolve_device(device_name)):
        return [f"{key}: bf16 asked for, but {device_name} does not compute in bf16 natively; use auto or fp32"]
    return []


def autocast(device: "torch.device", precision: str) -> Any:
    """The context a forward pass runs in for `precision` (fp32: none; bf16: torch.autocast to bfloat16)."""
    import contextlib

    import torch

    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)
