"""Extension of BPE tokenizers (byte-level like GPT-2/Llama-3/SmolLM, or SentencePiece-BPE like
Llama-2/Gemma as stored in tokenizer.json): a new token enters as a merge appended after the
base merges.

The target BPE's merges are walked in order; for each token the base lacks, the base merges
(plus those added so far) segment it: if that gives two pieces, the merge of those two
pieces makes it a candidate (see `candidate_merges` for why not the target's own merge).
Appended merges have the lowest priority, so text the base tokenises well is rarely
touched; `extend.py` drops the ones that still touch the replay language.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from langadapt.tokenizer.state import Candidate, extendable_copy


def _merge_pair(m: Any) -> tuple[str, str]:
    if isinstance(m, str):
        a, b = m.split(" ", 1)
        return a, b
    return m[0], m[1]


def merge_ranks(state: dict[str, Any]) -> dict[tuple[str, str], int]:
    return {_merge_pair(m): i for i, m in enumerate(state["model"]["merges"])}


def bpe_pieces(word: str, ranks: dict[tuple[str, str], int]) -> list[str]:
    """Apply BPE merges (lower rank first) to one pre-token; the reference algorithm."""
    parts = list(word)
    while len(parts) > 1:
        rank, i = min((ranks.get((parts[j], parts[j + 1]), _NO_MERGE), j) for j in range(len(parts) - 1))
        if rank == _NO_MERGE:
            break
        pair, merged = (parts[i], parts[i + 1]), []
        j = 0
        while j < len(parts):
            if j < len(parts) - 1 and (parts[j], parts[j + 1]) == pair:
                merged.append(parts[j] + parts[j + 1])
                j += 2
            else:
                merged.append(parts[j])
                j += 1
        parts = merged
    return parts


_NO_MERGE = 1 << 62


def merges_for(base_state: dict[str, Any], tokens: list[str], limit: int) -> tuple[list[tuple[str, str, str]], Counter]:
    """Merges (x, y, token) that make each of `tokens` reachable from the base, in the given order.

    A target BPE builds a token along its own merge path, which the base merges often
    pre-empt (base 'nd'+'ipo' where the target merged 'ndi'+'po'), so appending the
    target's merge would never fire. Instead each token's merge is taken from how the
    base (plus merges added so far) actually segments it: a token that segments into
    exactly two pieces gets the merge of those two pieces. Tokens listed earlier can be
    the pieces of later ones, so list shorter tokens first.
    """
    vocab = set(base_state["model"]["vocab"])
    vocab |= {t["content"] for t in base_state.get("added_tokens", [])}
    ranks = merge_ranks(base_state)
    out: list[tuple[str, str, str]] = []
    skipped: Counter = Counter()
    for new in tokens:
        if new in vocab:
            continue
        pieces = bpe_pieces(new, ranks)
        if len(pieces) != 2 or pieces[0] not in vocab or pieces[1] not in vocab:
            skipped["needs_more_than_one_merge" if len(pieces) > 2 else "unspellable"] += 1
            continue
        out.append((pieces[0], pieces[1], new))
        vocab.add(new)
        ranks[(pieces[0], pieces[1])] = len(ranks)
        if len(out) >= limit:
            break
    return out, skipped


def candidates(
    base_state: dict[str, Any], target_state: dict[str, Any], limit: int
) -> tuple[list["Candidate"], Counter]:
    """New tokens of the target BPE, each with the one merge that makes it from base pieces."""
    tokens = ["".join(_merge_pair(m)) for m in target_state["model"]["merges"]]
    merges, skipped = merges_for(base_state, tokens, limit)
    return [Candidate(new, (a, b), (a, b)) for a, b, new in merges], skipped


def with_merges(base_state: dict[str, Any], merges: list[tuple[str, str, str]]) -> dict[str, Any]:
    """A copy of the base tokenizer state with `merges` appended and their tokens added."""
    state, next_id = extendable_copy(base_state)
    model = state["model"]
    as_string = bool(model["merges"]) and isinstance(model["merges"][0], str)
    for a, b, new in merges:
        model["vocab"][new] = next_id
        next_id += 1
        model["merges"].append(f"{a} {b}" if as_string else [a, b])
    return state


def with_tokens(base_state: dict[str, Any], cands: list["Candidate"]) -> dict[str, Any]:
    return with_merges(base_state, [(c.data[0], c.data[1], c.token) for c in cands])
