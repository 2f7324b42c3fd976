"""How the processes of one training run share the work: the contract every engine follows.

`Processes` is one process alone, DDP (through accelerate) or FSDP2 (PyTorch's `fully_shard`);
`zero.ZeroProcesses` is DeepSpeed ZeRO; `distributed.setup` picks one. The loop calls the
same methods whatever the engine:

| method    | one process       | DDP (accelerate)                  | FSDP2                                         | DeepSpeed ZeRO                                   |
|-----------|-------------------|-----------------------------------|-----------------------------------------------|--------------------------------------------------|
| `no_sync` | nothing           | `accelerator.no_sync` but on the last micro-batch | `set_requires_gradient_sync(last)` | the engine's gradient-accumulation boundary, set before each backward |
| `backward`| `loss.backward()` (fp16: scaled) | the same; DDP reduces on the last micro-batch | the same; gradients reduce-scattered | `engine.backward(loss)` |
| `step`    | unscale, clip, step, zero | the same                  | the same, the norm over every shard           | `engine.step()`: clips, steps and zeroes          |
| `gather`  | the tensor itself | `accelerator.gather`              | `all_gather` over the process group           | `all_gather` on the engine's device              |
| `release` | nothing           | nothing                           | `reshard()` the root after a pass without gradients | nothing (ZeRO-3 releases its own)          |

Checkpoints hold full tensors whatever the engine (`full_state` / `load_full_state`), in the
layout an unsharded run writes, so a run resumes with any process count or engine; the full
tensors exist on rank 0 alone, which writes them.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    import torch


def launched_world_size() -> int:
    """Processes started by `accelerate launch` / `torchrun` (1 when run directly)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def node_size() -> int | None:
    """Processes per node (LOCAL_WORLD_SIZE, which torchrun and accelerate launch set); None when unknown."""
    value = os.environ.get("LOCAL_WORLD_SIZE", "")
    return int(value) if value.isdigit() and int(value) > 0 else None


def launched_rank() -> int:
    """This process's rank among those `accelerate launch` / `torchrun` started (0 when run directly)."""
    return int(os.environ.get("RANK", "0"))


def is_main_process() -> bool:
    return launched_rank() == 0


def env_flag(name: str) -> bool:
    return os.environ.get(name, "").lower() in ("1", "true", "yes")


def loss_module(model: Any, objective: Callable[..., "torch.Tensor"]) -> "torch.nn.Module":
    import torch

    class LossModule(torch.nn.Module):
        """The model plus its objective: forward(input_ids, **kw) -> per-token loss."""

        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: "torch.Tensor", call: Any = None, **kwargs: Any) -> "torch.Tensor":
            """The objective's loss, or `call(model, input_ids, **kwargs)` (held-out scoring) through the same wrapper."""
            return (call or objective)(self.model, input_ids, **kwargs)

    return LossModule()


