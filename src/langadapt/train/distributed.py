"""Many processes, as `accelerate launch` / `torchrun` start them: data parallel (DDP) or sharded (FSDP2, ZeRO).

Every process draws the same global batch from identical streams (the replay mix and the
document order are functions of the seed and the step), keeps its own share of the rows,
and the engine averages the gradients; so the loss curve does not depend on the number of
processes, and a checkpoint written by N processes resumes with M. Only rank 0 writes.

The objective runs inside `LossModule.forward`, so the engine's wrapper sees the forward
pass it needs to synchronise gradients, whatever the objective calls inside the model.

`train.sharding: none` is DDP through accelerate: every process holds the whole model.
`full` and `hybrid` run PyTorch's FSDP2 engine (`fully_shard`) directly (accelerate refuses
FSDP on a CPU; FSDP2 runs there too, over gloo): each transformer block is one group, the loss module
the root that holds the rest (embeddings, output head, final norm); parameters, gradients
and optimizer state are split over the processes (`hybrid`: over the processes of a node,
and replicated across nodes). FSDP2 keeps the root's parameters gathered from its
forward pass until its backward pass, so the fused causal loss, which reads the output
head's weight inside `LossModule.forward`, sees the whole weight and its gradient is
reduce-scattered like any other. In bf16 (fp16) the blocks are gathered in that type and
gradients reduced in fp32 (`mixed_precision_policy`); the shards stay fp32. Processes > 0
build the model on the meta device and receive rank 0's weights as it is sharded
(`loads_on_meta`, `_from_rank0`), so only rank 0 ever holds the whole model.
`zero1`, `zero2` and `zero3` run DeepSpeed ZeRO (see `zero.py`). Checkpoints hold full
tensors whatever the strategy (gathered for rank 0 alone), in the layout an unsharded run writes.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Callable

from langadapt.errors import ConfigError
from langadapt.train.precision import resolve_precision
from langadapt.train.processes import (
    Processes,
    env_flag,
    launched_rank,
    launched_world_size,
    loss_module,
    node_size,
)
from langadapt.train.zero import accelerate_zero_sharding, setup_zero

if TYPE_CHECKING:
    import torch

    from langadapt.train.config import TrainConfig

SHARDINGS = ("none", "full", "hybrid", "zero1", "zero2", "zero3")
# accelerate's FSDP sharding strategies (FSDP_SHARDING_STRATEGY: a name, or its 1-based index) -> train.sharding
ACCELERATE_STRATEGIES = ("FULL_SHARD", "SHARD_GRAD_OP", "NO_SHARD", "HYBRID_SHARD", "HYBRID_SHARD_ZERO2")
ACCELERATE_SHARDINGS = {"FULL_SHARD": "full", "HYBRID_SHARD": "hybrid"}


def accelerate_fsdp_strategy() -> str | None:
    """The FSDP sharding strategy an accelerate config launched us with (None: no FSDP config)."""
    if not env_flag("ACCELERATE_USE_FSDP"):
        return None
    strategy = os.environ.get("FSDP_SHARDING_STRATEGY", "FULL_SHARD").strip().upper()
    if strategy.isdigit() and 1 <= int(strategy) <= len(ACCELERATE_STRATEGIES):
        strategy = ACCELERATE_STRATEGIES[int(strategy) - 1]
    return strategy


def requested_sharding(sharding: str) -> str:
    """The recipe's train.sharding, or (when it says none) what an accelerate FSDP or DeepSpeed config asks for."""
    if sharding != "none":
        return sharding
    return ACCELERATE_SHARDINGS.get(accelerate_fsdp_strategy() or "", None) or accelerate_zero_sharding() or "none"


def resolve_sharding(sharding: str) -> str:
    """The strategy this launch runs: as requested, but `none` for a single process (nothing to shard over)."""
    return requested_sharding(sharding) if launched_world_size() > 1 else "none"


# FSDP shards whose processes > 0 build the model on the meta device and receive its weights from rank 0
RANK0_LOADS = ("full", "hybrid")


def loads_on_meta(sharding: str) -> bool:
    """Whether this process builds its model without weights (on the meta device) and receives them from rank 0.

    Under FSDP (`full`, `hybrid`) every process but rank 0: it then never holds the whole
    model in host memory, only its shards (`_shard` sends rank 0's weights, one tensor at a
    time). Rank 0 loads the model whole, since it writes the final one. DDP needs every
    weight on every process, and DeepSpeed ZeRO partitions a model it is given whole (its own
    `zero.Init` is not used), so both load everywhere.
    """
    return launched_rank() > 0 and resolve_sharding(sharding) in RANK0_LOADS


