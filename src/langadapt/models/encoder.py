"""Masked-LM helpers shared by training (the mlm objective) and evaluation (pseudo-perplexity).

A created head for encoders that ship none; the special tokens and the word boundaries of
a token sequence, read from the tokenizer itself; packed documents kept apart (one
attention block and restarting positions per document); and the head run at selected
positions only.
"""

from __future__ import annotations

import codecs
import functools
import logging
import re
from typing import TYPE_CHECKING, Any, Sequence

from langadapt.errors import ModelLoadError

if TYPE_CHECKING:
    import numpy as np
    import torch
    from transformers import PretrainedConfig, PreTrainedModel, PreTrainedTokenizerBase

log = logging.getLogger(__name__)

# Model types whose masked-LM class (transformers 4.57, eager and sdpa attention) takes a
# (batch, seq, seq) attention mask and explicit position ids, which is what keeps packed
# documents apart. Each is checked by a test on a tiny model of its type.
PACKED_ENCODERS = (
    "bert",
    "camembert",
    "data2vec-text",
    "electra",
    "ernie",
    "megatron-bert",
    "rembert",
    "roberta",
    "roberta-prelayernorm",
    "xlm-roberta",
    "xlm-roberta-xl",
)
# RoBERTa-style embeddings number positions from the padding index + 1
_OFFSET_POSITIONS = (
    "roberta",
    "xlm-roberta",
    "xlm-roberta-xl",
    "camembert",
    "xmod",
    "roberta-prelayernorm",
    "data2vec-text",
)


def ensure_mlm_head(model: "PreTrainedModel", missing_keys: list[str]) -> None:
    """A head absent from the checkpoint was freshly initialised: tie its decoder to the embeddings and record it."""
    prefix = model.base_model_prefix + "."
    created = any(not k.startswith(prefix) for k in missing_keys)
    if not created:
        return
    import torch

    log.info("%s has no masked-LM head: a new one was created, tied to the input embeddings", model.name_or_path)
    model.config.tie_word_embeddings = True
    model.tie_weights()
    # the same fresh head on every load (the global RNG would make every run's head differ)
    embeddings = model.get_input_embeddings().weight
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        for module in _head_entry(model).modules():
            if all(p is not embeddings for p in module.parameters(recurse=False)):
                model._init_weights(module)
    model.config.mlm_head_created = True


def special_token_mask(tok: "PreTrainedTokenizerBase") -> "torch.Tensor":
    """(len(tok),) bool: the tokenizer's special tokens (<unk> included), never masked for training."""
    import torch

    special = torch.zeros(len(tok), dtype=torch.bool)
    special[torch.tensor(sorted(set(tok.all_special_ids)), dtype=torch.long)] = True
    return special


# -- word boundaries ------------------------------------------------------------------------------

_UNKNOWN = "a"  # what <unk> is read as: a letter of the word it stands in (its characters are unknown)


