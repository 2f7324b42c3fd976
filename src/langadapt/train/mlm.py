"""The masked-LM objective: dynamic whole-word masking, loss only at the masked positions.

Masking is drawn afresh for every batch (dynamic masking, as in RoBERTa). Words are the
tokenizer's own (its pre-tokenizer's split, `models.encoder.WordBoundaries`), never read
from the model name; special tokens (the document separators included) are never masked.
Whole words are taken in random order while they fit the budget of `mlm_probability` of a
row's tokens, skipping any word too long for what is left, as the field's whole-word
collators do. The head runs only at (about) the masked positions: with a 250k-token
vocabulary it is most of the cost of a step. Packed documents are kept apart
(`train.packed_attention: document`): each attends only to itself, and its positions start
from 0.

Only the word boundaries need the host (the tokenizer reads text): the training loop
computes them with each batch in its data thread (`MaskedLM.host_inputs`) and sends them
with the ids. The masking itself is drawn on the batch's device, for all rows at once, and
nothing about it is read back, so the host never waits for the device.

Every process masks its own rows differently, and a resumed run masks exactly as an
uninterrupted one: in training each micro-batch's masking draws from a generator on the
device seeded from the run's seed, the step and the micro-batch's first row
(`loop.micro_batch_seed`), with the process's rank folded in. Called on its own, the
objective seeds it with the next number of torch's global CPU stream instead.

The loop calls objectives as `(model, input_ids, position_ids=None)` plus what they declare
(`seed`, and what `host_inputs` computes); the flow builds this one with its `MaskingPlan`
bound (`masked_lm(plan)`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

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
    _replacements_on: dict[Any, "torch.Tensor"] = field(default_factory=dict, init=False, repr=False, compare=False)

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

    def host_inputs(self, ids: "torch.Tensor") -> dict[str, Any]:
        """What masking reads from a batch of CPU ids that only the host can compute (the tokenizer's words).

        `words`: each position's word index within its row, -1 where it is never masked;
        `longest_word`: the most maskable tokens of one word in the batch (it bounds the work
        of `choose` and the positions the head runs at). The training loop makes them with the
        batch, in its data thread, and sends them to the device with the ids.
        """
        import torch

        words, special = self.word_ids(ids)
        words = words.masked_fill(special, -1)
        sizes = torch.zeros(ids.shape[0], ids.shape[1] + 1, dtype=torch.long).scatter_add_(1, words + 1, ~special * 1)
        return {"words": words, "longest_word": int(sizes[:, 1:].max()) if ids.numel() else 0}

    def generator(self, device: "torch.device | str" = "cpu", seed: int | None = None) -> "torch.Generator":
        """A batch's masking generator on `device`, the rank folded into its seed: `seed` (the training
        loop's: from the run's seed, the step and the batch row), else the next number of the global CPU stream."""
        import torch

        if seed is None:
            seed = int(torch.randint(0, 2**62, ()).item())
        return torch.Generator(device=device).manual_seed((seed + self.rank * _RANK_STRIDE) % 2**64)

    def choose(
        self,
        ids: "torch.Tensor",
        generator: "torch.Generator | None" = None,
        words: "torch.Tensor | None" = None,
        longest_word: int | None = None,
    ) -> "torch.Tensor":
        """Which positions to predict: whole words in random order while they fit `probability` of each row.

        Every row at once on the ids' device (`fill_rounds`); `words` and `longest_word` are
        `host_inputs(ids)`, made here when not given.
        """
        import torch

        if words is None or longest_word is None:
            host = self.host_inputs(ids.cpu())
            words, longest_word = host["words"].to(ids.device), host["longest_word"]
        rows, width = words.shape
        maskable = words >= 0
        budget = torch.round(maskable.sum(dim=1).double() * self.probability).long().clamp(min=1)  # half to even
        index = words.clamp(min=0)
        sizes = torch.zeros_like(words).scatter_add_(1, index, maskable.long())  # maskable tokens of each word index
        keys = torch.rand((rows, width), generator=generator, device=words.device, dtype=torch.float64)
        order = torch.where(sizes > 0, keys, 2.0).argsort(dim=1, stable=True)  # words in random order, then no-words
        taken = fill_rounds(sizes.gather(1, order), budget, min(longest_word, self.largest_budget(width)) + 1)
        picked = torch.zeros_like(taken).scatter_(1, order, taken)  # back to word indices
        return maskable & picked.gather(1, index)

    def largest_budget(self, width: int) -> int:
        """The budget of a row of `width` tokens none of which is special: the largest a row of that width has."""
        return max(1, round(self.probability * width))

    def most_chosen(self, width: int, longest_word: int) -> int:
        """The most positions `choose` can take in a row of `width` tokens: its largest budget, or one word."""
        return min(width, max(self.largest_budget(width), longest_word))

    def corrupt(
        self, ids: "torch.Tensor", chosen: "torch.Tensor", generator: "torch.Generator | None" = None
    ) -> "torch.Tensor":
        """80/10/10 (configurable): the mask token, a random token, or the token itself."""
        import torch

        roll = torch.rand(ids.shape, generator=generator, device=ids.device)
        to_mask = chosen & (roll < self.mask_ratio)
        to_random = chosen & (roll >= self.mask_ratio) & (roll < self.mask_ratio + self.random_ratio)
        replacements = self._on(ids.device)
        picks = torch.randint(len(replacements), ids.shape, generator=generator, device=ids.device)
        return torch.where(to_random, replacements[picks], torch.where(to_mask, self.mask_id, ids))

    def draw(
        self,
        ids: "torch.Tensor",
        seed: int | None = None,
        words: "torch.Tensor | None" = None,
        longest_word: int | None = None,
    ) -> tuple["torch.Tensor", "torch.Tensor"]:
        """(positions to predict, corrupted ids) for a batch, on its device, from this batch's generator."""
        generator = self.generator(ids.device, seed)
        chosen = self.choose(ids, generator, words, longest_word)
        return chosen, self.corrupt(ids, chosen, generator)

    def _on(self, device: "torch.device") -> "torch.Tensor":
        """The replacement ids on `device`, copied there once."""
        if device not in self._replacements_on:
            self._replacements_on[device] = self.replacements.to(device, non_blocking=True)
        return self._replacements_on[device]


