"""Model FLOPs per trained token and the device's peak: MFU (model FLOPs utilisation).

MFU is the model FLOP/s a run achieves over the peak FLOP/s of its device. The model
FLOPs are those of the math the model defines, counted once, whatever the implementation
does: recomputation under gradient checkpointing, padding and kernels' own overheads do
not count, so MFU says how much of the device the training itself uses (PaLM, appendix B;
nanoGPT's `estimate_mfu`). Per trained token:

- forward: 2 FLOPs (a multiply and an add) per weight of every matrix product the token
  passes through, the output head over the vocabulary included (peft's and AdapterHub's
  LoRA matrices and bottleneck adapters are products too); embedding lookups are not
  products and count nothing. Plus attention: QK^T and AV cost 2 x 2 x seq_len x d_attn per
  token and layer (d_attn = query heads x head size; grouped K/V heads do not shrink it).
  Convention: PaLM's, attention over the whole `train.seq_len` row. A causal kernel skips
  the masked half of QK^T and AV, and document packing (`train.packed_attention: document`)
  restricts each token to its own document, so for a decoder the attention term is the
  dense (unmasked) figure and an upper bound on the work a causal, per-document kernel
  does; it is PaLM's and nanoGPT's term, so figures compare across code bases.
- backward: each product has two gradients, each costing as much as its forward. The
  gradient with respect to its weight is computed only where the weight trains (over the
  rows that train, for peft's trainable token rows); the gradient with respect to its input
  only where a gradient must flow further down, i.e. where a parameter that trains lies
  below it. So a frozen product above a trainable parameter costs 1 x its forward in the
  backward pass, a trained one 2 x, and nothing below the lowest trainable parameter costs
  anything. Attention's two products have only activations as operands: 2 x their forward
  in every layer at or above the lowest layer holding a trainable parameter.

"Below" is the order of the model's modules, which for transformers models is the order of
the forward pass (embeddings, layer 0 ... layer n-1, final norm, head). It is exact whenever
something in the embeddings trains (full fine-tuning; lora with new token rows, the
default; embeddings: all; new-rows): every product then lies above a trainable parameter.
Where the lowest trainable parameters sit inside a layer (lora with embeddings: none),
module order stands in for data flow inside that one layer: k_proj, listed after q_proj's
adapter, is counted with an input gradient autograd does not compute (k_proj reads the
layer's input, not q_proj's output). The excess is at most that one layer's frozen
products once. Examples: full fine-tuning = 3 x forward; LoRA in every layer with trainable
new rows = frozen products 2 x their forward + adapters and attention 3 x theirs; only
embedding rows trainable = every product 2 x its forward and attention 3 x (the gradient
still has to reach the embeddings through the whole stack), the head's trainable rows besides.

With the masked-LM objective the head runs only at the masked positions
(`train.mlm_probability` of the tokens, the masking budget): its products count at that
fraction of the tokens.

The peak: on a GPU from `GPU_PEAKS`, the dense (no sparsity) tensor-core figures of the
vendor's data sheets at the run's precision, matched by `torch.cuda.get_device_name`; an
unknown GPU gets no MFU (one line says so), never a guessed figure; `train.peak_tflops`
overrides. On a CPU there is no meaningful data-sheet figure: the peak is measured, the
best rate of a few matrix products at the run's precision on the run's threads, once per
process, and every MFU printed on a CPU says it is against this CPU's measured matmul peak.
Other work on the same cores at that moment lowers the measured peak (the figure is the
share this process had then), so on a busy machine the MFU moves with the load.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

CPU_LABEL = "against this CPU's measured matmul peak"


# -- model FLOPs per token -----------------------------------------------------------------


@dataclass(frozen=True)
class Product:
    """One matrix product a token passes through, with what its backward pass computes."""

    name: str
    weights: int  # multiply-adds per token: in x out
    tokens: float  # fraction of the tokens it runs on (1, or the masked fraction for an MLM head)
    trained_weights: int  # weights whose gradient is computed (all of them, trainable rows, or 0)
    input_gradient: bool  # a trainable parameter lies below it: the gradient flows through its input


@dataclass(frozen=True)
class TokenFlops:
    """Model FLOPs per trained token, split as MFU accounting needs them."""

    products_forward: float
    attention_forward: float
    products_backward: float
    attention_backward: float
    layers: int
    attention_width: int  # d_attn: query heads x head size
    seq_len: int

    @property
    def forward(self) -> float:
        return self.products_forward + self.attention_forward

    @property
    def backward(self) -> float:
        return self.products_backward + self.attention_backward

    @property
    def total(self) -> float:
        return self.forward + self.backward

    def record(self) -> dict[str, float]:
        """For a summary: FLOPs per token, forward and backward."""
        return {
            "model_flops_per_token": round(self.total),
            "model_flops_per_token_forward": round(self.forward),
            "model_flops_per_token_backward": round(self.backward),
        }


def _inner(model: Any) -> Any:
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def _text_config(model: Any) -> Any:
    config = _inner(model).config
    return config.get_text_config() if hasattr(config, "get_text_config") else config


def attention_shape(config: Any) -> tuple[int, int]:
    """(layers, d_attn = query heads x head size) from a transformers config."""
    layers = getattr(config, "num_hidden_layers", None) or getattr(config, "n_layer", None) or 0
    heads = getattr(config, "num_attention_heads", None) or getattr(config, "n_head", None) or 0
    hidden = getattr(config, "hidden_size", None) or getattr(config, "n_embd", None) or 0
    head_dim = getattr(config, "head_dim", None) or (hidden // heads if heads else 0)
    return int(layers), int(heads * head_dim)


def _layer_list(model: Any, layers: int) -> str | None:
    """The qualified name of the module list holding the transformer layers (the first with `layers` entries)."""
    import torch

    for name, module in model.named_modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) == layers and layers:
            return name
    return None


def _head_modules(model: Any) -> set[int]:
    """ids of the modules of the task head: every child of the task model other than its body."""
    inner = _inner(model)
    body = getattr(inner, getattr(inner, "base_model_prefix", ""), None)
    return {id(m) for _, child in inner.named_children() if child is not body for m in child.modules()}


def _own_trainable(module: Any) -> bool:
    return any(p.requires_grad for p in module.parameters(recurse=False))


def _shape(module: Any) -> tuple[int, int] | None:
    """(in, out) of a module that multiplies its input by a weight matrix, else None."""
    import torch

    if isinstance(module, torch.nn.Linear):  # bitsandbytes' 4-bit layers are Linear too: their packed
        return int(module.in_features), int(module.out_features)  # weight's shape is not the product's
    if type(module).__name__ == "Conv1D" and getattr(module, "weight", None) is not None:  # GPT-2's linear
        return int(module.weight.shape[0]), int(module.weight.shape[1])
    return None


def _trained_rows(module: Any) -> int:
    """Rows of a peft trainable-token wrapper's product that train (its delta rows), else 0."""
    deltas = getattr(module, "trainable_tokens_delta", None)
    if not deltas:
        return 0
    return sum(int(d.shape[0]) for d in deltas.values() if d.requires_grad)


