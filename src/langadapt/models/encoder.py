"""Masked-LM helpers shared by training (the mlm objective) and evaluation (pseudo-perplexity).

A created head for encoders that ship none, word starts read from the tokenizer itself
(SentencePiece, byte-level BPE, WordPiece, end-of-word BPE), and the head run at selected
positions only.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from langadapt.errors import ModelLoadError

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

log = logging.getLogger(__name__)


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


def word_start_table(tok: "PreTrainedTokenizerBase") -> tuple[str, list[bool]]:
    """(scheme, starts): whether each token id begins a word, read from the tokenizer itself.

    SentencePiece / Metaspace tokenizers mark word starts with '▁' (XLM-R, mT5), byte-level BPE
    with 'Ġ' (RoBERTa, GPT-2), WordPiece marks continuations with '##' (BERT), and BPE with an
    end-of-word suffix marks word ends ('</w>'). Special tokens count as word starts. Raises
    when the tokenizer uses none of these, rather than silently masking single pieces.
    """
    import json

    spec = json.loads(tok.backend_tokenizer.to_str())
    found = _find_types(spec)
    vocab = tok.convert_ids_to_tokens(list(range(len(tok))))
    special = set(tok.all_special_ids)
    model = spec.get("model", {})
    if model.get("type") == "WordPiece" or "WordPiece" in found:
        prefix = model.get("continuing_subword_prefix") or found.get("WordPiece", {}).get("prefix") or "##"
        return "wordpiece", [i in special or not t.startswith(prefix) for i, t in enumerate(vocab)]
    if "Metaspace" in found:
        mark = found["Metaspace"].get("replacement", "▁")
        return "sentencepiece", [i in special or t.startswith(mark) for i, t in enumerate(vocab)]
    if "ByteLevel" in found:
        return "bytelevel", [i in special or t.startswith("Ġ") for i, t in enumerate(vocab)]
    suffix = model.get("end_of_word_suffix")
    if suffix:  # a piece starts a word when the piece before it ended one: resolved per sequence by the caller
        return "end-of-word", [i in special or t.endswith(suffix) for i, t in enumerate(vocab)]
    raise ModelLoadError(
        "cannot tell word boundaries from this tokenizer (no Metaspace '▁', byte-level 'Ġ', WordPiece '##' "
        "or end-of-word suffix); whole-word masking needs one",
        hint="set train.mlm_whole_word: false (and eval.pppl_within_word: false) to mask single tokens",
    )


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


def word_starts(ids: "torch.Tensor", table: "torch.Tensor", scheme: str, special: "torch.Tensor") -> "torch.Tensor":
    """Per position of `ids` (batch, seq): True where a new word begins (a special token is a word of its own)."""
    import torch

    marked = table[ids]
    after_special = torch.zeros_like(marked)
    after_special[:, 1:] = special[:, :-1]
    if scheme == "end-of-word":  # the table marks word ends: a word starts after an end
        starts = torch.ones_like(marked)
        starts[:, 1:] = marked[:, :-1]
        return starts | special | after_special
    starts = marked | special | after_special
    starts[:, 0] = True
    return starts


def mlm_logits_at(
    model: Any, input_ids: "torch.Tensor", attention_mask: "torch.Tensor | None", select: "torch.Tensor"
) -> "torch.Tensor":
    """Masked-LM logits at the positions where `select` (batch, seq) is True only: (n_selected, vocab).

    The encoder runs on every position; the head (transform + vocabulary projection, the
    expensive part with a 250k vocabulary) only on the selected ones. A pre-hook on the
    head's first module gathers the selected hidden states, so wrappers (peft, adapters'
    invertible adapters on the output embeddings) still apply exactly as in a full forward.
    """
    head = _head_entry(model)

    def gather(module: Any, args: tuple[Any, ...]) -> tuple[Any, ...]:
        return (args[0][select],) + args[1:]

    handle = head.register_forward_pre_hook(gather)
    try:
        return model(input_ids=input_ids, attention_mask=attention_mask).logits
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