class WordBoundaries:
    """Where words begin in a sequence of token ids, as the tokenizer itself splits text into words.

    A word is a pre-token of the tokenizer (its pre-tokenizer's split, which is also what
    `word_ids()` of an encoding reports), so punctuation and digits split words exactly as
    they split them for tokenization, in every family: SentencePiece Unigram or BPE
    (Metaspace '▁'), byte-level BPE (GPT-2's pattern), WordPiece ('##') and BPE with an
    end-of-word suffix. Training sees only ids (packed rows of documents), so the text is
    rebuilt from the tokens' surfaces (normalised, as the pre-tokenizer sees it) and run
    through the pre-tokenizer; without one, words are separated by spaces. `<unk>` stands
    for characters of the word it is in (XLM-R writes letters it lacks as `<unk>` inside a
    word), so it neither begins a word nor ends one. Other special tokens are words of
    their own, and a word begins after each.
    """

    def __init__(self, tok: "PreTrainedTokenizerBase") -> None:
        import json

        import numpy as np

        spec = json.loads(tok.backend_tokenizer.to_str())
        self.family, self.surfaces, self._bytes = _surfaces(tok, spec)
        self.space_first = self.family != "end-of-word"  # the family's space belongs to the word after it
        self.pre_tokenizer = tok.backend_tokenizer.pre_tokenizer
        pre = spec.get("pre_tokenizer") or {}
        if pre.get("type") == "Metaspace" and pre.get("split") is False:  # the whole text is one pre-token:
            self.pre_tokenizer = None  # words at its spaces, then
        self._special = np.zeros(len(self.surfaces), dtype=bool)
        self._special[sorted(set(tok.all_special_ids) - {tok.unk_token_id})] = True
        self._lengths = np.asarray([len(t) for t in self.surfaces], dtype=np.int64)
        # a piece of a character (byte-level BPE splits rare characters into bytes) has no text of its own
        self._whole = np.asarray([_decodes(b) for b in self._bytes or []], dtype=bool)

    def starts(self, ids: Sequence[int]) -> list[bool]:
        """Per token of `ids`: True where a word begins (the first token always)."""
        import numpy as np

        arr = np.asarray(ids, dtype=np.int64)
        out = np.ones(len(arr), dtype=bool)
        beyond = arr >= len(self.surfaces)  # ids beyond the tokenizer (unused rows of the embedding matrix)
        cuts = np.flatnonzero(beyond | self._special[np.where(beyond, 0, arr)])
        for begin, end in zip(np.concatenate([[0], cuts + 1]), np.concatenate([cuts, [len(arr)]])):
            if end > begin:
                out[begin:end] = self._run_starts(arr[begin:end])
        return out.tolist()

    def word_ids(self, ids: "torch.Tensor") -> "torch.Tensor":
        """(batch, seq) ids -> word index per position, counting from 0 in each row."""
        import torch

        starts = torch.tensor([self.starts(row) for row in ids.cpu().numpy()], dtype=torch.long)
        return torch.cumsum(starts, dim=1) - 1

    def _run_starts(self, ids: "np.ndarray") -> "np.ndarray":
        """Word starts of a run of ordinary tokens (no special token inside).

        Each token belongs to the pre-token holding its first character (or, for a space the
        pre-tokenizer drops, the pre-token after it); a word begins where that changes. A
        token that begins inside a character (byte-level) shares that character's word.
        """
        import numpy as np

        if self._bytes is not None and not self._whole[ids].all():
            first, text = self._byte_offsets(ids.tolist())
        else:
            first = np.concatenate([[0], np.cumsum(self._lengths[ids][:-1])])
            text = "".join([self.surfaces[t] for t in ids.tolist()])
        ends = np.asarray(self._pre_token_ends(text), dtype=np.int64)
        word = np.searchsorted(ends, first, side="right")
        out = np.ones(len(ids), dtype=bool)
        out[1:] = word[1:] != word[:-1]
        return out

    def _byte_offsets(self, ids: list[int]) -> tuple["np.ndarray", str]:
        """Byte-level pieces joined into text: (the character holding each token's first byte, the text)."""
        import numpy as np

        assert self._bytes is not None
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        parts: list[str] = []
        first, length = [], 0
        for t in ids:
            first.append(length)  # a pending unfinished character is the next one the text gets
            parts.append(decoder.decode(self._bytes[t]))
            length += len(parts[-1])
        parts.append(decoder.decode(b"", final=True))
        return np.asarray(first, dtype=np.int64), "".join(parts)

    def _pre_token_ends(self, text: str) -> list[int]:
        """Where each pre-token of `text` ends, in order."""
        if self.pre_tokenizer is not None:
            return [end for _, (_, end) in self.pre_tokenizer.pre_tokenize_str(text)]
        pattern = r"\s*\S+" if self.space_first else r"\S+\s*"  # whitespace-delimited words
        return [m.end() for m in re.finditer(pattern, text)]


def _surfaces(tok: "PreTrainedTokenizerBase", spec: dict[str, Any]) -> tuple[str, list[str], list[bytes] | None]:
    """(family, the text each token id stands for, its bytes for byte-level BPE), from the tokenizer's own markers."""
    found = _find_types(spec)
    model = spec.get("model", {})
    vocab = tok.convert_ids_to_tokens(list(range(len(tok))))
    unk, raw = tok.unk_token_id, None
    if model.get("type") == "WordPiece" or "WordPiece" in found:
        prefix = model.get("continuing_subword_prefix") or found.get("WordPiece", {}).get("prefix") or "##"
        family, unknown = "wordpiece", " " + _UNKNOWN  # [UNK] replaces a whole word
        surfaces = [t[len(prefix) :] if t.startswith(prefix) else " " + t for t in vocab]
    elif "Metaspace" in found:
        mark = found["Metaspace"].get("replacement", "▁")
        family, unknown = "sentencepiece", _UNKNOWN
        surfaces = [t.replace(mark, " ") for t in vocab]
    elif "ByteLevel" in found:
        family, unknown = "bytelevel", _UNKNOWN
        raw = [_UNKNOWN.encode() if i == unk else _byte_level_bytes(t) for i, t in enumerate(vocab)]
        surfaces = [b.decode("utf-8", errors="replace") for b in raw]
    elif model.get("end_of_word_suffix"):
        suffix = model["end_of_word_suffix"]
        family, unknown = "end-of-word", _UNKNOWN
        surfaces = [t[: -len(suffix)] + " " if t.endswith(suffix) else t for t in vocab]
    else:
        raise ModelLoadError(
            "cannot tell word boundaries from this tokenizer (no Metaspace '▁', byte-level 'Ġ', WordPiece '##' "
            "or end-of-word suffix); whole-word masking needs one",
            hint="set train.mlm_whole_word: false (and eval.pppl_within_word: false) to mask single tokens",
        )
    if unk is not None:
        surfaces[unk] = unknown
    return family, surfaces, raw