def products(model: Any, head_tokens: float = 1.0) -> list[Product]:
    """Every matrix product of the model per token, in forward (module) order, with its backward work.

    `head_tokens`: the fraction of the tokens the task head runs on (masked LM: the masked ones).
    """
    head = _head_modules(model) if head_tokens != 1.0 else set()
    out: list[Product] = []
    below = False  # a trainable parameter seen earlier in module order
    wrapper_rows: dict[int, int] = {}  # a peft trainable-token wrapper's base product -> its trained rows
    for name, module in model.named_modules():
        base = getattr(module, "base_layer", None)
        if base is not None and _trained_rows(module):
            wrapper_rows[id(base)] = _trained_rows(module)
        shape = _shape(module)
        trains = _own_trainable(module)
        if shape is not None:
            n_in, n_out = shape
            weights = n_in * n_out
            weight = getattr(module, "weight", None)
            trained = weights if weight is not None and weight.requires_grad else wrapper_rows.get(id(module), 0) * n_in
            tokens = head_tokens if id(module) in head else 1.0
            out.append(Product(name, weights, tokens, trained, below))
        else:  # AdapterHub's LoRA keeps its matrices as parameters lora_A (r x in) and lora_B (out x r)
            for key in ("lora_A", "lora_B"):
                p = module._parameters.get(key) if hasattr(module, "_parameters") else None
                if p is not None and p.dim() == 2:
                    tokens = head_tokens if id(module) in head else 1.0
                    out.append(
                        Product(
                            f"{name}.{key}", int(p.numel()), tokens, int(p.numel()) if p.requires_grad else 0, below
                        )
                    )
                    below = below or p.requires_grad
        below = below or trains
    return out


