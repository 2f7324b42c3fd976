"""Extension of SentencePiece Unigram tokenizers (XLM-R, mT5, Glot500): a new token enters as a
scored piece.

A Unigram tokenizer picks, per pre-token, the segmentation with the highest sum of piece
scores (log-probabilities). A new piece wins on its own span when its score beats the best
base segmentation of that span; it should also carry the weight a Unigram trained on the
target text gives it. So each piece's score is the larger of

- its target score, moved onto the base's scale (the median base-minus-target score
  difference over the pieces both vocabularies share), and
- the base's best segmentation score of the same string plus a small margin,

and the usage count in `extend.py` keeps only pieces that then actually win.
"""

from __future__ import annotations

import json
import statistics
from collections import Counter
from typing import Any

from langadapt.errors import StageError
from langadapt.tokenizer.state import Candidate, extendable_copy

MARGIN = 0.5  # log-probability a new piece must gain over the base segmentation of its own span
UNK_PENALTY = 10.0  # what the tokenizers library charges an unknown character below the lowest score


def segmentation_score(base_state: dict[str, Any]) -> Any:
    """A function piece -> score of the base's best segmentation of that string."""
    from tokenizers import Tokenizer

    model = Tokenizer.from_str(json.dumps(base_state)).model
    scores = [s for _, s in base_state["model"]["vocab"]]
    unk_id = base_state["model"].get("unk_id")
    unk_score = min(scores) - UNK_PENALTY

    def score(piece: str) -> float:
        return sum(unk_score if t.id == unk_id else scores[t.id] for t in model.tokenize(piece))

    return score


def candidates(
    base_state: dict[str, Any], target_state: dict[str, Any], limit: int
) -> tuple[list["Candidate"], Counter]:
    """Target pieces the base lacks, most probable first, with scores on the base's scale."""
    base_scores = dict(base_state["model"]["vocab"])
    specials = {t["content"] for t in target_state.get("added_tokens", [])}
    specials |= {t["content"] for t in base_state.get("added_tokens", [])}
    target = [(p, s) for p, s in target_state["model"]["vocab"] if p not in specials and p]
    shared = [base_scores[p] - s for p, s in target if p in base_scores]
    shift = statistics.median(shared) if shared else 0.0
    seg = segmentation_score(base_state)
    out, skipped = [], Counter()
    for piece, s in sorted(target, key=lambda ps: -ps[1]):
        if piece in base_scores:
            continue
        if piece.strip("▁") == "":
            skipped["only_word_boundary"] += 1
            continue
        out.append(Candidate(piece, (), max(s + shift, seg(piece) + MARGIN)))
        if len(out) >= limit:
            break
    return out, skipped


def with_tokens(base_state: dict[str, Any], cands: list["Candidate"]) -> dict[str, Any]:
    """A copy of the base state with the candidates appended as scored pieces (ids after the last one)."""
    state, next_id = extendable_copy(base_state)
    vocab = state["model"]["vocab"]
    if next_id != len(vocab):
        raise StageError(
            "tokenizer: this Unigram tokenizer has added tokens after its piece table, so new pieces cannot "
            "take the next ids without moving them",
            hint="use tokenizer.method: replace or keep",
        )
    vocab.extend([c.token, float(c.data)] for c in cands)
    return state
