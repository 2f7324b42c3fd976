"""Many processes through accelerate: DDP as `accelerate launch` / `torchrun` start it.

Every process draws the same global batch from identical streams (the replay mix and the
document order are functions of the seed and the step), keeps its own share of the rows,
and the engine averages the gradients; so the loss curve does not depend on the number of
processes, and a checkpoint written by N processes resumes with M. Only rank 0 writes.

The objective runs inside `LossModule.forward`, so the engine's wrapper sees the forward
pass it needs to synchronise gradients, whatever the objective calls inside the model.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from langadapt.errors import ConfigError

if TYPE_CHECKING:
    import torch


def launched_world_size() -> int:
    """Processes started by `accelerate launch` / `torchrun` (1 when run directly)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def _loss_module(model: Any, objective: Callable[..., "torch.Tensor"]) -> "torch.nn.Module":
    import torch

    class LossModule(torch.nn.Module):
        """The model plus its objective: forward(input_ids, **kw) -> per-token loss."""

        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: "torch.Tensor", **kwargs: Any) -> "torch.Tensor":
            return objective(self.model, input_ids, **kwargs)

    return LossModule()


@dataclass
class Processes:
    """This process's place among the processes of one training run."""

    rank: int = 0
    world_size: int = 1
    accelerator: Any = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def share(self, rows: int) -> slice:
        """The rows of a global batch this process trains on."""
        per = rows // self.world_size
        return slice(self.rank * per, (self.rank + 1) * per)

    def no_sync(self, module: Any, last: bool) -> Any:
        """Skip the gradient all-reduce on every micro-batch but the last of a step."""
        if self.accelerator is None or last:
            return contextlib.nullcontext()
        return self.accelerator.no_sync(module)

    def gather(self, t: "torch.Tensor") -> "torch.Tensor":
        """The tensor of every process, concatenated in rank order (rows of the global batch)."""
        return t if self.accelerator is None else self.accelerator.gather(t.to(self.accelerator.device)).cpu()

    def wait(self) -> None:
        if self.accelerator is not None:
            self.accelerator.wait_for_everyone()


def setup(
    model: Any, objective: Callable[..., "torch.Tensor"], optimizer: Any, device: "torch.device", rows: int, micro: int
) -> tuple[Processes, "torch.nn.Module", Any]:
    """(processes, loss module, optimizer): wrapped by accelerate when several processes run."""
    module = _loss_module(model, objective)
    world = launched_world_size()
    if world <= 1:
        return Processes(), module, optimizer
    if rows % (world * micro):
        raise ConfigError(
            [
                f"train: {rows} sequences per step do not split into {world} processes x micro-batches of {micro}; "
                "choose train.batch_size (or tokens_per_step) and micro_batch_size so that they do"
            ]
        )
    from accelerate import Accelerator
    from accelerate.utils import DistributedType

    acc = Accelerator(cpu=device.type == "cpu")
    if acc.distributed_type not in (DistributedType.MULTI_CPU, DistributedType.MULTI_GPU, DistributedType.NO):
        raise ConfigError(
            [
                f"train: accelerate is configured for {acc.distributed_type.value}; langadapt's checkpoints "
                "support data parallelism (DDP) only so far: run `accelerate config` and choose multi-GPU (DDP)"
            ]
        )
    module, optimizer = acc.prepare(module, optimizer)
    return Processes(acc.process_index, acc.num_processes, acc), module, optimizer
