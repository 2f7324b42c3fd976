"""Training objectives: (model, input_ids) -> per-token loss, registered by name.

The loss has shape (batch, seq_len - 1): one value per predicted position, so the loop can
report it per language and average it as it likes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from langadapt.registry import Registry

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel

Objective = Callable[["PreTrainedModel", "torch.Tensor"], "torch.Tensor"]
OBJECTIVES: Registry[Objective] = Registry("objectives")


@OBJECTIVES.register("clm", help="causal language modelling: predict each next token")
def clm_loss(model: "PreTrainedModel", input_ids: "torch.Tensor") -> "torch.Tensor":
    import torch
    import torch.nn.functional as F

    logits = model(input_ids=input_ids).logits
    if logits.dtype != torch.float32:
        logits = logits.float()
    # shift the targets, not the logits: slicing (batch, seq, vocab) logits would copy them
    targets = torch.full_like(input_ids, -100)
    targets[:, :-1] = input_ids[:, 1:]
    loss = F.cross_entropy(logits.view(-1, logits.shape[-1]), targets.view(-1), reduction="none", ignore_index=-100)
    return loss.view(input_ids.shape)[:, :-1]
