"""Method `translit`: transliteration merge (TransMI, Liu et al., 2024).

Every vocabulary entry is romanised with uroman; a romanised form the vocabulary lacks
becomes a new token, so a model that knows a language in one script can read it written in
Latin letters (as much of the web writes Hindi, Russian or Amharic). Tokens whose
romanisations coincide are merged into one new token. `tokenizer/token_sources.json` maps
each new token to the old ids it comes from, with `init_hint` (min, mean or max of their
rows), and the init stage builds the new rows from those rows instead of decomposing the
romanised spelling.

How a new token enters the vocabulary follows the family: a scored piece (Unigram: the
best score among its sources), a vocabulary entry (WordPiece), or for BPE the merges that
build it from what the base already spells (left to right; intermediate tokens that this
needs are added too and initialised by the init method like any new token).
"""

from __future__ import annotations

import logging
from collections import Counter
from functools import lru_cache
from typing import Any

from langadapt.errors import MissingDependencyError
from langadapt.rundir import write_json
from langadapt.tokenizer.bpe import bpe_pieces, merge_ranks, with_merges
from langadapt.tokenizer.methods import TOKENIZER_METHODS, MethodInputs
from langadapt.tokenizer.state import (
    check_extendable,
    family_of,
    special_tokens,
    tokenizer_from_state,
    tokenizer_state,
    vocab_of,
)

log = logging.getLogger(__name__)
HINT_KEY = "init_hint"


@lru_cache(maxsize=1)
def romaniser() -> Any:
    """uroman's romaniser (loading its tables takes seconds, so once per process)."""
    try:
        import uroman
    except ImportError:
        raise MissingDependencyError("uroman", "tokenizer.method translit", "pip install uroman==1.3.1.1") from None
    return uroman.Uroman()


class Spelling:
    """Between a token string and its text, for one family: word markers and byte-level symbols."""

    def __init__(self, state: dict[str, Any]):
        from transformers.models.gpt2.tokenization_gpt2 import bytes_to_unicode

        self.family = family_of(state)
        self.to_char = bytes_to_unicode()
        self.to_byte = {c: b for b, c in self.to_char.items()}
        self.prefix = (state["model"].get("continuing_subword_prefix") or "##") if self.family == "wordpiece" else ""

    def split(self, token: str) -> tuple[str, str] | None:
        """(marker, text) of a token, or None when it is not whole characters (a byte piece)."""
        if self.family == "bpe-bytelevel":
            try:
                text = bytes(self.to_byte[c] for c in token).decode("utf-8")
            except (KeyError, UnicodeDecodeError):
                return None
            core = text.lstrip(" ")
            return text[: len(text) - len(core)], core
        if token.startswith("<0x") and token.endswith(">"):
            return None
        marker = self.prefix if self.prefix and token.startswith(self.prefix) else ""
        if self.family != "wordpiece" and token.startswith("▁"):
            marker = "▁"
        return marker, token[len(marker) :]

    def join(self, marker: str, text: str) -> str:
        if self.family == "bpe-bytelevel":
            return "".join(self.to_char[b] for b in (marker + text).encode("utf-8"))
        return marker + text


def romanised_tokens(state: dict[str, Any], specials: set[str]) -> tuple[dict[str, list[int]], Counter]:
    """New token -> old ids it romanises, for every token whose romanisation the vocabulary lacks."""
    rom = romaniser()
    spell = Spelling(state)
    vocab = vocab_of(state)
    sources: dict[str, list[int]] = {}
    skipped: Counter = Counter()
    for token, i in sorted(vocab.items(), key=lambda ti: ti[1]):
        if token in specials:
            continue
        parts = spell.split(token)
        if parts is None or not parts[1]:
            skipped["not_whole_characters"] += 1
            continue
        marker, text = parts
        romanised = rom.romanize_string(text)
        if romanised == text:
            continue  # already Latin (or nothing to romanise)
        if not romanised.strip() or any(c.isspace() for c in romanised):
            skipped["romanised_to_nothing_or_several_words"] += 1
            continue
        new = spell.join(marker, romanised)
        if new in vocab:
            skipped["romanised_form_already_in_vocabulary"] += 1
            continue
        if new == HINT_KEY:
            skipped["reserved_name"] += 1
            continue
        sources.setdefault(new, []).append(i)
    return sources, skipped


def _bpe_chain(state: dict[str, Any], tokens: list[str]) -> tuple[list[tuple[str, str, str]], Counter]:
    """Merges that build each token left to right from how the base (plus merges so far) segments it."""
    vocab = set(vocab_of(state))
    ranks = merge_ranks(state)
    merges: list[tuple[str, str, str]] = []
    skipped: Counter = Counter()
    for token in sorted(tokens, key=lambda t: (len(t), t)):
        if token in vocab:
            continue
        pieces = bpe_pieces(token, ranks)
        if any(p not in vocab for p in pieces):
            skipped["unspellable"] += 1
            continue
        acc = pieces[0]
        for p in pieces[1:]:
            new = acc + p
            if new not in vocab:
                merges.append((acc, p, new))
                ranks[(acc, p)] = len(ranks)
                vocab.add(new)
            acc = new
    return merges, skipped


def with_romanised(state: dict[str, Any], sources: dict[str, list[int]]) -> tuple[dict[str, Any], Counter]:
    """The base state with the romanised tokens added in the family's own way."""
    import json

    family = family_of(state)
    if family.startswith("bpe"):
        merges, skipped = _bpe_chain(state, list(sources))
        return with_merges(state, merges), skipped
    state = json.loads(json.dumps(state))
    model = state["model"]
    if family == "unigram":
        scores = [s for _, s in model["vocab"]]
        model["vocab"].extend([t, max(scores[i] for i in ids)] for t, ids in sources.items())
    else:
        next_id = max(vocab_of(state).values()) + 1
        for k, t in enumerate(sources):
            model["vocab"][t] = next_id + k
    return state, Counter()


@TOKENIZER_METHODS.register(
    "translit",
    help="TransMI: add uroman romanisations of the vocabulary as new tokens, initialised from their source tokens",
)
def translit(inp: MethodInputs) -> dict[str, Any]:
    cfg = inp.recipe.tokenizer
    check_extendable(inp.base)
    state = tokenizer_state(inp.base)
    sources, skipped = romanised_tokens(state, special_tokens(inp.base))
    new_state, not_built = with_romanised(state, sources)
    tok = tokenizer_from_state(inp.base, new_state, inp.out)
    vocab = tok.get_vocab()
    built = {t: ids for t, ids in sources.items() if t in vocab}
    old = inp.base.get_vocab()
    fresh = sorted(i for t, i in vocab.items() if t not in old)
    write_json(inp.out / "token_sources.json", {HINT_KEY: cfg.translit_init, **built})
    log.info(
        "translit: %d romanised tokens from %d source tokens, %d tokens added in all",
        len(built),
        sum(len(ids) for ids in built.values()),
        len(fresh),
    )
    return {
        "family": family_of(state),
        "requested_new_tokens": 0,
        "added_tokens": len(fresh),
        "romanised_tokens": len(built),
        "intermediate_tokens": len(fresh) - len(built),
        "merged_sources": sum(1 for ids in built.values() if len(ids) > 1),
        "skipped": dict(skipped + not_built),
        "new_token_ids": fresh,
    }