def meta_model(path: str, dtype: str, device: "torch.device | None" = None, attn_implementation: str = "auto") -> Any:
    """The model at `path` as `load_model` builds it (masked LM for encoders, causal LM otherwise; the same
    dtype and attention kernel for `device`), on the meta device: every parameter and buffer has its shape
    and dtype and no storage."""
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForMaskedLM

    from langadapt.devices import resolve_device, resolve_dtype
    from langadapt.models.attention import choose_attention, model_class
    from langadapt.models.loading import is_encoder, load_config

    device = device or resolve_device("auto")
    dtype = resolve_dtype(dtype, device)
    config = load_config(path)
    encoder = is_encoder(config)
    attention = choose_attention(attn_implementation, model_class(config, encoder), device, dtype, encoder)
    auto = AutoModelForMaskedLM if encoder else AutoModelForCausalLM
    with torch.device("meta"):
        return auto.from_config(config, dtype=getattr(torch, dtype), attn_implementation=attention)


def transformer_blocks(model: Any) -> list["torch.nn.Module"]:
    """The modules FSDP gathers one at a time: the base model's `_no_split_modules`, outermost first.

    Classes count by name anywhere in their ancestry (the adapters library renames them,
    e.g. `...SelfAttentionWithAdapters`). A module holding a weight that is also used outside
    it (embeddings tied to the output head) stays with the root, which keeps its parameters
    gathered for the whole forward and backward pass.
    """
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    names = set(getattr(base, "_no_split_modules", None) or ())
    users: dict[int, list[str]] = {}
    for name, p in base.named_parameters(remove_duplicate=False):
        users.setdefault(id(p), []).append(name)
    blocks: list[tuple[str, Any]] = []
    for path, module in base.named_modules():
        if not names & {c.__name__ for c in type(module).__mro__}:
            continue
        if any(path.startswith(outer + ".") for outer, _ in blocks):
            continue
        shared = any(not n.startswith(path + ".") for p in module.parameters() for n in users[id(p)])
        if not shared:
            blocks.append((path, module))
    return [module for _, module in blocks]


def setup(
    model: Any,
    objective: Callable[..., "torch.Tensor"],
    make_optimizer: Callable[[Any], Any],
    device: "torch.device",
    rows: int,
    micro: int,
    sharding: str = "none",
    cfg: "TrainConfig | None" = None,
) -> tuple[Processes, "torch.nn.Module", Any]:
    """(processes, loss module, optimizer): DDP through accelerate, FSDP2 or DeepSpeed ZeRO, when several processes run.

    The optimizer is made last: sharding replaces the parameters with sharded (DTensor) ones.
    """
    module = loss_module(model, objective)
    world = launched_world_size()
    if world <= 1:
        return Processes(), module, make_optimizer(model)
    if rows % (world * micro):
        raise ConfigError(
            [
                f"train: {rows} sequences per step do not split into {world} processes x micro-batches of {micro}; "
                "choose train.batch_size (or tokens_per_step) and micro_batch_size so that they do"
            ]
        )
    if sharding.startswith("zero"):
        return setup_zero(module, model, make_optimizer, device, sharding, cfg, rows, micro)
    if sharding != "none":
        precision = resolve_precision(cfg.precision, device) if cfg is not None else "fp32"
        return _shard(module, model, make_optimizer, device, sharding, precision)
    from accelerate import Accelerator
    from accelerate.utils import DistributedType

    acc = Accelerator(cpu=device.type == "cpu", mixed_precision="no")  # train.precision's autocast is the loop's
    if acc.distributed_type not in (DistributedType.MULTI_CPU, DistributedType.MULTI_GPU, DistributedType.NO):
        raise ConfigError(
            [
                f"train: accelerate is configured for {acc.distributed_type.value}; langadapt runs data parallelism "
                "(DDP) or its own sharding (train.sharding: full or hybrid): run `accelerate config` and choose "
                "multi-GPU, or FSDP with FULL_SHARD or HYBRID_SHARD"
            ]
        )
    module, optimizer = acc.prepare(module, make_optimizer(model))
    return Processes(acc.process_index, acc.num_processes, acc), module, optimizer