def fill_in_order(sizes: list[int], budget: int) -> list[bool]:
    """The whole-word fill, one word at a time: which words (of `sizes` tokens, in the drawn order)
    are taken. A word is taken when it fits what is left of the budget; one too long is skipped
    and shorter ones after it still fit. When none fits, the first word is taken all the same."""
    taken, left = [], budget
    for size in sizes:
        taken.append(size <= left)
        left -= size if taken[-1] else 0
    if sizes and not any(taken):
        taken[0] = True
    return taken


def fill_rounds(size: "torch.Tensor", budget: "torch.Tensor", rounds: int) -> "torch.Tensor":
    """`fill_in_order` for every row at once: `size` (rows, n) in the drawn order, 0 where there is no word.

    Each round takes, among the words not yet taken that fit what is left, the longest run (in
    order) that fits together. That is the one-at-a-time fill exactly: the word that ends a run
    does not fit what is left at it, and what is left only shrinks, so it is skipped there too.
    After the first round what is left is smaller than the word that ended the run, and every
    round that ends early leaves less, so min(the longest word, the largest budget) + 1 rounds
    finish every row. No value is read by the host: the rounds are counted in advance.
    """
    import torch

    first_is_word = size[:, 0] > 0
    size = torch.where(size > 0, size, budget.max() + 1)  # no word: never fits
    taken = torch.zeros(size.shape, dtype=torch.bool, device=size.device)
    left = budget.clone()
    for _ in range(rounds):
        fits = ~taken & (size <= left[:, None])
        take = fits & (torch.cumsum(size * fits, dim=1) <= left[:, None])
        taken |= take
        left -= (size * take).sum(dim=1)
    taken[:, 0] |= (left == budget) & first_is_word  # nothing fitted: the first word all the same
    return taken