def _lowest_trained_layer(model: Any, layers: int) -> int:
    """The index of the lowest layer at or above which gradients flow: -1 when something below the layers
    trains (the embeddings), `layers` when nothing up to the end of the layers does."""
    prefix = _layer_list(model, layers)
    for name, module in model.named_modules():
        if not _own_trainable(module):
            continue
        if prefix is None:  # no layer list found: the body counts as one block
            return -1 if id(module) not in _head_modules(model) else layers
        if name.startswith(prefix + "."):
            return int(name[len(prefix) + 1 :].split(".")[0])
        if not name.startswith(prefix):
            # before the layers (embeddings) or after them (final norm, head): which, by position
            names = [n for n, _ in model.named_modules()]
            return -1 if names.index(name) < names.index(prefix) else layers
    return layers


def flops_per_token(model: Any, seq_len: int, head_tokens: float = 1.0) -> TokenFlops:
    """Model FLOPs per trained token of `model` as it stands (its trainable parameters set), rows of `seq_len`.

    The rule is in the module's docstring. `head_tokens`: the fraction of tokens the task head
    runs on (`train.mlm_probability` for the masked LM; 1 for causal LM).
    """
    layers, width = attention_shape(_text_config(model))
    prods = products(model, head_tokens)
    fwd = sum(2.0 * p.weights * p.tokens for p in prods)
    bwd = sum(2.0 * (p.weights * p.input_gradient + p.trained_weights) * p.tokens for p in prods)
    attention = 2.0 * 2.0 * seq_len * width  # QK^T and AV, one layer, one token
    lowest = _lowest_trained_layer(model, layers)
    with_gradient = layers - max(0, lowest) if lowest < layers else 0
    return TokenFlops(
        products_forward=fwd,
        attention_forward=attention * layers,
        products_backward=bwd,
        attention_backward=2.0 * attention * with_gradient,
        layers=layers,
        attention_width=width,
        seq_len=seq_len,
    )


# -- the device's peak ---------------------------------------------------------------------

# Dense tensor-core peaks (no 2:4 sparsity) in TFLOP/s from the vendors' data sheets, with fp32
# accumulation (GeForce cards' fp16-accumulate figures are twice these and not what PyTorch
# uses). fp32 is the plain (non-tensor) rate, tf32 the tensor-core rate fp32 products run at when
# torch.backends.cuda.matmul allows TF32. A missing entry is a figure the data sheet does not give.
# Patterns are matched, in order, against torch.cuda.get_device_name(). Left out on purpose:
# the A10G (an AWS part with no NVIDIA data sheet; published figures disagree), GeForce laptop
# and export variants (other clocks), and any GPU whose figures were not checked.
GPU_PEAKS: tuple[tuple[str, str, dict[str, float]], ...] = (
    (r"\bGH200\b", "GH200", {"bf16": 989.5, "fp16": 989.5, "tf32": 494.7, "fp32": 67.0}),
    (r"\bH200 NVL\b", "H200 NVL", {"bf16": 835.5, "fp16": 835.5, "tf32": 417.5, "fp32": 60.0}),
    (r"\bH200\b", "H200 SXM", {"bf16": 989.5, "fp16": 989.5, "tf32": 494.7, "fp32": 67.0}),
    (r"\bH100 NVL\b", "H100 NVL", {"bf16": 835.5, "fp16": 835.5, "tf32": 417.5, "fp32": 60.0}),
    (r"\bH100 PCIe\b", "H100 PCIe", {"bf16": 756.5, "fp16": 756.5, "tf32": 378.0, "fp32": 51.0}),
    (r"\bH100\b.*\b(HBM3|SXM)", "H100 SXM", {"bf16": 989.5, "fp16": 989.5, "tf32": 494.7, "fp32": 67.0}),
    (r"\bA100\b", "A100", {"bf16": 312.0, "fp16": 312.0, "tf32": 156.0, "fp32": 19.5}),
    (r"\bA40\b", "A40", {"bf16": 149.7, "fp16": 149.7, "tf32": 74.8, "fp32": 37.4}),
    (r"\bA30\b", "A30", {"bf16": 165.0, "fp16": 165.0, "tf32": 82.0, "fp32": 10.3}),
    (r"\bA10\b", "A10", {"bf16": 125.0, "fp16": 125.0, "tf32": 62.5, "fp32": 31.2}),
    (r"\bL40S\b", "L40S", {"bf16": 362.05, "fp16": 362.05, "tf32": 183.0, "fp32": 91.6}),
    (r"\bL40\b", "L40", {"bf16": 181.05, "fp16": 181.05, "tf32": 90.5, "fp32": 90.5}),
    (r"\bL4\b", "L4", {"bf16": 121.0, "fp16": 121.0, "tf32": 60.0, "fp32": 30.3}),
    (r"\bRTX A6000$", "RTX A6000", {"bf16": 154.8, "fp16": 154.8, "fp32": 38.7}),
    (r"\bRTX 4090$", "GeForce RTX 4090", {"bf16": 165.2, "fp16": 165.2, "tf32": 82.6, "fp32": 82.6}),
    (r"\bRTX 3090$", "GeForce RTX 3090", {"bf16": 71.0, "fp16": 71.0, "tf32": 35.6, "fp32": 35.6}),
    (r"\bV100S\b", "V100S PCIe", {"fp16": 130.0, "fp32": 16.4}),  # Volta: no bf16, no tf32
    (r"\bV100[- ]SXM", "V100 SXM2", {"fp16": 125.0, "fp32": 15.7}),
    (r"\bV100[- ]PCIE", "V100 PCIe", {"fp16": 112.0, "fp32": 14.0}),
    (r"\bT4\b", "T4", {"fp16": 65.0, "fp32": 8.1}),
)


