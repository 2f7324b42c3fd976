"""What a token spells: its text, read from the token string as its tokenizer family writes it.

Token strings are in the family's alphabet: byte-level BPE spells every byte as one
printable character ('Ġ' is the space byte, 'Ã©' the two bytes of 'é'), SentencePiece
marks a space with '▁' and spells characters it lacks as byte pieces '<0xE2>', and
WordPiece marks a piece that continues a word with '##'. (A token's pieces under the old
tokenizer, `decompose`, live with the method contract in `methods.py`.)
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

_BYTE_PIECE = re.compile(r"<0x([0-9A-Fa-f]{2})>")


@dataclass(frozen=True)
class Spelling:
    """What marks words and bytes in one tokenizer's token strings."""

    byte_level: bool  # tokens spell bytes in the byte-level alphabet (GPT-2, RoBERTa, Llama 3, SmolLM)
    space_mark: str  # the character that stands for a space (SentencePiece '▁'), or ''
    prefix: str  # the model's mark of a piece that continues a word (WordPiece '##'), or ''
    suffix: str  # the model's mark of a piece that ends a word (BPE '</w>'), or ''
    byte_pieces: bool  # '<0xNN>' tokens stand for one byte (SentencePiece byte fallback)
    specials: frozenset[str]  # special tokens: they spell no text


def spelling_of(tokenizer: Any) -> Spelling:
    """The spelling rules of a fast tokenizer, read from its tokenizer.json."""
    state = json.loads(tokenizer.backend_tokenizer.to_str())
    model = state.get("model") or {}
    parts = {k: state.get(k) for k in ("normalizer", "pre_tokenizer", "decoder")}
    found: dict[str, dict[str, Any]] = {}
    _collect(parts, found)
    byte_level = "ByteLevel" in found
    mark = ""
    if "Metaspace" in found:
        mark = found["Metaspace"].get("replacement") or "▁"
    elif not byte_level and "▁" in json.dumps(parts, ensure_ascii=False):
        mark = "▁"  # a SentencePiece model whose normalizer writes spaces as '▁' (Llama 2, Gemma)
    specials = set(getattr(tokenizer, "all_special_tokens", []) or [])
    specials |= {t.content for t in getattr(tokenizer, "added_tokens_decoder", {}).values() if t.special}
    return Spelling(
        byte_level=byte_level,
        space_mark=mark,
        prefix=model.get("continuing_subword_prefix") or ("##" if model.get("type") == "WordPiece" else ""),
        suffix=model.get("end_of_word_suffix") or "",
        byte_pieces=bool(model.get("byte_fallback")),
        specials=frozenset(specials),
    )


def _collect(node: Any, found: dict[str, dict[str, Any]]) -> None:
    if isinstance(node, dict):
        if isinstance(node.get("type"), str):
            found.setdefault(node["type"], node)
        for value in node.values():
            _collect(value, found)
    elif isinstance(node, list):
        for value in node:
            _collect(value, found)


def surface(spelling: Spelling, token: str) -> str:
    """The text a token spells, lower-cased, without word markers or surrounding spaces.

    Byte-level tokens are decoded from the byte alphabet to bytes and then as UTF-8; bytes
    of a character the token holds only in part spell no character and are left out (a
    token of such bytes only, like a SentencePiece byte piece above 0x7F, spells ''). Only
    the marks this tokenizer's family uses are removed: '##' only where the model continues
    words with it, '▁' only where it stands for a space. Special tokens spell ''.
    """
    if token in spelling.specials:
        return ""
    if spelling.prefix and token.startswith(spelling.prefix) and len(token) > len(spelling.prefix):
        token = token[len(spelling.prefix) :]
    if spelling.suffix and token.endswith(spelling.suffix) and len(token) > len(spelling.suffix):
        token = token[: -len(spelling.suffix)]
    if spelling.byte_level:
        text = _from_byte_alphabet(token)
    elif spelling.byte_pieces and _BYTE_PIECE.fullmatch(token):
        text = bytes([int(token[3:5], 16)]).decode("utf-8", errors="ignore")
    else:
        text = token.replace(spelling.space_mark, " ") if spelling.space_mark else token
    return text.strip().lower()


def surfaces(tokenizer: Any, tokens: list[str]) -> list[str]:
    """`surface` of each token under one tokenizer."""
    spelling = spelling_of(tokenizer)
    return [surface(spelling, t) for t in tokens]


def _from_byte_alphabet(token: str) -> str:
    """A byte-level token's text; a token with characters outside the byte alphabet is an added
    token stored as plain text."""
    table = _byte_table()
    if not all(c in table for c in token):
        return token
    return bytes(table[c] for c in token).decode("utf-8", errors="ignore")


@lru_cache(maxsize=1)
def _byte_table() -> dict[str, int]:
    """Character -> byte of the byte-level alphabet (the one transformers' GPT-2 tokenizer defines)."""
    from transformers.models.gpt2.tokenization_gpt2 import bytes_to_unicode

    return {c: b for b, c in bytes_to_unicode().items()}