@dataclass
class Processes:
    """This process's place among the processes of one training run, and how they share the work.

    `accelerator` is set under DDP, `mesh` under sharding; neither for a single process.
    """

    rank: int = 0
    world_size: int = 1
    accelerator: Any = None
    mesh: Any = None
    sharding: str = "none"

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def share(self, rows: int) -> slice:
        """The rows of a global batch this process trains on."""
        per = rows // self.world_size
        return slice(self.rank * per, (self.rank + 1) * per)

    def no_sync(self, module: Any, last: bool) -> Any:
        """Skip the gradient reduction on every micro-batch but the last of a step."""
        if self.mesh is not None:
            module.set_requires_gradient_sync(last)  # FSDP2's no_sync: gradients accumulate unreduced
            return contextlib.nullcontext()
        if self.accelerator is None or last:
            return contextlib.nullcontext()
        return self.accelerator.no_sync(module)

    def backward(self, loss: "torch.Tensor", scaler: Any) -> None:
        """Gradients of one micro-batch's loss, accumulated (fp16: scaled)."""
        (scaler.scale(loss) if scaler else loss).backward()

    def step(self, opt: Any, scaler: Any, params: list["torch.nn.Parameter"], grad_clip: float) -> None:
        """One optimizer step on the accumulated gradients: unscale (fp16), clip, step, zero them."""
        if scaler:
            scaler.unscale_(opt)
        if grad_clip > 0:
            self.clip_grad_norm(params, grad_clip)
        if scaler:
            scaler.step(opt)
            scaler.update()
        else:
            opt.step()
        opt.zero_grad(set_to_none=True)

    def gather(self, t: "torch.Tensor") -> "torch.Tensor":
        """The tensor of every process, concatenated in rank order (rows of the global batch), on the device:
        the caller reads it once."""
        if self.accelerator is not None:
            return self.accelerator.gather(t.to(self.accelerator.device))
        if self.world_size == 1:
            return t
        import torch
        import torch.distributed as dist

        parts = [torch.empty_like(t) for _ in range(self.world_size)]
        dist.all_gather(parts, t.contiguous())
        return torch.cat(parts)

    def wait(self) -> None:
        if self.accelerator is not None:
            self.accelerator.wait_for_everyone()
        elif self.world_size > 1:
            import torch.distributed as dist

            dist.barrier()

    def release(self, module: Any) -> None:
        """Return the root's gathered weights to their shards after a forward pass without gradients.

        FSDP keeps a root's weights gathered from its forward pass for its backward pass; after
        an evaluation there is none, and until it reshards its parameters are not the
        optimizer's (sharded) ones.
        """
        if self.mesh is not None:
            module.reshard()

    def clip_grad_norm(self, params: list["torch.nn.Parameter"], max_norm: float) -> None:
        """Clip the gradient norm of the whole model (sharded gradients: the norm over every process's shards)."""
        import torch

        if self.mesh is None:
            torch.nn.utils.clip_grad_norm_(params, max_norm)
            return
        from torch.distributed.tensor import DTensor

        total = torch.nn.utils.get_total_norm([p.grad for p in params if p.grad is not None])
        if isinstance(total, DTensor):
            total = total.full_tensor()  # the shards' partial norms, reduced over the mesh
        torch.nn.utils.clip_grads_with_norm_(params, max_norm, total)

    def full_state(self, model: Any, opt: Any) -> tuple[dict[str, "torch.Tensor"], dict[str, Any]]:
        """Trainable weights and optimizer state as full CPU tensors for rank 0 ({} elsewhere).

        Under sharding every process must call it (the shards are gathered, one tensor at a time,
        into rank 0's CPU memory alone: torch's full state dict with `cpu_offload` keeps nothing on
        the other processes); the optimizer state comes back in the layout of an unsharded
        `optimizer.state_dict()` (parameters by index), so checkpoints do not depend on how they were written.
        """
        if self.mesh is None:
            return (_trainable_state(model), _to_cpu(opt.state_dict())) if self.is_main else ({}, {})
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            get_model_state_dict,
            get_optimizer_state_dict,
        )

        options = StateDictOptions(full_state_dict=True, cpu_offload=True, ignore_frozen_params=True)
        names = _trainable_names(model)  # a tied weight is stored once, under its first name
        weights = {k: v for k, v in get_model_state_dict(model, options=options).items() if k in names}
        optimizer = get_optimizer_state_dict(model, opt, options=options)
        return (weights, _by_index(optimizer, model, opt)) if self.is_main else ({}, {})

    def load_full_state(
        self, model: Any, opt: Any, weights: dict[str, "torch.Tensor"], optimizer: dict[str, Any]
    ) -> None:
        """Restore what `full_state` returned; under sharding rank 0's copy is sent to the others."""
        import torch

        if self.mesh is None:
            params = dict(model.named_parameters())
            with torch.no_grad():
                for name, value in weights.items():
                    params[name].copy_(value)
            opt.load_state_dict(optimizer)  # moves the optimizer state to each parameter's device
            return
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            set_model_state_dict,
            set_optimizer_state_dict,
        )

        options = StateDictOptions(full_state_dict=True, broadcast_from_rank0=True, strict=False)
        set_model_state_dict(model, weights if self.is_main else {}, options=options)
        by_name = _by_name(optimizer, model, opt) if self.is_main else {}
        set_optimizer_state_dict(model, opt, by_name, options=options)

    def copy_weights(self, sharded: Any, model: Any) -> None:
        """Write the trained weights of a sharded copy into `model` on every process (all must call it)."""
        from torch.distributed.tensor import DTensor

        restore_trained(model, {n: p.full_tensor() if isinstance(p, DTensor) else p for n, p in trainable(sharded)})


def training_copy(model: Any) -> Any:
    """A copy of `model` for an engine that shards it in place, at the memory of one model.

    Frozen weights are new parameters over the same storage (an engine replaces a
    parameter's data, it does not write into it), and `model`'s own trainable weights are
    released until `restore_trained` gives it the trained ones: otherwise every process
    would hold a whole extra set of weights beside its shards, which is what sharding saves.
    """
    import copy

    import torch

    memo = {id(p): torch.nn.Parameter(p.data, requires_grad=False) for p in model.parameters() if not p.requires_grad}
    trained = copy.deepcopy(model, memo)
    for p in model.parameters():
        if p.requires_grad:
            p.data = torch.empty(0, dtype=p.dtype, device=p.device)
    return trained


def trainable(model: Any) -> Any:
    return ((n, p) for n, p in model.named_parameters() if p.requires_grad)


def restore_trained(model: Any, values: Any) -> None:
    """Give `model`'s released trainable weights (see `training_copy`) their trained values, by name."""
    params = dict(model.named_parameters())
    for name, value in values.items():
        p = params[name]
        p.data = value.detach().to(p.device, p.dtype).clone()


def _trainable_names(model: Any) -> list[str]:
    return [n for n, p in model.named_parameters() if p.requires_grad]


def _trainable_state(model: Any) -> dict[str, "torch.Tensor"]:
    return {n: p.detach().to("cpu", copy=True).contiguous() for n, p in model.named_parameters() if p.requires_grad}


def _to_cpu(obj: Any) -> Any:
    import torch

    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj


def _param_order(model: Any, opt: Any) -> list[str]:
    """Parameter names in the order `optimizer.state_dict()` numbers them (group by group)."""
    name_of = {id(p): n for n, p in model.named_parameters()}
    return [name_of[id(p)] for group in opt.param_groups for p in group["params"]]


def _by_index(state: dict[str, Any], model: Any, opt: Any) -> dict[str, Any]:
    """An optimizer state keyed by parameter name (FSDP's full state) -> keyed by index (torch's own layout)."""
    index = {n: i for i, n in enumerate(_param_order(model, opt))}
    return {
        "state": {index[n]: s for n, s in state["state"].items()},
        "param_groups": [{**g, "params": [index[n] for n in g["params"]]} for g in state["param_groups"]],
    }


def _by_name(state: dict[str, Any], model: Any, opt: Any) -> dict[str, Any]:
    """The inverse of `_by_index`."""
    names = _param_order(model, opt)
    return {
        "state": {names[i]: s for i, s in state["state"].items()},
        "param_groups": [{**g, "params": [names[i] for i in g["params"]]} for g in state["param_groups"]],
    }