def gpu_peak_tflops(device_name: str, kind: str) -> tuple[str, float] | None:
    """(the table's name for the GPU, its dense peak TFLOP/s for `kind`: bf16, fp16, tf32 or fp32), or None."""
    for pattern, label, peaks in GPU_PEAKS:
        if re.search(pattern, device_name, flags=re.IGNORECASE):
            return (label, peaks[kind]) if kind in peaks else None
    return None


def _product_kind(precision: str) -> str:
    """What a CUDA run's matrix products compute in: bf16, fp16, tf32 (fp32 with TF32 allowed) or fp32."""
    import torch

    if precision in ("bf16", "fp16"):
        return precision
    return "tf32" if torch.get_float32_matmul_precision() != "highest" else "fp32"


@dataclass(frozen=True)
class Peak:
    """A device's peak FLOP/s and what it is: a data-sheet figure, the recipe's, or a CPU's measured rate."""

    flops: float
    source: str  # for a summary and metrics.jsonl: where the figure comes from
    measured: bool  # a CPU's measured matmul rate

    @property
    def label(self) -> str:
        """What an MFU figure is against, in words; every printed CPU MFU carries it."""
        return f"{CPU_LABEL} ({self.source})" if self.measured else f"against {self.source}"


_MEASURED: dict[tuple[str, int], float] = {}
BENCH_SIZES = (512, 1024, 2048)  # square products; the best rate over the sizes is the peak
BENCH_SECONDS = 0.25  # per size, after one warm-up product


def measured_cpu_flops(precision: str) -> float:
    """This CPU's matmul peak in FLOP/s at `precision` (bf16 or fp32) on torch's current thread count.

    The best rate of square products of a few sizes (the best size depends on the caches and the
    matrix units), measured once per process and thread count: about a second.
    """
    import torch

    key = (precision, torch.get_num_threads())
    if key not in _MEASURED:
        dtype = torch.bfloat16 if precision == "bf16" else torch.float32
        gen = torch.Generator().manual_seed(0)
        best = 0.0
        for n in BENCH_SIZES:
            a = torch.randn(n, n, generator=gen).to(dtype)
            b = torch.randn(n, n, generator=gen).to(dtype)
            c = a @ b  # warm-up: packing buffers, thread pool
            stop = time.perf_counter() + BENCH_SECONDS
            for _ in range(1000):
                t = time.perf_counter()
                torch.mm(a, b, out=c)
                seconds = time.perf_counter() - t
                best = max(best, 2.0 * n**3 / seconds)
                if time.perf_counter() > stop:
                    break
        _MEASURED[key] = best
    return _MEASURED[key]


