"""What `train.eval_every` measures on held-out text during training, per language.

A causal LM: bits per byte of a fixed packed sample, through the training engine. A masked LM
has no next-token likelihood: pseudo bits per byte of held-out documents, the eval stage's
encoder metric (`scoring/pppl.py`), its head run through the engine's wrapper.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Callable

from langadapt.devices import autocast
from langadapt.models.encoder import mlm_logits_at
from langadapt.scoring.pppl import score as pppl_score
from langadapt.train.config import TrainConfig
from langadapt.train.data import TokenStream, heldout_documents, heldout_sample
from langadapt.train.objectives import is_masked

if TYPE_CHECKING:
    import torch

    from langadapt.recipe import Recipe


# what train.eval_every measures, by its key in metrics.jsonl (followed by _<language>)
HELDOUT_METRICS = {"bpb": "bits per byte", "pseudo_bpb": "pseudo bits per byte"}


def heldout_metric(objective: str) -> str:
    """Bits per byte for a causal LM; a masked LM has no next-token likelihood: pseudo bits per byte."""
    return "pseudo_bpb" if is_masked(objective) else "bpb"


def heldout_samples(streams: dict[str, TokenStream], cfg: TrainConfig) -> dict[str, Any]:
    """Per language (a stream's language, else its key), a fixed sample of its held-out documents: packed rows (`data.heldout_sample`), or for
    mlm the documents themselves, which pseudo-likelihood scores as the eval stage does."""
    if is_masked(cfg.objective):
        return {
            s.language or key: (s.tok, heldout_documents(s.heldout, s.tok, cfg.eval_tokens, s.heldout_ids))
            for key, s in streams.items()
            if s.heldout
        }
    return {
        s.language or key: heldout_sample(s.heldout, s.tok, s.sep_id, s.seq_len, cfg.eval_tokens, s.heldout_ids)
        for key, s in streams.items()
        if s.heldout
    }


def heldout_pseudo_bpb(
    loss_module: Any,
    model: Any,
    samples: dict[str, tuple[Any, list[str]]],
    recipe: "Recipe",
    device: "torch.device",
    precision: str,
) -> dict[str, float]:
    """Pseudo bits per byte of each language's held-out documents: the eval stage's encoder metric
    (`scoring/pppl.py`, with eval.context_length and eval.stride), the head run through the
    training engine's wrapper so that sharded weights are gathered."""
    out = {}

    def logits_at(_: Any, ids: "torch.Tensor", mask: "torch.Tensor | None", select: "torch.Tensor") -> "torch.Tensor":
        with autocast(device, precision):
            return loss_module(
                ids.to(device),
                call=mlm_logits_at,
                attention_mask=None if mask is None else mask.to(device),
                select=select.to(device),
            )

    loss_module.eval()
    for lang, (tok, texts) in samples.items():
        r = pppl_score(model, tok, texts, recipe.eval, desc=f"held-out {lang}", logits_at=logits_at)
        out[f"pseudo_bpb_{lang}"] = round(r["bits_per_byte"], 4)
    loss_module.train()
    return out


def heldout_bpb(
    loss_module: Any,
    samples: dict[str, Any],
    micro: int,
    device: "torch.device",
    precision: str,
    positions: Callable[["torch.Tensor"], dict[str, Any]],
) -> dict[str, float]:
    """Bits per byte of each language's held-out sample under the current weights (read from the device once
    per language)."""
    import torch

    out = {}
    loss_module.eval()
    with torch.no_grad():
        for lang, (rows, counted, n_bytes) in samples.items():
            counted = counted.to(device)
            sums = []
            for s in range(0, len(rows), micro):
                ids = rows[s : s + micro].to(device)
                with autocast(device, precision):
                    losses = loss_module(ids, **positions(ids))
                sums.append((losses.float() * counted[s : s + micro]).sum())
            nats = sum(torch.stack(sums).tolist())
            out[f"bpb_{lang}"] = round(nats / math.log(2) / max(1, n_bytes), 4)
    loss_module.train()
    return out
