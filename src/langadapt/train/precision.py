"""Mixed precision: `train.precision: auto | fp32 | bf16 | fp16`.

Weights that train stay in float32 (the optimizer updates full-precision master weights);
matrix products run in the low-precision type under `torch.autocast`. `auto` takes bf16
where the device computes it natively (CUDA GPUs from Ampere on; CPUs with AVX-512 BF16
or AMX) and fp32 elsewhere: on a CPU without bf16 instructions autocast is several times
slower than fp32, so it is never chosen silently. fp16 needs loss scaling (a GradScaler).
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def cpu_has_bf16() -> bool:
    """True where this CPU has bf16 matrix instructions (AVX-512 BF16 or AMX)."""
    import torch

    cpu = getattr(torch, "cpu", None)
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(cpu, c, lambda: False)()) for c in checks)


def supports(device: "torch.device", precision: str) -> bool:
    import torch

    if precision == "fp32":
        return True
    if device.type == "cuda":
        return precision == "fp16" or torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return precision == "bf16" and cpu_has_bf16()
    return device.type == "mps" and precision == "fp16"


def resolve_precision(name: str, device: "torch.device") -> str:
    """fp32, bf16 or fp16 for this device (auto: bf16 where it is native, else fp32)."""
    if name == "auto":
        return "bf16" if supports(device, "bf16") else "fp32"
    return name


def precision_problems(name: str, device: "torch.device", key: str = "train.precision") -> list[str]:
    if name not in PRECISIONS:
        return [f"{key}: '{name}' is not one of {', '.join(PRECISIONS)}"]
    if name != "auto" and not supports(device, name):
        why = {
            "cpu": "this CPU has no bf16 instructions (AVX-512 BF16 or AMX) and fp16 is not a CPU training type",
            "mps": "Apple GPUs train in fp16 or fp32",
        }.get(device.type, "this GPU does not compute in bf16 (use fp16)")
        return [f"{key}: {name} is not supported on {device}: {why}; use {key}: auto or fp32"]
    return []


def autocast(device: "torch.device", precision: str) -> Any:
    """The context a forward pass runs in (a no-op in fp32)."""
    import torch

    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype)


def grad_scaler(device: "torch.device", precision: str) -> Any:
    """A loss scaler for fp16 (whose small gradients underflow), else None."""
    import torch

    return torch.amp.GradScaler(device.type) if precision == "fp16" else None