def device_peak(device: "torch.device", precision: str, override_tflops: float = 0.0) -> tuple[Peak | None, str]:
    """The peak MFU is measured against, and a line saying what it is (or why there is none).

    `override_tflops` (train.peak_tflops) wins when > 0. A GPU missing from `GPU_PEAKS` (or a kind
    of product its data sheet does not give) has no peak: None, and the line says how to give one.
    """
    import torch

    if override_tflops > 0:
        peak = Peak(override_tflops * 1e12, f"train.peak_tflops {override_tflops:g} TFLOP/s", measured=False)
        return peak, f"MFU against {peak.source}"
    if device.type == "cpu":
        flops = measured_cpu_flops(precision)
        threads = torch.get_num_threads()
        source = f"{flops / 1e12:.3f} TFLOP/s, {precision}, {threads} thread{'s' if threads != 1 else ''}"
        return Peak(flops, source, measured=True), f"MFU {CPU_LABEL}: {source}"
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        kind = _product_kind(precision)
        found = gpu_peak_tflops(name, kind)
        if found is not None:
            label, tflops = found
            peak = Peak(tflops * 1e12, f"the {label}'s dense {kind} peak, {tflops:g} TFLOP/s", measured=False)
            return peak, f"MFU {peak.label} ({name})"
        return None, (
            f"MFU not reported: no dense {kind} peak known for '{name}'; set train.peak_tflops to its "
            "data sheet's dense (no sparsity) figure"
        )
    return None, f"MFU not reported: no peak known for a {device.type} device; set train.peak_tflops"


# -- throughput and MFU of a run -----------------------------------------------------------


class Utilisation:
    """Model FLOP/s and MFU of each step and of the session, for the step log, metrics.jsonl and the summary.

    Figures are per process (the device each one drives): the step's tokens over all
    processes, divided by their number. Step time is the optimizer step's wall time (forward,
    backward, step), without waiting for data, held-out evaluation or checkpoints.
    """

    def __init__(self, flops: TokenFlops, peak: Peak | None, processes: int = 1) -> None:
        self.flops, self.peak, self.processes = flops, peak, processes
        self.tokens, self.seconds = 0, 0.0

    def _figures(self, tokens: float, seconds: float) -> dict[str, Any]:
        achieved = tokens * self.flops.total / max(seconds, 1e-9) / self.processes
        row: dict[str, Any] = {"model_tflops": round(achieved / 1e12, 4)}
        if self.peak is not None:
            row["mfu"] = round(achieved / self.peak.flops, 4)
            row["mfu_against"] = self.peak.label
        return row

    def step(self, tokens: int, seconds: float) -> dict[str, Any]:
        """The figures of one step (for its metrics.jsonl row); adds it to the session's."""
        self.tokens += tokens
        self.seconds += seconds
        return self._figures(tokens, seconds)

    def phrase(self, tokens: float, seconds: float) -> str:
        """'0.041 TFLOP/s, MFU 23.1% against ...' for a log line (the label only where it is a CPU's measure)."""
        row = self._figures(tokens, seconds)
        text = f"{row['model_tflops']:.3g} model TFLOP/s"
        if "mfu" in row:
            text += f", MFU {100 * row['mfu']:.1f}%" + (f" {CPU_LABEL}" if self.peak and self.peak.measured else "")
        return text

    def summary(self) -> dict[str, Any]:
        """The session's figures (time-weighted over its steps) and the FLOPs per token they rest on."""
        out: dict[str, Any] = {**self.flops.record(), "train_step_seconds": round(self.seconds, 2)}
        if self.seconds > 0:
            out.update(self._figures(self.tokens, self.seconds))
        if self.peak is not None:
            out["peak_tflops"] = round(self.peak.flops / 1e12, 4)
        return out


def combine(summaries: list[dict[str, Any]]) -> dict[str, Any]:
    """The figures of several phases' sessions as one: time-weighted over their steps (MFU only when
    every phase has one, against the same peak)."""
    timed = [s for s in summaries if s.get("train_step_seconds") and "model_tflops" in s]
    seconds = sum(s["train_step_seconds"] for s in timed)
    if not timed or not seconds:
        return {}
    out: dict[str, Any] = {
        "train_step_seconds": round(seconds, 2),
        "model_tflops": round(sum(s["model_tflops"] * s["train_step_seconds"] for s in timed) / seconds, 4),
    }
    against = {s.get("mfu_against") for s in timed}
    if len(against) == 1 and None not in against:
        out["mfu"] = round(sum(s["mfu"] * s["train_step_seconds"] for s in timed) / seconds, 4)
        out["mfu_against"] = against.pop()
    return out