def mixed_precision_policy(precision: str) -> Any:
    """FSDP2's mixed precision for `train.precision` (None in fp32): bf16 (fp16) weights gathered for the passes,
    gradients reduced in fp32.

    The sharded weights, which the optimizer steps, keep their own dtype (fp32 for what trains); each
    block's weights are cast once when gathered, not by autocast at every use, and the all-gather
    moves half the bytes. Gradients are reduce-scattered in fp32, so the sum over processes loses nothing.
    """
    if precision not in ("bf16", "fp16"):
        return None
    import torch
    from torch.distributed.fsdp import MixedPrecisionPolicy

    half = torch.bfloat16 if precision == "bf16" else torch.float16
    return MixedPrecisionPolicy(param_dtype=half, reduce_dtype=torch.float32)


def _shard(
    module: "torch.nn.Module",
    model: Any,
    make_optimizer: Callable[[Any], Any],
    device: "torch.device",
    sharding: str,
    precision: str = "fp32",
) -> tuple[Processes, "torch.nn.Module", Any]:
    """Shard each transformer block, then the loss module (the root) over a 1-D (full) or 2-D (hybrid) mesh,
    with `mixed_precision_policy(precision)`, then give every process rank 0's weights.

    Processes > 0 built the model on the meta device (`loads_on_meta`): after sharding they
    allocate their shards and receive rank 0's tensors one at a time, each keeping its slice
    (`set_model_state_dict` with `broadcast_from_rank0`); buffers (rotary frequencies) come
    whole, and so does rank 0's choice of causal loss, which a model without weights could not test.
    """
    import warnings

    import torch
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    # the per-token loss is a view of the objective's output; FSDP warns that an in-place op on
    # it would skip the backward all-gather, and the loop only ever reads it out of place
    warnings.filterwarnings("ignore", message="FSDP2-wrapped module .* returned a view tensor")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():  # env:// rendezvous, as torchrun and accelerate launch set it up
        dist.init_process_group(backend="cpu:gloo,cuda:nccl" if device.type == "cuda" else "gloo")
    world = dist.get_world_size()
    if sharding == "hybrid":
        node = node_size() or world  # checked before any work: the processes split into whole nodes
        mesh = init_device_mesh(device.type, (world // node, node), mesh_dim_names=("replicate", "shard"))
    else:
        mesh = init_device_mesh(device.type, (world,), mesh_dim_names=("shard",))
    policy = mixed_precision_policy(precision)
    options = {"mp_policy": policy} if policy is not None else {}
    rank = dist.get_rank()
    full = dict(module.state_dict(keep_vars=True)) if rank == 0 else {}  # references: nothing is copied
    for block in transformer_blocks(model):
        fully_shard(block, mesh=mesh, **options)
    fully_shard(module, mesh=mesh, **options)  # the root: every parameter not in a block, gathered once per step
    _from_rank0(module, model, full, device)
    procs = Processes(rank, world, mesh=mesh, sharding=sharding)
    return procs, module, make_optimizer(model)


def _from_rank0(module: "torch.nn.Module", model: Any, full: dict[str, Any], device: "torch.device") -> None:
    """Rank 0's weights, buffers and loss choice on every process whose model was built on the meta device.

    Collective: every process calls it; it does nothing when no process has a meta tensor.
    """
    import torch
    import torch.distributed as dist
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    from langadapt.train.objectives import FUSED_ATTRIBUTE

    on_meta = any(t.is_meta for t in [*module.parameters(), *module.buffers()])
    flag = torch.tensor([int(on_meta)], device=device)
    dist.all_reduce(flag)
    if not int(flag.item()):
        return
    if on_meta:
        module.to_empty(device=device)  # storage for this process's shards (and buffers), values to come
    names = dict(module.named_parameters())  # a weight shared by two modules (tied rows) under its first name only
    full = {k: v.detach() for k, v in full.items() if k in names}
    options = StateDictOptions(full_state_dict=True, broadcast_from_rank0=True, strict=False)
    set_model_state_dict(module, full, options=options)
    for buffer in module.buffers():  # unsharded; the rotary embedding's frequencies are not in a state dict
        dist.broadcast(buffer.data, src=0)
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    choice = [inner.__dict__.get(FUSED_ATTRIBUTE)]
    dist.broadcast_object_list(choice, src=0)
    if choice[0] is not None:
        inner.__dict__[FUSED_ATTRIBUTE] = choice[0]
