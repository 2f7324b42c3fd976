"""Sentence and word representations from any layer of a decoder or an encoder.

Downstream probes, bitext retrieval and MEXA-style alignment all read hidden states, so
they share one encoder with a cache: a verse used by two tasks is run through the model
once. Decoders see the document separator first (as in training and bits per byte) and
it is left out of pooling, because its hidden state is an attention sink with a huge norm
that would swamp a mean. Encoders get their tokenizer's own special tokens, also left out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from langadapt.models.loading import doc_separator_id

if TYPE_CHECKING:
    import numpy as np
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

POOLINGS = ("mean", "last")


def is_decoder(model: "PreTrainedModel") -> bool:
    return type(model).__name__.endswith("ForCausalLM") or bool(getattr(model.config, "is_decoder", False))


def backbone(model: "PreTrainedModel") -> Any:
    """The transformer without its LM head: hidden states are all the tasks need."""
    return getattr(model, model.base_model_prefix, model)


def n_layers(model: "PreTrainedModel") -> int:
    return int(model.config.num_hidden_layers)


def layer_index(model: "PreTrainedModel", layer: str) -> int:
    """'middle', 'last' or an integer (0 = embeddings, negative counts from the top) -> index into hidden states."""
    n = n_layers(model)
    if layer == "middle":
        return (n + 1) // 2
    if layer == "last":
        return n
    i = int(layer)
    return i if i >= 0 else n + 1 + i


def pool(states: Any, real: Any, pooling: str) -> Any:
    """(layers, batch, tokens, hidden) -> (layers, batch, hidden): mean over real tokens, or the last real token."""
    import torch

    if pooling == "mean":
        w = real.unsqueeze(0).unsqueeze(-1).to(states.dtype)
        return (states * w).sum(2) / w.sum(2).clamp(min=1)
    last = (real.long() * torch.arange(real.shape[1], device=real.device)).argmax(1)
    return states[:, torch.arange(real.shape[0], device=real.device), last]


@dataclass
class Encoder:
    """Pooled hidden states of every layer for texts, cached by (pooling, text)."""

    model: "PreTrainedModel"
    tok: "PreTrainedTokenizerBase"
    max_tokens: int = 256
    batch_size: int = 16
    truncated: int = 0  # texts longer than max_tokens, cut (counted, reported)
    _cache: dict[tuple[str, str], "np.ndarray"] = field(default_factory=dict)

    def token_ids(self, text: str) -> tuple[list[int], list[bool]]:
        """Token ids and a mask of which positions are real text (pooled) vs special."""
        if is_decoder(self.model):
            ids = self.tok(text, add_special_tokens=False, verbose=False)["input_ids"]
            ids, real = [doc_separator_id(self.tok)] + ids, [False] + [True] * len(ids)
        else:
            enc = self.tok(text, add_special_tokens=True, return_special_tokens_mask=True)
            ids, real = enc["input_ids"], [not s for s in enc["special_tokens_mask"]]
        if len(ids) > self.max_tokens:
            self.truncated += 1
            ids, real = ids[: self.max_tokens], real[: self.max_tokens]
        if not any(real):  # an empty text: pool over whatever is there rather than over nothing
            real = [True] * len(ids)
        return ids, real

    def sentences(self, texts: list[str], pooling: str = "mean") -> "np.ndarray":
        """Array (n_texts, n_layers + 1, hidden): one pooled vector per layer (0 = embeddings)."""
        import numpy as np

        todo = sorted({t for t in texts if (pooling, t) not in self._cache}, key=len)
        for i in range(0, len(todo), self.batch_size):
            chunk = todo[i : i + self.batch_size]
            for text, vec in zip(chunk, self._forward(chunk, pooling)):
                self._cache[(pooling, text)] = vec
        return np.stack([self._cache[(pooling, t)] for t in texts])

    def _forward(self, texts: list[str], pooling: str) -> "np.ndarray":
        states, real = self.hidden([self.token_ids(t) for t in texts], grad=False)
        return pool(states, real, pooling).permute(1, 0, 2).float().cpu().numpy()  # (batch, layers, hidden)

    def hidden(self, enc: list[tuple[list[int], list[bool]]], grad: bool) -> tuple[Any, Any]:
        """Stacked hidden states (layers, batch, tokens, hidden) and the real-token mask (batch, tokens)."""
        import torch

        pad = self.tok.pad_token_id if self.tok.pad_token_id is not None else 0
        width = max(len(ids) for ids, _ in enc)
        input_ids = torch.full((len(enc), width), pad, dtype=torch.long)
        attention = torch.zeros((len(enc), width), dtype=torch.long)
        real = torch.zeros((len(enc), width), dtype=torch.bool)
        for i, (ids, m) in enumerate(enc):
            input_ids[i, : len(ids)] = torch.tensor(ids)
            attention[i, : len(ids)] = 1
            real[i, : len(ids)] = torch.tensor(m)
        dev = self.model.device
        with torch.set_grad_enabled(grad):
            out = backbone(self.model)(
                input_ids=input_ids.to(dev), attention_mask=attention.to(dev), output_hidden_states=True
            )
        return torch.stack(out.hidden_states), real.to(dev)

    def words(self, sentences: list[list[str]], layer: int, grad: bool = False) -> list[Any]:
        """Per sentence, a (n_words, hidden) tensor: the mean of each word's sub-tokens at `layer`.

        Words are joined with spaces and mapped to tokens by character offsets, which works
        for byte-level BPE, SentencePiece and WordPiece alike. A word whose tokens fell past
        `max_tokens` gets the last available token's state (counted in `truncated`).
        """
        import torch

        enc, spans = [], []
        for words in sentences:
            text, starts = "", []
            for w in words:
                starts.append(len(text) + (1 if text else 0))
                text = f"{text} {w}" if text else w
            ids, offsets = self._ids_with_offsets(text)
            enc.append((ids, [o is not None for o in offsets]))
            spans.append([(s, s + len(w)) for s, w in zip(starts, words)])
            spans[-1] = [self._tokens_of(sp, offsets) for sp in spans[-1]]
        states, _ = self.hidden(enc, grad)
        h = states[layer]
        out = []
        for b, word_tokens in enumerate(spans):
            out.append(torch.stack([h[b, idx].mean(0) for idx in word_tokens]))
        return out

    def _ids_with_offsets(self, text: str) -> tuple[list[int], list[tuple[int, int] | None]]:
        dec = is_decoder(self.model)
        enc = self.tok(text, add_special_tokens=not dec, return_offsets_mapping=True, return_special_tokens_mask=True)
        ids = list(enc["input_ids"])
        offsets: list[tuple[int, int] | None] = [
            None if s else tuple(o) for o, s in zip(enc["offset_mapping"], enc["special_tokens_mask"])
        ]
        if dec:
            ids, offsets = [doc_separator_id(self.tok)] + ids, [None] + offsets
        if len(ids) > self.max_tokens:
            self.truncated += 1
            ids, offsets = ids[: self.max_tokens], offsets[: self.max_tokens]
        return ids, offsets

    @staticmethod
    def _tokens_of(span: tuple[int, int], offsets: list[tuple[int, int] | None]) -> list[int]:
        s, e = span
        idx = [i for i, o in enumerate(offsets) if o is not None and o[0] < e and o[1] > s]
        if idx:
            return idx
        real = [i for i, o in enumerate(offsets) if o is not None]
        return [real[-1] if real else len(offsets) - 1]
