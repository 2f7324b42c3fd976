"""Pseudo-log-likelihood of a masked LM, per byte: how encoders are compared before and after adaptation.

The pseudo-log-likelihood (Salazar et al., 2020) of a text is the sum over its tokens of
log p(token | the text with that token masked). Dividing it by the text's UTF-8 bytes gives
pseudo bits per byte, which, like bits per byte for decoders, compares models whose
tokenizers cut the text differently. With `within_word` (Kauf & Ivanova, 2023, "PLL-word-l2r")
the later pieces of the same word are masked too when a piece is scored, so a word split
into many pieces is not scored as if its own pieces gave it away. Words are the tokenizer's
own (`models.encoder.WordBoundaries`, the same as whole-word masking in training).

Batched: one forward pass holds many masked copies of a window (one copy per scored
token), and the head runs only at the one scored position of each copy (never over the
full vocabulary at every position): the same numbers as one forward per masked copy
(`pseudo_log_likelihood_reference`), many times faster. The log-likelihood stays on the
device until the end, and a forward pass runs in the caller's autocast context, if any.
Special tokens frame every window and are never scored. Everything a forward pass is
given goes to the model's device, as in `bpb.py`. Documents longer than a window
are scored in chunks of `stride` tokens, each with context on both sides, every token
exactly once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from langadapt.models.encoder import WordBoundaries, mlm_logits_at
from langadapt.models.loading import max_sequence_length
from langadapt.progress import track

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

METRIC = "pseudo_bits_per_byte"


@dataclass(frozen=True)
class Window:
    ids: list[int]  # framed: [start special] content [end special]
    scored: range  # positions of `ids` scored in this window
    masks: list[list[int]]  # per scored position, every position masked when scoring it


def frame(tok: "PreTrainedTokenizerBase") -> tuple[list[int], list[int]]:
    """The special tokens the tokenizer puts around a single text (e.g. <s> ... </s>, [CLS] ... [SEP])."""
    probe = tok("a", add_special_tokens=False, verbose=False)["input_ids"]
    framed = tok("a")["input_ids"]
    for i in range(len(framed) - len(probe) + 1):
        if framed[i : i + len(probe)] == probe:
            return framed[:i], framed[i + len(probe) :]
    return framed[:1], framed[-1:]


def windows(
    content: list[int], starts: list[bool], head: list[int], tail: list[int], size: int, stride: int, within_word: bool
) -> list[Window]:
    """Windows of at most `size` tokens (frame included) that together score every content token once."""
    room = size - len(head) - len(tail)
    stride = max(1, min(stride, room))
    out = []
    for a in range(0, len(content), stride):
        b = min(a + stride, len(content))
        begin = max(0, a - (room - (b - a)) // 2)  # context on both sides of the scored chunk
        end = min(len(content), begin + room)
        begin = max(0, end - room)
        off = len(head) - begin
        masks = []
        for p in range(a, b):
            masked = [p + off]
            if within_word:  # later pieces of the same word are hidden too
                q = p + 1
                while q < end and not starts[q]:
                    masked.append(q + off)
                    q += 1
            masks.append(masked)
        out.append(Window(head + content[begin:end] + tail, range(a + off, b + off), masks))
    return out


def _document_windows(
    tok: "PreTrainedTokenizerBase", texts: list[str], size: int, stride: int, within_word: bool
) -> list[Window]:
    head, tail = frame(tok)
    boundaries = WordBoundaries(tok) if within_word else None
    out = []
    for ids in tok(texts, add_special_tokens=False, verbose=False)["input_ids"]:
        if not ids:
            continue
        starts = boundaries.starts(ids) if boundaries is not None else [True] * len(ids)
        out.extend(windows(ids, starts, head, tail, size, stride, within_word))
    return out


def pseudo_bits_per_byte(
    model: "PreTrainedModel",
    tok: "PreTrainedTokenizerBase",
    texts: list[str],
    context_length: int,
    stride: int,
    within_word: bool = True,
    copies_per_batch: int = 128,
    desc: str = "",
    logits_at: Any = None,
) -> dict[str, Any]:
    """Pseudo bits per byte of `texts`, batched; keys mirror `bits_per_byte` plus `metric`.

    `logits_at(model, input_ids, attention_mask, select)` computes the head at the selected
    positions (default `mlm_logits_at`); training passes one that runs through its engine's wrapper.
    """
    import torch

    size = min(context_length, max_sequence_length(model.config))
    items = [(w, i) for w in _document_windows(tok, texts, size, stride, within_word) for i in range(len(w.scored))]
    items.sort(key=lambda item: len(item[0].ids))  # similar lengths share a batch: little padding
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    parts = []  # per batch, on the device: one transfer at the end
    device = model.device
    model.eval()
    batches = [items[i : i + copies_per_batch] for i in range(0, len(items), copies_per_batch)]
    with torch.no_grad():
        for batch in track(batches, desc or "pseudo-likelihood"):
            width = max(len(w.ids) for w, _ in batch)
            input_ids = torch.full((len(batch), width), pad, dtype=torch.long)
            attention = torch.zeros((len(batch), width), dtype=torch.long)
            select = torch.zeros((len(batch), width), dtype=torch.bool)
            gold = []
            for row, (w, i) in enumerate(batch):
                input_ids[row, : len(w.ids)] = torch.tensor(w.ids)
                attention[row, : len(w.ids)] = 1
                position = w.scored[i]
                input_ids[row, w.masks[i]] = tok.mask_token_id
                select[row, position] = True
                gold.append(w.ids[position])
            mask = None if bool(attention.all()) else attention.to(device)  # no padding: the fused attention kernel
            logits = (logits_at or mlm_logits_at)(model, input_ids.to(device), mask, select.to(device)).float()
            gold_ids = torch.tensor(gold, device=device)
            parts.append(torch.nn.functional.cross_entropy(logits, gold_ids, reduction="sum"))
    total_nats = float(torch.stack(parts).cpu().double().sum()) if parts else 0.0
    return _result(total_nats, len(items), texts)


def pseudo_log_likelihood_reference(
    model: "PreTrainedModel",
    tok: "PreTrainedTokenizerBase",
    texts: list[str],
    context_length: int,
    stride: int,
    within_word: bool = True,
) -> dict[str, Any]:
    """The definition, one masked copy per forward pass and the full head: for tests and the benchmark."""
    import torch

    size = min(context_length, max_sequence_length(model.config))
    total_nats, n = 0.0, 0
    device = model.device
    model.eval()
    with torch.no_grad():
        for w in _document_windows(tok, texts, size, stride, within_word):
            for i, position in enumerate(w.scored):
                ids = torch.tensor([w.ids])
                ids[0, w.masks[i]] = tok.mask_token_id
                ids = ids.to(device)
                logits = model(input_ids=ids).logits[0, position].float()
                total_nats -= torch.log_softmax(logits, dim=-1)[w.ids[position]].item()
                n += 1
    return _result(total_nats, n, texts)


def _result(total_nats: float, n_tokens: int, texts: list[str]) -> dict[str, Any]:
    n_bytes = sum(len(t.encode("utf-8")) for t in texts)
    return {
        "bits_per_byte": total_nats / math.log(2) / max(n_bytes, 1),
        "tokens": n_tokens,
        "bytes": n_bytes,
        "bits_per_token": total_nats / math.log(2) / max(n_tokens, 1),
        "metric": METRIC,
    }


def score(
    model: "PreTrainedModel",
    tok: "PreTrainedTokenizerBase",
    texts: list[str],
    cfg: Any,
    desc: str = "",
    logits_at: Any = None,
) -> dict[str, Any]:
    """The eval stage's entry for encoders: windows from eval.context_length / eval.stride.

    `eval.pppl_within_word` (default on) and `eval.pppl_copies_per_batch` (default 128) are
    read when the eval section has them.
    """
    return pseudo_bits_per_byte(
        model,
        tok,
        texts,
        cfg.context_length,
        cfg.stride,
        within_word=getattr(cfg, "pppl_within_word", True),
        copies_per_batch=getattr(cfg, "pppl_copies_per_batch", 128),
        desc=desc,
        logits_at=logits_at,
    )
