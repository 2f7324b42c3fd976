"""A fast tokenizer's state (its tokenizer.json) and the tokenizer families langadapt can adapt.

Every method that changes a vocabulary works on this JSON state rather than on a
tokenizer object: the `tokenizers` library has no API to add a scored Unigram piece or a
BPE merge, but it loads any consistent state. A family is decided by the model type and,
for BPE, by the pre-tokeniser (byte-level BPE spells text in 256 byte symbols; SentencePiece
BPE spells it in characters with '▁' for spaces).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from langadapt.errors import ConfigError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

FAMILIES = ("bpe-bytelevel", "bpe-sentencepiece", "unigram", "wordpiece")
# slow-tokenizer files that would disagree with a rewritten tokenizer.json
_STALE_FILES = ("tokenizer.model", "vocab.json", "merges.txt", "vocab.txt", "sentencepiece.bpe.model", "spiece.model")


class Candidate(NamedTuple):
    """A token `extend` may add, as every family's editing module takes it."""

    token: str  # in the tokenizer's own alphabet ('▁ndipo', 'Ġndipo', '##po')
    needs: tuple[str, ...]  # tokens this one is built from (BPE merge parts); only new ones matter
    data: Any  # family payload: the BPE merge pair, the Unigram score, nothing for WordPiece


def extendable_copy(base_state: dict[str, Any]) -> tuple[dict[str, Any], int]:
    """A deep copy of a tokenizer state, and the first id after its vocabulary and its added tokens.

    Every family's `with_tokens` gives new tokens ids from there, so old ids never move.
    """
    state = json.loads(json.dumps(base_state))
    vocab = state["model"]["vocab"]
    ids = range(len(vocab)) if isinstance(vocab, list) else vocab.values()  # Unigram: a list of [piece, score]
    return state, max([*ids, *(t["id"] for t in state.get("added_tokens", []))], default=-1) + 1


def tokenizer_state(tok: "PreTrainedTokenizerBase") -> dict[str, Any]:
    """The tokenizer.json state of a fast tokenizer; a ConfigError for slow-only tokenizers."""
    if not getattr(tok, "is_fast", False):
        raise ConfigError(["tokenizer: the base tokenizer has no fast (tokenizer.json) version; use method: keep"])
    return json.loads(tok.backend_tokenizer.to_str())


def _has_bytelevel(node: Any) -> bool:
    if isinstance(node, dict):
        if node.get("type") == "ByteLevel":
            return True
        return any(_has_bytelevel(v) for v in node.values())
    if isinstance(node, list):
        return any(_has_bytelevel(v) for v in node)
    return False


def family_of(state: dict[str, Any]) -> str:
    """One of FAMILIES, or the model type when langadapt cannot adapt it (e.g. 'WordLevel')."""
    kind = state["model"]["type"]
    if kind == "BPE":
        return "bpe-bytelevel" if _has_bytelevel(state.get("pre_tokenizer")) else "bpe-sentencepiece"
    return {"Unigram": "unigram", "WordPiece": "wordpiece"}.get(kind, kind)


def check_extendable(tok: "PreTrainedTokenizerBase", config: Any = None) -> None:
    """Raise a ConfigError unless the tokenizer methods can rewrite this base tokenizer.

    Every family in FAMILIES is accepted; `config` (the recipe's tokenizer section), when
    given, adds the checks that need the base vocabulary (trimming must keep every special
    token).
    """
    state = tokenizer_state(tok)
    family = family_of(state)
    if family not in FAMILIES:
        raise ConfigError(
            [
                f"tokenizer: the base tokenizer's model is {family}; extend, replace, trim and translit support "
                "BPE (byte-level or SentencePiece), SentencePiece Unigram and WordPiece. Use tokenizer.method: keep"
            ]
        )
    if config is not None and config.method == "trim" and config.trim_vocab_size:
        specials = special_tokens(tok)
        if config.trim_vocab_size < len(specials):
            raise ConfigError(
                [
                    f"tokenizer.trim_vocab_size: {config.trim_vocab_size} would drop special tokens; the base "
                    f"tokenizer has {len(specials)} ({', '.join(sorted(specials))}), so use at least {len(specials)}"
                ]
            )
        floor = len(specials | alphabet(state)) if config.trim_keep_alphabet else len(specials)
        if config.trim_vocab_size < floor:
            raise ConfigError(
                [
                    f"tokenizer.trim_vocab_size: {config.trim_vocab_size} is below the {floor} special and "
                    "single-character tokens that are always kept; raise it or set trim_keep_alphabet: false"
                ]
            )


_BYTE_PIECE = re.compile(r"<0x[0-9A-F]{2}>")


def alphabet(state: dict[str, Any]) -> set[str]:
    """Single-character tokens (WordPiece: also their '##' forms) and byte-fallback pieces '<0xNN>'."""
    prefix = state["model"].get("continuing_subword_prefix") or ""
    out = set()
    for token in vocab_of(state):
        core = token[len(prefix) :] if prefix and token.startswith(prefix) and len(token) > len(prefix) else token
        if len(core) == 1 or _BYTE_PIECE.fullmatch(token):
            out.add(token)
    return out


def special_tokens(tok: "PreTrainedTokenizerBase") -> set[str]:
    """Every special token: the named ones (bos, eos, unk, pad, mask, ...) and added special tokens."""
    names = set(tok.all_special_tokens)
    names |= {t.content for t in tok.added_tokens_decoder.values() if t.special}
    return names


def vocab_of(state: dict[str, Any]) -> dict[str, int]:
    """token -> id for every family's model state, added tokens included."""
    model = state["model"]
    if model["type"] == "Unigram":
        vocab = {piece: i for i, (piece, _) in enumerate(model["vocab"])}
    else:
        vocab = dict(model["vocab"])
    for t in state.get("added_tokens", []):
        vocab.setdefault(t["content"], t["id"])
    return vocab


def tokenizer_from_state(
    base: "PreTrainedTokenizerBase", state: dict[str, Any], folder: Path
) -> "PreTrainedTokenizerBase":
    """Save `base` to `folder` with its tokenizer.json replaced by `state`, and load it back.

    The special-token configuration (bos/eos/pad/mask names, chat template) comes from the
    base; the slow-tokenizer files are removed, since they would describe the old vocabulary.
    """
    from transformers import AutoTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    base.save_pretrained(folder)
    for stale in _STALE_FILES:
        (folder / stale).unlink(missing_ok=True)
    (folder / "tokenizer.json").write_text(json.dumps(state, ensure_ascii=False), encoding="utf-8")
    config_file = folder / "tokenizer_config.json"
    if config_file.is_file():  # its copy of the added tokens must carry the (possibly renumbered) ids
        config = json.loads(config_file.read_text(encoding="utf-8"))
        keys = ("content", "lstrip", "normalized", "rstrip", "single_word", "special")
        config["added_tokens_decoder"] = {
            str(t["id"]): {k: t[k] for k in keys if k in t} for t in state.get("added_tokens", [])
        }
        config_file.write_text(json.dumps(config, ensure_ascii=False, indent=2), encoding="utf-8")
    return AutoTokenizer.from_pretrained(folder)
