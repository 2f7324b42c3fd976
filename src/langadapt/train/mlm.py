"""The masked-LM objective: dynamic whole-word masking, loss only at the masked positions.

Masking is drawn afresh for every batch (dynamic masking, as in RoBERTa). Words are the
tokenizer's own (its pre-tokenizer's split, `models.encoder.WordBoundaries`), never read
from the model name; special tokens (the document separators included) are never masked.
Whole words are taken in random order while they fit the budget of `mlm_probability` of a
row's tokens, skipping any word too long for what is left, as the field's whole-word
collators do. The head runs only at the masked positions: with a 250k-token vocabulary it
is most of the cost of a step. Packed documents are kept apart (`train.packed_attention:
document`): each attends only to itself, and its positions start from 0.

Every process masks its own rows differently: each batch's masking draws from a generator
seeded with the next number of torch's global CPU stream (the same on every process, and
saved in checkpoints) and the process's rank, so a resumed run masks exactly as an
uninterrupted one and no two ranks share a mask.

The loop calls objectives as `(model, input_ids, position_ids=None)`; the flow builds this
one with its `MaskingPlan` bound (`masked_lm(plan)`).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from langadapt.errors import ConfigError
from langadapt.models.encoder import WordBoundaries, document_inputs, mlm_logits_at, special_token_mask
from langadapt.train.objectives import OBJECTIVES

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedTokenizerBase

    from langadapt.train.config import TrainConfig

_RANK_STRIDE = 0x9E3779B97F4A7C15  # an odd 64-bit constant: ranks land far apart in seed space


@dataclass
class MaskingPlan:
    """What dynamic masking needs, computed once from the tokenizer, and the process it masks for."""

    mask_id: int
    words: WordBoundaries | None  # None: single tokens (train.mlm_whole_word: false)
    special: "torch.Tensor"  # (vocab,) bool: never masked
    replacements: "torch.Tensor"  # ids a masked position may be replaced with at random (no special tokens)
    probability: float
    mask_ratio: float
    random_ratio: float
    rank: int = 0

    @classmethod
    def from_tokenizer(cls, tok: "PreTrainedTokenizerBase", cfg: "TrainConfig", rank: int = 0) -> "MaskingPlan":
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
            rank=rank,
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

    def generator(self) -> "torch.Generator":
        """This batch's masking generator: the next number of the global CPU stream, combined with the rank."""
        import torch

        draw = int(torch.randint(0, 2**62, ()).item())
        return torch.Generator().manual_seed((draw + self.rank * _RANK_STRIDE) % 2**64)

    def choose(self, ids: "torch.Tensor", generator: "torch.Generator | None" = None) -> "torch.Tensor":
        """Which positions to predict: whole words in random order while they fit `probability` of each row."""
        import torch

        words, special = self.word_ids(ids)
        chosen = torch.zeros_like(special)
        for row in range(ids.shape[0]):
            maskable = ~special[row]
            n_tokens = int(maskable.sum())
            if n_tokens == 0:
                continue
            budget = max(1, round(self.probability * n_tokens))
            unique, sizes = torch.unique(words[row][maskable], return_counts=True)
            order = torch.randperm(len(unique), generator=generator).tolist()
            sizes_l, picked, used = sizes.tolist(), [], 0
            for k in order:  # a word too long for what is left is skipped; shorter ones after it still fit
                if used + sizes_l[k] <= budget:
                    picked.append(k)
                    used += sizes_l[k]
                    if used == budget:
                        break
            if not picked:  # every word is longer than the budget: one word still
                picked = order[:1]
            chosen[row] = maskable & torch.isin(words[row], unique[picked])
        return chosen

    def corrupt(
        self, ids: "torch.Tensor", chosen: "torch.Tensor", generator: "torch.Generator | None" = None
    ) -> "torch.Tensor":
        """80/10/10 (configurable): the mask token, a random token, or the token itself."""
        import torch

        roll = torch.rand(ids.shape, generator=generator)
        to_mask = chosen & (roll < self.mask_ratio)
        to_random = chosen & (roll >= self.mask_ratio) & (roll < self.mask_ratio + self.random_ratio)
        out = ids.clone()
        out[to_mask] = self.mask_id
        picks = torch.randint(len(self.replacements), (int(to_random.sum()),), generator=generator)
        out[to_random] = self.replacements[picks]
        return out

    def draw(self, ids: "torch.Tensor") -> tuple["torch.Tensor", "torch.Tensor"]:
        """(positions to predict, corrupted ids) for a batch of CPU ids, from this batch's generator."""
        generator = self.generator()
        chosen = self.choose(ids, generator)
        return chosen, self.corrupt(ids, chosen, generator)


@OBJECTIVES.register(
    "mlm",
    help="masked language modelling for encoders: dynamic whole-word masking (train.mlm_*), loss at masked positions",
)
def mlm_loss(
    model: Any, input_ids: "torch.Tensor", position_ids: "torch.Tensor | None" = None, *, plan: MaskingPlan
) -> "torch.Tensor":
    """Cross-entropy at the masked positions, averaged per sequence: shape (batch, 1).

    `position_ids` restarting at 0 per packed document keep the documents apart (attention
    within each, positions from its start); without them a row is one sequence.
    """
    import torch
    import torch.nn.functional as F

    device = input_ids.device
    chosen, corrupted = plan.draw(input_ids.cpu())  # masking draws on the CPU: see the module docstring
    chosen = chosen.to(device)
    packed = document_inputs(model, position_ids) if position_ids is not None else {}
    # packed rows hold no padding: the only attention mask is the one between documents
    logits = mlm_logits_at(
        model, corrupted.to(device), packed.get("attention_mask"), chosen, packed.get("position_ids")
    )
    loss = F.cross_entropy(logits.float(), input_ids[chosen], reduction="none")
    rows = torch.nonzero(chosen)[:, 0]
    per_row = torch.zeros(input_ids.shape[0], dtype=loss.dtype, device=device).index_add(0, rows, loss)
    counts = torch.bincount(rows, minlength=input_ids.shape[0]).clamp(min=1)
    return (per_row / counts).unsqueeze(1)


def masked_lm(plan: MaskingPlan) -> Callable[..., "torch.Tensor"]:
    """The mlm objective with its plan bound: what the training loop calls."""
    return functools.partial(mlm_loss, plan=plan)
