"""How much memory a training run needs, estimated at validation, and refused when it clearly cannot fit.

The estimate, in bytes per process, adds up:

- weights: every parameter of the model, counted on the meta device from its config.json
  (with the embedding rows the tokenizer stage adds or removes); frozen ones in
  `model.dtype` (auto: bfloat16 on a GPU, float32 on a CPU), qlora's frozen linear layers in
  4 bits (NF4 plus a scale per block of 64: 0.5625 bytes);
- training state: 16 bytes per trainable parameter: its float32 weight and gradient and
  AdamW's two float32 moments (trainable weights are float32 whatever `model.dtype` says);
- autocast copies: under bf16 or fp16 each float32 weight a matrix product reads is cast once
  per pass and held for the backward pass: 2 bytes per float32 parameter;
- activations: per token of a micro-batch and per layer, a*h + b*i + c*kv bytes (h the hidden
  size, i the feed-forward size, kv the width of the keys and values), with (a, b, c) from
  `ACTIVATIONS`: the tensors autograd saves, measured for Llama-architecture layers
  (transformers 4.57, SDPA attention, float32 weights) on a CPU as the slope over sequence
  lengths and fitted on five shapes (hidden 256-576, feed-forward 512-1,536, keys and values
  64-512 wide; within 2% of what SmolLM2-135M's layers save), for layers that train whole
  (full), that carry trained adapters (LoRA, bottleneck adapters) and that are frozen (only
  embedding rows or the head train). Eager attention adds 8 bytes per head and position of
  the sequence; gradient checkpointing keeps each layer's input (4*h bytes per token) and one
  layer's activations at a time. On a CPU the peak resident memory of a forward and backward
  pass (SmolLM2-135M with LoRA, 1,024 tokens) was 1.5 times what autograd saved in bf16 and
  2.0 times in fp32 (the backward pass's gradients, the allocator's slack): there activations
  count `CPU_TRANSIENTS` (1.5) times; on a GPU, where that was not measured, once;
- the output head: the fused causal loss holds one chunk of 1,024 tokens' float32 logits and
  their gradient (2 x 1,024 x vocabulary x 4 bytes); a masked LM the same for its masked tokens.

Sharding divides it per process: FSDP (`full`; `hybrid` over a node's processes) the weights,
gradients and moments, plus two gathered transformer blocks; ZeRO-1 the moments, ZeRO-2 also
the gradients, ZeRO-3 also the weights. Data parallel (`none` over several processes) adds
DDP's gradient buckets (4 bytes per trainable parameter).

On a GPU that is GPU memory. Host memory then holds, per process on the machine, the model as
it loads (every parameter in its load dtype), and on rank 0 the full training state a
checkpoint gathers (12 bytes per trainable parameter: weight and moments). On a CPU everything
is host memory, once per process on the machine.

Available: the GPU's free memory (`torch.cuda.mem_get_info`) and the host's available memory
(psutil, else /proc/meminfo). On a GPU the estimate leaves out the allocator's slack, the CUDA
context and kernels' workspaces, so it errs low there. A run is refused only when it exceeds
what is available by more than `REFUSE_ABOVE` (20%), with the figures and what to change, and
logged as tight from `TIGHT_ABOVE` (90%) of it. A model whose config cannot be read offline (a
hub model not in the local cache, a GGUF file not imported yet) is not estimated.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from langadapt.models.loading import MODELS, base_config, cache_dir, is_encoder
from langadapt.train.config import TrainConfig, effective_batch_size
from langadapt.train.distributed import requested_sharding
from langadapt.train.loop import auto_micro_batch
from langadapt.train.objectives import CHUNK_TOKENS, is_masked
from langadapt.train.processes import launched_world_size, node_size

if TYPE_CHECKING:
    import torch
    from transformers import PretrainedConfig

    from langadapt.recipe import Recipe

log = logging.getLogger(__name__)

GIB = 1 << 30
REFUSE_ABOVE = 1.2  # refuse when the estimate exceeds what is available by more than 20%
TIGHT_ABOVE = 0.9  # log a warning from 90% of what is available
# bytes per token per layer = a*h + b*i + c*kv, by precision and by what trains inside the layers
ACTIVATIONS = {
    ("fp32", "whole"): (32, 16, 8),
    ("fp32", "adapters"): (24, 16, 8),
    ("fp32", "frozen"): (16, 12, 8),
    ("16-bit", "whole"): (30, 8, 4),
    ("16-bit", "adapters"): (24, 8, 4),
    ("16-bit", "frozen"): (12, 6, 4),
}
CPU_TRANSIENTS = 1.5  # a CPU's peak over what autograd saves (the backward pass's gradients, the allocator)
EAGER_BYTES = 8  # per token, layer, head and position of the sequence: the attention probabilities
NF4_BYTES = 0.5625  # a 4-bit weight plus its block's scale
WHOLE, FROZEN = ("full",), ("new-rows", "head")  # every other method trains adapters inside the layers
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


@dataclass(frozen=True)
class ModelShape:
    """What the estimate needs of a model, read from its config (parameters counted on the meta device)."""

    parameters: int
    layers: int
    hidden: int
    intermediate: int
    kv_width: int
    heads: int
    vocab: int
    tied: bool
    encoder: bool
    linears: tuple[tuple[str, int, int], ...]  # (module name, in, out) of every linear layer but the output head
    embedding: int  # parameters of the input embedding matrix
    head: int  # parameters of an output head of its own (0 when tied)


_SHAPES: dict[str, ModelShape] = {}  # by config: validation runs at every recipe load


def model_shape(config: "PretrainedConfig") -> ModelShape:
    """The model's shape: parameters counted by building it on the meta device (no memory, no weights)."""
    key = config.to_json_string()
    if key not in _SHAPES:
        _SHAPES[key] = _shape(config)
    return _SHAPES[key]