@OBJECTIVES.register(
    "mlm",
    help="masked language modelling for encoders: dynamic whole-word masking (train.mlm_*), loss at masked positions",
)
def mlm_loss(
    model: Any,
    input_ids: "torch.Tensor",
    position_ids: "torch.Tensor | None" = None,
    *,
    plan: MaskingPlan,
    words: "torch.Tensor | None" = None,
    longest_word: int | None = None,
    seed: int | None = None,
) -> "torch.Tensor":
    """Cross-entropy at the masked positions, averaged per sequence: shape (batch, 1).

    `position_ids` restarting at 0 per packed document keep the documents apart (attention
    within each, positions from its start); without them a row is one sequence. `words` and
    `longest_word` (`plan.host_inputs`) and `seed` come from the training loop; without them the
    words are read from the ids here and the seed is the next number of the global CPU stream.

    The head runs at the same number of positions in every row, the chosen ones first
    (`plan.most_chosen`, a little more than the budget): selecting exactly the chosen positions
    would need their count on the host. The others are computed and not counted.
    """
    packed = document_inputs(model, position_ids) if position_ids is not None else {}
    # packed rows hold no padding: the only attention mask is the one between documents
    return masked_loss(model, input_ids, plan, words, longest_word, seed, packed)


def masked_loss(
    model: Any,
    input_ids: "torch.Tensor",
    plan: MaskingPlan,
    words: "torch.Tensor | None",
    longest_word: int | None,
    seed: int | None,
    model_inputs: dict[str, "torch.Tensor"],
    maskable: "torch.Tensor | None" = None,
) -> "torch.Tensor":
    """The masked loss of `mlm_loss` with the model's other inputs given (`model_inputs`: attention mask,
    position ids, token types, as the caller lays the row out); shape (batch, 1). `maskable` (batch, seq),
    when given, narrows which positions may be chosen (lem: the pieces of tagged words)."""
    import torch
    import torch.nn.functional as F

    device = input_ids.device
    if words is None or longest_word is None:  # outside the training loop: the words from the ids, here
        host = plan.host_inputs(input_ids.cpu())
        words, longest_word = host["words"].to(device), host["longest_word"]
    if maskable is not None:
        words = words.masked_fill(~maskable, -1)
    chosen, corrupted = plan.draw(input_ids, seed, words, longest_word)
    rows, width = input_ids.shape
    places = torch.arange(width, device=device)
    slots = torch.where(chosen, places, places + width).topk(plan.most_chosen(width, longest_word), largest=False)
    at = slots.indices  # (rows, k): the chosen positions first
    counted = chosen.gather(1, at)
    select = (torch.arange(rows, device=device)[:, None].expand_as(at).reshape(-1), at.reshape(-1))
    extra = {k: v for k, v in model_inputs.items() if k not in ("attention_mask", "position_ids")}
    logits = mlm_logits_at(
        model, corrupted, model_inputs.get("attention_mask"), select, model_inputs.get("position_ids"), **extra
    )
    loss = F.cross_entropy(logits.float(), input_ids.gather(1, at).reshape(-1), reduction="none").view_as(at)
    loss = torch.where(counted, loss, 0.0)
    return (loss.sum(dim=1) / counted.sum(dim=1).clamp(min=1)).unsqueeze(1)


class MaskedLM:
    """The mlm objective with its plan bound: what the training loop calls.

    `host_inputs` tells the loop what to compute on the host with each batch (the words).
    """

    def __init__(self, plan: MaskingPlan) -> None:
        self.plan = plan

    def __call__(
        self,
        model: Any,
        input_ids: "torch.Tensor",
        position_ids: "torch.Tensor | None" = None,
        words: "torch.Tensor | None" = None,
        longest_word: int | None = None,
        seed: int | None = None,
    ) -> "torch.Tensor":
        return mlm_loss(
            model, input_ids, position_ids, plan=self.plan, words=words, longest_word=longest_word, seed=seed
        )

    def host_inputs(self, ids: "torch.Tensor") -> dict[str, Any]:
        return self.plan.host_inputs(ids)


def masked_lm(plan: MaskingPlan) -> MaskedLM:
    """The mlm objective with its plan bound: what the training loop calls."""
    return MaskedLM(plan)
