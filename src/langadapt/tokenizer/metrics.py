"""Tokenizer metrics that stay comparable across vocabularies.

Per text: fertility (tokens per whitespace word), bytes and characters per token,
continued-word ratio, UNK rate and byte-fallback rate. Across languages: parity (Petrov et
al., 2023), the tokens a sentence costs over the tokens its translation costs in a
reference language; 1.0 is a fair tokenizer, 2.0 makes the target language twice as
expensive to process.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

_BYTE_PIECE = re.compile(r"<0x[0-9A-Fa-f]{2}>")


def tokenizer_metrics(tok: "PreTrainedTokenizerBase", texts: list[str]) -> dict[str, float]:
    """Tokenizer quality on `texts`, comparable across vocabularies."""
    if not texts:
        return {}
    enc = tok(texts, add_special_tokens=False, verbose=False)["input_ids"]
    n_tokens = sum(len(ids) for ids in enc)
    words = Counter(w for t in texts for w in t.split())
    n_words = sum(words.values())
    n_bytes = sum(len(t.encode("utf-8")) for t in texts)
    unk = tok.unk_token_id
    n_unk = sum(ids.count(unk) for ids in enc) if unk is not None else 0
    counts = Counter(i for ids in enc for i in ids)
    partial = byte_piece_ids(tok, list(counts))
    # a word is "continued" when it takes more than one token (in running-text position)
    uniq = list(words)
    pieces = tok([" " + w for w in uniq], add_special_tokens=False, verbose=False)["input_ids"]
    lone_space = len(tok(" ", add_special_tokens=False, verbose=False)["input_ids"])
    continued = sum(words[w] for w, ids in zip(uniq, pieces) if len(ids) - _space_cost(ids, tok, lone_space) > 1)
    return {
        "tokens": n_tokens,
        "words": n_words,
        "fertility": n_tokens / max(n_words, 1),
        "bytes_per_token": n_bytes / max(n_tokens, 1),
        "chars_per_token": sum(len(t) for t in texts) / max(n_tokens, 1),
        "continued_word_ratio": continued / max(n_words, 1),
        "unk_rate": n_unk / max(n_tokens, 1),
        "byte_fallback_rate": sum(counts[i] for i in partial) / max(n_tokens, 1),
    }


def byte_piece_ids(tok: "PreTrainedTokenizerBase", ids: list[int]) -> set[int]:
    """Ids among `ids` that stand for bytes rather than characters.

    SentencePiece byte fallback ('<0xE2>') and, in byte-level BPE, tokens whose bytes are not
    whole UTF-8 characters: both mean the vocabulary had no piece for a character.
    """
    from transformers.models.gpt2.tokenization_gpt2 import bytes_to_unicode

    to_byte = {c: b for b, c in bytes_to_unicode().items()}
    tokens = tok.convert_ids_to_tokens(ids)
    pre = tok.backend_tokenizer.pre_tokenizer
    bytelevel = pre is not None and b"ByteLevel" in pre.__getstate__()
    special, out = set(tok.all_special_ids), set()
    for i, t in zip(ids, tokens):
        if t is None or i in special:
            continue
        if _BYTE_PIECE.fullmatch(t):
            out.add(i)
        elif bytelevel and all(c in to_byte for c in t):
            try:
                bytes(to_byte[c] for c in t).decode("utf-8")
            except UnicodeDecodeError:
                out.add(i)
    return out


def parity(tok: "PreTrainedTokenizerBase", pairs: list[tuple[str, str]]) -> dict[str, float]:
    """Tokens for each target text over tokens for its reference translation.

    `parity` is the mean of the per-pair ratios (Petrov et al.); `parity_total` the ratio of
    the totals, which long pairs dominate.
    """
    if not pairs:
        return {}
    target = tok([t for t, _ in pairs], add_special_tokens=False, verbose=False)["input_ids"]
    reference = tok([r for _, r in pairs], add_special_tokens=False, verbose=False)["input_ids"]
    ratios = [len(t) / len(r) for t, r in zip(target, reference) if r]
    return {
        "pairs": len(pairs),
        "parity": sum(ratios) / max(len(ratios), 1),
        "parity_total": sum(len(t) for t in target) / max(sum(len(r) for r in reference), 1),
    }


def _space_cost(ids: list[int], tok: "PreTrainedTokenizerBase", lone_space: int) -> int:
    """1 if the leading space became a token of its own (SentencePiece '▁' alone), else 0."""
    if not ids or lone_space == 0:
        return 0
    return 1 if tok.convert_ids_to_tokens(ids[0]) in ("▁", " ", "Ġ") else 0