def _shape(config: "PretrainedConfig") -> ModelShape:
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForMaskedLM

    encoder = is_encoder(config)
    with torch.device("meta"):
        model = (AutoModelForMaskedLM if encoder else AutoModelForCausalLM).from_config(config)
    text = config.get_text_config()
    hidden, heads = int(text.hidden_size), int(text.num_attention_heads)
    head_dim = int(getattr(text, "head_dim", None) or hidden // heads)
    emb, out = model.get_input_embeddings(), model.get_output_embeddings()
    tied = out is None or out.weight is emb.weight
    return ModelShape(
        parameters=sum(p.numel() for p in model.parameters()),
        layers=int(text.num_hidden_layers),
        hidden=hidden,
        intermediate=int(getattr(text, "intermediate_size", None) or getattr(text, "n_inner", None) or 4 * hidden),
        kv_width=int(getattr(text, "num_key_value_heads", None) or heads) * head_dim,
        heads=heads,
        vocab=int(text.vocab_size),
        tied=tied,
        encoder=encoder,
        linears=tuple(
            (name, m.in_features, m.out_features)
            for name, m in model.named_modules()
            if isinstance(m, torch.nn.Linear) and m is not out
        ),
        embedding=emb.weight.numel(),
        head=0 if tied else out.weight.numel(),
    )


def readable_config(recipe: "Recipe") -> "PretrainedConfig | None":
    """The base model's real config.json, when it can be read offline (never a stand-in built from defaults)."""
    base = recipe.model.base
    if base.startswith("builtin:"):
        name = base[len("builtin:") :]
        if name not in MODELS or not (cache_dir() / "models" / name / "config.json").is_file():
            return None  # not imported yet: the registry knows its type, not its size
    elif recipe.model.gguf_file:
        return None
    return base_config(recipe.model)


def vocabulary_rows(recipe: "Recipe", shape: ModelShape) -> tuple[int, int]:
    """(rows the vocabulary gains, rows that are new): extend adds new_tokens; replace makes a vocabulary
    of target_vocab_size, every row of it counted new (shared tokens keep theirs: an upper bound)."""
    tk = recipe.tokenizer
    if tk.method == "extend":
        return tk.new_tokens, tk.new_tokens
    if tk.method == "replace":
        return tk.target_vocab_size - shape.vocab, tk.target_vocab_size
    return 0, 0


def trainable_parameters(
    shape: ModelShape, tr: TrainConfig, method: str, embeddings: str, added: int, rows: int
) -> int:
    """Parameters a method trains, with the embedding rows of `embeddings` (new, all, none); the vocabulary
    gained `added` rows, of which `rows` are new."""
    h = shape.hidden
    grown = added * h * (1 if shape.tied else 2)
    if method == "full":
        return shape.parameters + grown
    if method in ("lora", "qlora", "lora-adapters"):
        targets = set(tr.lora_targets)
        inside = [(i, o) for name, i, o in shape.linears if shape.encoder or name.rsplit(".", 1)[-1] in targets]
        n = sum(tr.lora_rank * (i + o) for i, o in inside)
    elif method in ("seq-bn", "seq-bn-inv", "double-seq-bn"):
        bottleneck = max(1, h // tr.adapter_reduction_factor)
        n = shape.layers * (2 if method == "double-seq-bn" else 1) * (2 * h * bottleneck + bottleneck + h)
        if method == "seq-bn-inv":
            n += h * h // tr.adapter_inv_reduction_factor
    elif method == "head":
        n = shape.head
    else:  # new-rows
        n = 0
    if embeddings == "all":
        n += shape.embedding + shape.head + grown
    elif embeddings == "new" or method == "new-rows":
        n += rows * h
    return n


@dataclass(frozen=True)
class Estimate:
    """Bytes per process, by what holds them (see the module's docstring), and the host's share."""

    weights: float
    autocast_copies: float
    training_state: float
    activations: float
    output_head: float
    trainable: int
    tokens: int  # per micro-batch
    host: float  # host memory of this machine, all processes on it (on a CPU: everything)
    gathered: float = 0.0  # FSDP: two transformer blocks gathered whole

    @property
    def total(self) -> float:
        parts = (self.weights, self.autocast_copies, self.gathered, self.training_state)
        return sum(parts) + self.activations + self.output_head

    def describe(self) -> str:
        copies = f", {_gib(self.autocast_copies)} autocast copies" if self.autocast_copies else ""
        copies += f", {_gib(self.gathered)} gathered blocks" if self.gathered else ""
        return (
            f"{_gib(self.total)} ({_gib(self.weights)} frozen weights{copies}, {_gib(self.training_state)} training "
            f"state of {self.trainable / 1e6:,.1f}M trainable parameters, {_gib(self.activations)} activations of "
            f"{self.tokens:,}-token micro-batches, {_gib(self.output_head)} output head)"
        )


def _gib(n: float) -> str:
    return f"{n / GIB:.1f} GiB"


def estimate(
    shape: ModelShape,
    recipe: "Recipe",
    device: str,
    precision: str,
    method: str,
    embeddings: str,
    processes: int = 1,
    per_node: int = 1,
    sharding: str = "none",
    micro: int = 1,
    attention: str = "sdpa",
) -> Estimate:
    """The memory of one process training `shape` with `method` (and `embeddings`) on a device type ("cuda", "cpu")."""
    tr = recipe.train
    added, rows = vocabulary_rows(recipe, shape)
    total = shape.parameters + added * shape.hidden * (1 if shape.tied else 2)
    trainable = min(total, trainable_parameters(shape, tr, method, embeddings, added, rows))
    frozen = total - trainable
    # model.dtype auto: bfloat16 on an accelerator, float32 on a CPU
    load_bytes = DTYPE_BYTES.get(recipe.model.dtype, 4 if device == "cpu" else 2)
    if method == "qlora":
        quantised = min(frozen, sum(i * o for _, i, o in shape.linears))
        weights = quantised * NF4_BYTES + (frozen - quantised) * 2
    else:
        weights = frozen * load_bytes
    copies = 0.0
    if precision in ("bf16", "fp16"):  # half-precision copies of the float32 weights, held for the backward pass
        copies = 2.0 * (trainable + (frozen if load_bytes == 4 and method != "qlora" else 0))
    masters, grads, moments = 4.0 * trainable, 4.0 * trainable, 8.0 * trainable
    gathered = 0.0
    if sharding in ("full", "hybrid"):
        over = processes if sharding == "full" else per_node
        gathered = 2 * (weights + copies + masters) / max(1, shape.layers)  # two blocks gathered at a time
        weights, copies, masters = weights / over, copies / over, masters / over
        grads, moments = grads / over, moments / over
    elif sharding.startswith("zero"):
        stage = int(sharding[-1])
        moments /= processes
        if stage >= 2:
            grads /= processes
        if stage >= 3:
            weights, copies, masters = weights / processes, copies / processes, masters / processes
    elif processes > 1:
        grads *= 2  # DDP's gradient buckets beside the gradients
    tokens = micro * tr.seq_len
    kind = "whole" if method in WHOLE else "frozen" if method in FROZEN else "adapters"
    a, b, c = ACTIVATIONS[("16-bit" if precision in ("bf16", "fp16") else "fp32", kind)]
    per_layer = a * shape.hidden + b * shape.intermediate + c * shape.kv_width
    if attention == "eager":
        per_layer += EAGER_BYTES * shape.heads * tr.seq_len
    layers = shape.layers * 4 * shape.hidden + per_layer if tr.gradient_checkpointing else shape.layers * per_layer
    predicted = tokens * tr.mlm_probability if is_masked(tr.objective) else tokens
    output_head = 2 * min(predicted, CHUNK_TOKENS) * (shape.vocab + added) * 4
    est = Estimate(
        weights=weights,
        autocast_copies=copies,
        training_state=masters + grads + moments,
        activations=float(tokens * layers) * (1.0 if device == "cuda" else CPU_TRANSIENTS),
        output_head=float(output_head),
        trainable=trainable,
        tokens=tokens,
        host=0.0,
        gathered=gathered,
    )
    if device == "cuda":  # the model as it loads, per process; rank 0 gathers the training state for checkpoints
        host = per_node * total * load_bytes + 12.0 * trainable
    else:  # a CPU (or an Apple GPU's unified memory) holds everything, once per process
        host = per_node * est.total
    return dataclasses.replace(est, host=host)


def gpu_free(device: "torch.device") -> int | None:
    """Free memory of a CUDA device, in bytes (None on other devices)."""
    import torch

    if device.type != "cuda":
        return None
    free, _ = torch.cuda.mem_get_info(device)
    return int(free)


def host_available() -> int | None:
    """Memory the host can give without swapping, in bytes (None when it cannot be read)."""
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:
        pass
    meminfo = Path("/proc/meminfo")
    if meminfo.is_file():
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return None


def _advice(e: Estimate, recipe: "Recipe", device: "torch.device", processes: int) -> str:
    """What to change, for the largest part of the estimate first."""
    tr = recipe.train
    smaller = ["a smaller model"]
    if recipe.model.dtype == "float32" or (recipe.model.dtype not in DTYPE_BYTES and device.type == "cpu"):
        smaller.append("model.dtype: bfloat16")
    if device.type == "cuda" and tr.method != "qlora":
        smaller.append("train.method: qlora (4-bit frozen weights)")
    parts = [
        (
            e.activations + e.output_head,
            "lower train.micro_batch_size or train.seq_len"
            + ("" if tr.gradient_checkpointing else ", or set train.gradient_checkpointing: true"),
        ),
        (
            e.training_state,
            "train fewer weights (train.method: lora)"
            + (", or shard them over the processes (train.sharding: full or zero2)" if processes > 1 else ""),
        ),
        (e.weights + e.autocast_copies + e.gathered, " or ".join(smaller)),
    ]
    return "; ".join(text for _, text in sorted(parts, key=lambda p: -p[0]))


def memory_problems(
    recipe: "Recipe",
    device: "torch.device",
    precision: str,
    config: "PretrainedConfig | None" = None,
) -> list[str]:
    """The run refused when its estimate is clearly over what this machine has; otherwise the estimate is logged."""
    tr = recipe.train
    config = config if config is not None else readable_config(recipe)
    if config is None:
        log.info("train: memory not estimated (the base model's config.json cannot be read offline yet)")
        return []
    try:
        shape = model_shape(config)
    except Exception as e:  # an architecture transformers cannot build from its config alone
        log.info("train: memory not estimated (%s cannot be built from its config: %s)", config.model_type, e)
        return []
    processes = launched_world_size()
    per_node = min(processes, node_size() or processes)
    sharding = requested_sharding(tr.sharding) if processes > 1 else "none"
    micro = tr.micro_batch_size or auto_micro_batch(
        max(1, effective_batch_size(tr) // processes), tr.seq_len, device, precision
    )
    attention = getattr(recipe.model, "attn_implementation", "auto")
    phases = [(ph.method, ph.embeddings or tr.embeddings) for ph in tr.phases] or [(tr.method, tr.embeddings)]
    worst = max(
        (
            estimate(shape, recipe, device.type, precision, m, emb, processes, per_node, sharding, micro, attention)
            for m, emb in phases
        ),
        key=lambda e: e.total,
    )
    several = f", x {per_node} processes" if per_node > 1 else ""
    if device.type == "cuda":
        budgets = [
            (worst.total, gpu_free(device), "GPU memory per process", worst.describe(), f"free on {device}"),
            (
                worst.host,
                host_available(),
                "host memory",
                f"{_gib(worst.host)} (the model as it loads{several}, and rank 0's copy of the training state for "
                "checkpoints)",
                "available on this machine",
            ),
        ]
    else:
        detail = f"{_gib(worst.host)}: {worst.describe()} per process{several}" if per_node > 1 else worst.describe()
        budgets = [(worst.host, host_available(), "memory", detail, "available on this machine")]
    problems = []
    for needed, available, kind, detail, where in budgets:
        if available is None:
            continue
        line = f"about {detail} of {kind}; {_gib(available)} {where}"
        if needed > REFUSE_ABOVE * available:
            problems.append(
                f"train: the run needs {line}, and is refused above {REFUSE_ABOVE:.0%} of that: "
                + _advice(worst, recipe, device, processes)
            )
        elif needed > TIGHT_ABOVE * available:
            log.warning("train: the run may not fit: it needs %s", line)
        else:
            log.info("train: the run needs %s", line)
    return problems
