"""The masked-LM objective: dynamic whole-word masking, loss only at the masked positions.

Masking is drawn afresh for every batch (dynamic masking, as in RoBERTa) from torch's
global RNG, which the checkpoints save, so a resumed run masks exactly as an
uninterrupted one. Words are the tokenizer's own (its pre-tokenizer's split,
`models.encoder.WordBoundaries`, the same as the within-word pseudo-likelihood), never read
from the model name; special tokens (the document separators included) are never masked. The head runs only at
the masked positions: with a 250k-token vocabulary it is most of the cost of a step.

The loop calls objectives as `(model, input_ids)`; what masking needs from the tokenizer
and the recipe is a `MaskingPlan` attached to the model with `attach_masking`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from langadapt.errors import ConfigError
from langadapt.models.encoder import WordBoundaries, mlm_logits_at, special_token_mask
from langadapt.train.objectives import OBJECTIVES

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedTokenizerBase

    from langadapt.train.config import TrainConfig

PLAN_ATTRIBUTE = "_langadapt_masking"


@dataclass
class MaskingPlan:
    """What dynamic masking needs, computed once from the tokenizer."""

    mask_id: int
    words: WordBoundaries | None  # None: single tokens (train.mlm_whole_word: false)
    special: "torch.Tensor"  # (vocab,) bool: never masked
    replacements: "torch.Tensor"  # ids a masked position may be replaced with at random (no special tokens)
    probability: float
    mask_ratio: float
    random_ratio: float

    @classmethod
    def from_tokenizer(cls, tok: "PreTrainedTokenizerBase", cfg: "TrainConfig") -> "MaskingPlan":
        import torch

        if tok.mask_token_id is None:
            raise ConfigError(["train.objective mlm: the tokenizer has no mask token; is the base model an encoder?"])
        special = special_token_mask(tok)
        return cls(
            mask_id=int(tok.mask_token_id),
            words=WordBoundaries(tok) if cfg.mlm_whole_word else None,
            special=special,
            replacements=torch.nonzero(~special).squeeze(1),
            probability=cfg.mlm_probability,
            mask_ratio=cfg.mlm_mask_ratio,
            random_ratio=cfg.mlm_random_ratio,
        )

    @property
    def scheme(self) -> str:
        return self.words.family if self.words is not None else "token"

    def word_ids(self, ids: "torch.Tensor") -> tuple["torch.Tensor", "torch.Tensor"]:
        """(word index per position, never-masked positions); word indices count from 0 within each row."""
        import torch

        beyond = ids >= len(self.special)  # ids beyond the tokenizer (unused rows of the embedding matrix)
        special = self.special[ids.clamp(max=len(self.special) - 1)] | beyond
        if self.words is None:
            return torch.arange(ids.shape[1]).expand_as(ids).clone(), special
        return self.words.word_ids(ids), special

    def choose(self, ids: "torch.Tensor") -> "torch.Tensor":
        """Which positions to predict: whole words, about `probability` of each row's maskable tokens."""
        import torch

        words, special = self.word_ids(ids)
        chosen = torch.zeros_like(special)
        for row in range(ids.shape[0]):
            maskable = ~special[row]
            n_tokens = int(maskable.sum())
            if n_tokens == 0:
                continue
            budget = max(1, round(self.probability * n_tokens))
            row_words = words[row][maskable]
            unique, sizes = torch.unique(row_words, return_counts=True)
            order = torch.randperm(len(unique))
            # take words in random order while they fit the budget (always at least one)
            fits = torch.cumsum(sizes[order], 0) <= budget
            fits[0] = True
            picked = unique[order[fits]]
            chosen[row] = maskable & torch.isin(words[row], picked)
        return chosen

    def corrupt(self, ids: "torch.Tensor", chosen: "torch.Tensor") -> "torch.Tensor":
        """80/10/10 (configurable): the mask token, a random token, or the token itself."""
        import torch

        roll = torch.rand(ids.shape)
        to_mask = chosen & (roll < self.mask_ratio)
        to_random = chosen & (roll >= self.mask_ratio) & (roll < self.mask_ratio + self.random_ratio)
        out = ids.clone()
        out[to_mask] = self.mask_id
        picks = torch.randint(len(self.replacements), (int(to_random.sum()),))
        out[to_random] = self.replacements[picks]
        return out


def attach_masking(model: Any, plan: MaskingPlan) -> None:
    """Give the mlm objective its plan; stored on the innermost model so wrappers do not hide it."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    setattr(inner, PLAN_ATTRIBUTE, plan)


def _plan_of(model: Any) -> MaskingPlan:
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    plan = getattr(inner, PLAN_ATTRIBUTE, None)
    if plan is None:
        raise ConfigError(["train.objective mlm: no masking plan attached to the model (call attach_masking first)"])
    return plan


@OBJECTIVES.register(
    "mlm",
    help="masked language modelling for encoders: dynamic whole-word masking (train.mlm_*), loss at masked positions",
)
def mlm_loss(model: Any, input_ids: "torch.Tensor") -> "torch.Tensor":
    """Cross-entropy at the masked positions, averaged per sequence: shape (batch, 1)."""
    import torch
    import torch.nn.functional as F

    plan = _plan_of(model)
    device = input_ids.device
    ids = input_ids.cpu()  # masking draws from the CPU RNG, which checkpoints save: resumes mask identically
    chosen = plan.choose(ids)
    corrupted = plan.corrupt(ids, chosen).to(device)
    chosen = chosen.to(device)
    logits = mlm_logits_at(model, corrupted, None, chosen)  # packed rows: no padding to mask
    loss = F.cross_entropy(logits.float(), input_ids[chosen], reduction="none")
    rows = torch.nonzero(chosen)[:, 0]
    per_row = torch.zeros(input_ids.shape[0], dtype=loss.dtype, device=device).index_add(0, rows, loss)
    counts = torch.bincount(rows, minlength=input_ids.shape[0]).clamp(min=1)
    return (per_row / counts).unsqueeze(1)
