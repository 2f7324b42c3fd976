"""Mixed precision: `train.precision: auto | fp32 | bf16 | fp16`.

Weights that train stay in float32 (the optimizer updates full-precision master weights);
matrix products run in the low-precision type under `torch.autocast`. `auto` follows the
frozen weights when `model.dtype` holds them in bf16 or fp16 (a GPU's default: they compute
in that type anyway, and autocast is what lets the float32 trained weights meet them), and
otherwise takes bf16 where the device computes it natively (CUDA GPUs from Ampere on; CPUs
with AVX-512 BF16 or AMX) and fp32 elsewhere: on a CPU without bf16 instructions autocast
is several times slower than fp32, so it is never chosen silently. fp16 needs loss scaling
(a GradScaler).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from langadapt.devices import computes_bf16, resolve_device, resolve_dtype

if TYPE_CHECKING:
    import torch

    from langadapt.recipe import Recipe

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def cpu_has_bf16() -> bool:
    """True where this CPU has bf16 matrix instructions (AVX-512 BF16 or AMX)."""
    import torch

    return computes_bf16(torch.device("cpu"))


def supports(device: "torch.device", precision: str) -> bool:
    import torch

    if precision == "fp32":
        return True
    if device.type == "cuda":
        return precision == "fp16" or torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return precision == "bf16" and cpu_has_bf16()
    return device.type == "mps" and precision == "fp16"


WEIGHT_PRECISIONS = {"bfloat16": "bf16", "float16": "fp16"}


def resolve_precision(name: str, device: "torch.device", weights: str = "float32") -> str:
    """fp32, bf16 or fp16 for this device (auto: the frozen weights' type when it is bf16 or fp16, else bf16
    where it is native, else fp32). `weights`: what the frozen weights are held in (`frozen_dtype`)."""
    if name == "auto":
        if weights in WEIGHT_PRECISIONS:
            return WEIGHT_PRECISIONS[weights]
        return "bf16" if supports(device, "bf16") else "fp32"
    return name


def weights_dtype(recipe: "Recipe", device: "torch.device | None" = None) -> str:
    """model.dtype as resolved for training on `device` (default: train.device's), with train.precision."""
    return resolve_dtype(recipe.model.dtype, device or resolve_device(recipe.train.device), recipe.train.precision)


def load_dtype(recipe: "Recipe", dtype: str) -> str:
    """What the base loads in for training: `dtype` (model.dtype resolved), or float32 when every phase is full.

    A full fine-tuning keeps no frozen weight to hold in bf16: its float32 master copies are
    made from the weights as loaded, and loading them in bf16 would round them first.
    """
    methods = {ph.method for ph in recipe.train.phases} if recipe.train.phases else {recipe.train.method}
    if methods == {"full"} and not recipe.train.low_precision_master_weights:
        return "float32"
    return dtype


def frozen_dtype(model: Any) -> str:
    """The lowest-precision floating dtype among the model's frozen weights ("float32" when every weight trains).

    A 4-bit base's packed weights are not floating point and do not count (QLoRA computes in
    the run's precision).
    """
    import torch

    found = {p.dtype for p in model.parameters() if not p.requires_grad and p.is_floating_point()}
    for dtype in (torch.float16, torch.bfloat16):
        if dtype in found:
            return str(dtype).removeprefix("torch.")
    return "float32"


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


def grad_scaler(device: "torch.device", precision: str) -> Any:
    """A loss scaler for fp16 (whose small gradients underflow), else None."""
    import torch

    return torch.amp.GradScaler(device.type) if precision == "fp16" else None
