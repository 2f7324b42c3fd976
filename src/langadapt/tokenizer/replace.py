"""Method `replace`: a tokenizer trained on the target corpus replaces the base vocabulary.

The FOCUS / WECHSEL recipe: specialise the vocabulary to the target language instead of
growing it. The new tokenizer has the base's family, normaliser, pre-tokeniser, decoder
and special tokens (trained by `train_new_from_iterator`, which keeps all of them and
re-points the post-processor at the new special-token ids). Tokens both vocabularies share
keep their rows: the init stage copies rows by token string.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from langadapt.tokenizer.extend import train_target
from langadapt.tokenizer.methods import TOKENIZER_METHODS, MethodInputs
from langadapt.tokenizer.state import (
    check_extendable,
    family_of,
    special_tokens,
    tokenizer_from_state,
    tokenizer_state,
    vocab_of,
)

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

log = logging.getLogger(__name__)


def with_byte_pieces(state: dict[str, Any]) -> dict[str, Any]:
    """Add the 256 '<0xNN>' pieces a byte-fallback model needs when training left some out."""
    model = state["model"]
    if not model.get("byte_fallback"):
        return state
    vocab = vocab_of(state)
    missing = [f"<0x{b:02X}>" for b in range(256) if f"<0x{b:02X}>" not in vocab]
    if model["type"] == "Unigram":
        low = min(s for _, s in model["vocab"]) - 1.0
        model["vocab"].extend([p, low] for p in missing)
    else:
        next_id = max(vocab.values()) + 1
        for i, p in enumerate(missing):
            model["vocab"][p] = next_id + i
    return state


def train_replacement(
    base: "PreTrainedTokenizerBase", texts: list[str], vocab_size: int, min_frequency: int, out: Path
) -> "PreTrainedTokenizerBase":
    """A tokenizer of the base's family trained on `texts`, with the base's special tokens, saved in `out`."""
    check_extendable(base)
    target = train_target(base, texts, vocab_size, min_frequency)
    state = with_byte_pieces(tokenizer_state(target))
    tok = tokenizer_from_state(target, state, out)
    missing = special_tokens(base) - set(tok.get_vocab())
    if missing:  # train_new_from_iterator keeps them; this guards the contract the init stage relies on
        raise RuntimeError(f"replace lost special tokens {sorted(missing)}")
    return tok


@TOKENIZER_METHODS.register(
    "replace",
    help="a tokenizer of the base's family trained on the target corpus replaces the vocabulary; shared tokens "
    "keep their rows",
)
def replace(inp: MethodInputs) -> dict[str, Any]:
    cfg = inp.recipe.tokenizer
    tok = train_replacement(inp.base, inp.target_texts, cfg.target_vocab_size, cfg.min_frequency, inp.out)
    state = tokenizer_state(tok)
    old = inp.base.get_vocab()
    new = tok.get_vocab()
    fresh = sorted(i for t, i in new.items() if t not in old)
    log.info(
        "replaced a %d-token %s vocabulary by %d tokens, %d of them shared with the base",
        len(old),
        family_of(tokenizer_state(inp.base)),
        len(new),
        len(new) - len(fresh),
    )
    return {
        "family": family_of(state),
        "requested_new_tokens": 0,
        "added_tokens": len(fresh),
        "shared_tokens": len(new) - len(fresh),
        "removed_tokens": sum(1 for t in old if t not in new),
        "new_token_ids": fresh,
    }