def _byte_level_bytes(token: str) -> bytes:
    """The bytes a byte-level token stands for (characters outside the byte alphabet, as in added tokens, as UTF-8)."""
    to_byte = _byte_alphabet()
    return b"".join(bytes([to_byte[c]]) if c in to_byte else c.encode() for c in token)


@functools.cache
def _byte_alphabet() -> dict[str, int]:
    from transformers.models.gpt2.tokenization_gpt2 import bytes_to_unicode

    return {c: b for b, c in bytes_to_unicode().items()}


def _decodes(b: bytes) -> bool:
    try:
        b.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _find_types(node: Any, found: dict[str, dict[str, Any]] | None = None) -> dict[str, dict[str, Any]]:
    """Every component type named in a tokenizer.json tree (pre-tokenizers, decoders, ...), with its settings."""
    found = {} if found is None else found
    if isinstance(node, dict):
        if isinstance(node.get("type"), str):
            found.setdefault(node["type"], node)
        for key, value in node.items():
            if key != "vocab" and key != "merges":
                _find_types(value, found)
    elif isinstance(node, list) and node and not isinstance(node[0], (str, int, float)):
        for value in node:
            _find_types(value, found)
    return found


# -- packed documents -----------------------------------------------------------------------------


def position_offset(config: "PretrainedConfig") -> int:
    """Where a model's position ids start: after the padding index for RoBERTa-style embeddings, else 0."""
    if config.model_type in _OFFSET_POSITIONS:
        return (config.pad_token_id or 0) + 1
    return 0


def document_inputs(model: Any, document_positions: "torch.Tensor") -> dict[str, "torch.Tensor"]:
    """Attention mask and position ids that keep the packed documents of each row apart.

    `document_positions` (batch, seq) restart at 0 where each document starts (see
    `train.data.document_positions`). A token attends only to the tokens of its own
    document (a (batch, seq, seq) mask, block-diagonal), and its position id is its place
    in that document plus the model's offset, exactly as if the document were alone. A row
    that holds one document gets the mask too (the same as none): asking whether every row
    does would stop the host until the device has computed the positions.
    """
    import torch

    document = torch.cumsum((document_positions == 0).long(), dim=1)
    same = (document[:, :, None] == document[:, None, :]).long()
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    return {"attention_mask": same, "position_ids": document_positions + position_offset(inner.config)}


def mlm_logits_at(
    model: Any,
    input_ids: "torch.Tensor",
    attention_mask: "torch.Tensor | None",
    select: "torch.Tensor | tuple[torch.Tensor, torch.Tensor]",
    position_ids: "torch.Tensor | None" = None,
    **extra: "torch.Tensor",
) -> "torch.Tensor":
    """Masked-LM logits at the positions where `select` (batch, seq) is True only: (n_selected, vocab).

    `extra`: further inputs of the model (token_type_ids).

    `select` may also be a pair (rows, columns) of index tensors, which selects without the host
    reading how many positions there are (a boolean mask's count is read back from the device).

    The encoder runs on every position; the head (transform + vocabulary projection, the
    expensive part with a 250k vocabulary) only on the selected ones. A pre-hook on the
    head's first module gathers the selected hidden states, so wrappers (peft, adapters'
    invertible adapters on the output embeddings) still apply exactly as in a full forward.
    """
    head = _head_entry(model)

    def gather(module: Any, args: tuple[Any, ...]) -> tuple[Any, ...]:
        return (args[0][select],) + args[1:]

    handle = head.register_forward_pre_hook(gather)
    extra = extra if position_ids is None else {**extra, "position_ids": position_ids}
    try:
        return model(input_ids=input_ids, attention_mask=attention_mask, **extra).logits
    finally:
        handle.remove()


def _head_entry(model: Any) -> Any:
    """The first module of a masked-LM head: the first child of the task model that is not the encoder body."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    body = getattr(inner, inner.base_model_prefix, None)
    for _, child in inner.named_children():
        if child is not body and any(True for _ in child.parameters()):
            return child
    raise ModelLoadError(f"{type(inner).__name__} has no masked-LM head to score with")
