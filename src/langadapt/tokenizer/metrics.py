"""Tokenizer metrics that stay comparable across vocabularies."""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


def tokenizer_metrics(tok: "PreTrainedTokenizerBase", texts: list[str]) -> dict[str, float]:
    """Tokenizer quality on `texts`, comparable across vocabularies."""
    if not texts:
        return {}
    enc = tok(texts, add_special_tokens=False)["input_ids"]
    n_tokens = sum(len(ids) for ids in enc)
    words = Counter(w for t in texts for w in t.split())
    n_words = sum(words.values())
    n_bytes = sum(len(t.encode("utf-8")) for t in texts)
    unk = tok.unk_token_id
    n_unk = sum(ids.count(unk) for ids in enc) if unk is not None else 0
    # a word is "continued" when it takes more than one token (in running-text position)
    uniq = list(words)
    pieces = tok([" " + w for w in uniq], add_special_tokens=False)["input_ids"]
    lone_space = len(tok(" ", add_special_tokens=False)["input_ids"])
    continued = sum(words[w] for w, ids in zip(uniq, pieces) if len(ids) - _space_cost(ids, tok, lone_space) > 1)
    return {
        "tokens": n_tokens,
        "words": n_words,
        "fertility": n_tokens / max(n_words, 1),
        "bytes_per_token": n_bytes / max(n_tokens, 1),
        "chars_per_token": sum(len(t) for t in texts) / max(n_tokens, 1),
        "continued_word_ratio": continued / max(n_words, 1),
        "unk_rate": n_unk / max(n_tokens, 1),
    }


def _space_cost(ids: list[int], tok: "PreTrainedTokenizerBase", lone_space: int) -> int:
    """1 if the leading space became a token of its own (SentencePiece '▁' alone), else 0."""
    if not ids or lone_space == 0:
        return 0
    return 1 if tok.convert_ids_to_tokens(ids[0]) in ("▁", " ", "Ġ") else 0
