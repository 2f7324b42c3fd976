"""Extension of WordPiece tokenizers (BERT, mBERT, MiniLM): a new token is a word start or a
'##' continuation added to the vocabulary.

WordPiece encodes a word greedily, longest known prefix first, then the longest known
'##' continuation, and so on; a word it cannot spell becomes [UNK] as a whole. A new entry
therefore wins wherever it is the longest match, which is why `extend.py` checks the
replay language: an added 'ind' would turn English 'in ##deed' into 'ind ##eed'.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from langadapt.tokenizer.state import Candidate, extendable_copy


def candidates(
    base_state: dict[str, Any], target_state: dict[str, Any], limit: int
) -> tuple[list["Candidate"], Counter]:
    """Target entries the base lacks, in the target's order (alphabet, then merges by frequency)."""
    base = base_state["model"]["vocab"]
    specials = {t["content"] for t in target_state.get("added_tokens", [])}
    prefix = target_state["model"].get("continuing_subword_prefix") or "##"
    out, skipped = [], Counter()
    for token, _ in sorted(target_state["model"]["vocab"].items(), key=lambda ti: ti[1]):
        if token in base or token in specials:
            continue
        if token == prefix:
            skipped["only_continuation_prefix"] += 1
            continue
        out.append(Candidate(token, (), None))
        if len(out) >= limit:
            break
    return out, skipped


def with_tokens(base_state: dict[str, Any], cands: list["Candidate"]) -> dict[str, Any]:
    """A copy of the base state with the candidates added (ids after the last one)."""
    state, next_id = extendable_copy(base_state)
    state["model"]["vocab"].update((c.token, next_id + i) for i, c in enumerate(cands))
    return state
