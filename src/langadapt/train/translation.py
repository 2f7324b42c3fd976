"""The pair objectives: translation language modelling for encoders (tlm) and decoders (translation-clm).

tlm (Conneau & Lample 2019, XLM): a sentence and its translation side by side in one
sequence, masked as mlm masks (whole words, 80/10/10, `train.mlm_*`) over both sides at once,
so a masked word can be recovered from its translation. Positions restart at the second
side, the two sides attend to each other (and to nothing else of the row), and models with
two token types mark the second side with type 1 (BERT; XLM-R has one type, so both sides
read type 0). Rows of monolingual text in the same batch (replay, and the target's share
`1 - train.parallel_ratio`) are masked as plain mlm.

translation-clm: the decoder's counterpart, a pair written as `<eos>first<sep>second`
(`train.pair_separator` between the sides, a newline by default), the next-token loss on
the second side and its end (`train.translation_loss_on: target`) or on both sides
(`both`). With `train.pair_direction: both` either language comes first, so the model
learns to translate both ways.

Both take each row's segments (`train/pairs.py`), which the training loop draws with the row.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from langadapt.models.encoder import position_offset
from langadapt.train.mlm import MaskingPlan, masked_loss
from langadapt.train.objectives import OBJECTIVES, clm_loss
from langadapt.train.pairs import predicted_counts, segment_inputs, segment_positions

if TYPE_CHECKING:
    import torch

TRANSLATION_LOSS_ON = ("target", "both")


@OBJECTIVES.register(
    "tlm",
    help="translation LM for encoders: a pair (train.parallel) in one sequence, masked over both sides, positions "
    "restarting at the second, token types per side where the model has two; mixed with mlm rows (train.parallel_ratio)",
)
def tlm_loss(
    model: Any,
    input_ids: "torch.Tensor",
    segments: "torch.Tensor",
    *,
    plan: MaskingPlan,
    words: "torch.Tensor | None" = None,
    longest_word: int | None = None,
    seed: int | None = None,
) -> "torch.Tensor":
    """Cross-entropy at the masked positions of pairs and monolingual rows alike, per row: shape (batch, 1)."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    inputs = segment_inputs(model, segments, position_offset(inner.config))
    return masked_loss(model, input_ids, plan, words, longest_word, seed, inputs)


@OBJECTIVES.register(
    "translation-clm",
    help="translation LM for decoders: pairs (train.parallel) as <eos>first<sep>second, the loss on the second side "
    "(train.translation_loss_on) ; mixed with clm rows (train.parallel_ratio)",
)
def translation_clm_loss(
    model: Any, input_ids: "torch.Tensor", segments: "torch.Tensor", *, loss_on: str = "target"
) -> "torch.Tensor":
    """The next-token loss over the predictions that count (`pairs.predicted_counts`), per row: (batch, 1)."""
    sides = "second" if loss_on == "target" else "both"
    loss = clm_loss(model, input_ids, segment_positions(segments, restart_second=False))
    counted = predicted_counts(segments, sides)
    return ((loss * counted).sum(dim=1) / counted.sum(dim=1).clamp(min=1)).unsqueeze(1)


class PairObjective:
    """A pair objective with its settings bound: what the training loop calls.

    `target_stream` names the stream of pairs and `target_share` the share of the target's rows
    drawn from it; `host_inputs` (tlm) is mlm's word boundaries.
    """

    def __init__(self, name: str, target_stream: str, target_share: float, **bound: Any) -> None:
        self.name, self.target_stream, self.target_share, self.bound = name, target_stream, target_share, bound
        plan = bound.get("plan")
        if plan is not None:
            self.host_inputs = plan.host_inputs

    def __call__(
        self,
        model: Any,
        input_ids: "torch.Tensor",
        segments: "torch.Tensor",
        words: "torch.Tensor | None" = None,
        longest_word: int | None = None,
        seed: int | None = None,
    ) -> "torch.Tensor":
        if self.name == "tlm":
            return tlm_loss(model, input_ids, segments, words=words, longest_word=longest_word, seed=seed, **self.bound)
        return translation_clm_loss(model, input_ids, segments, **self.bound)
