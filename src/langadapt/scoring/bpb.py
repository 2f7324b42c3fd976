"""Bits per byte of a causal LM, with a sliding window so every token is scored once."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Protocol

from langadapt.models.loading import doc_separator_id
from langadapt.progress import track

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

BATCH = 4


def windows(n: int, context: int, stride: int) -> list[tuple[int, int, int]]:
    """(begin, end, scored) windows over a sequence of n tokens; token 0 is never scored.

    The last `scored` tokens of ids[begin:end] are scored; together they cover 1..n-1
    exactly once, each predicted from at least `context - stride` tokens before it in its
    window (and never from none: with stride == context, windows still overlap by one token).
    """
    out = []
    prev_end = 1  # the separator at position 0 is context only
    begin = 0
    overlap = max(context - stride, 1)
    while prev_end < n:
        end = min(begin + context, n)
        out.append((begin, end, end - prev_end))
        prev_end = end
        begin = end - overlap
    return out


class Windowing(Protocol):
    """What scoring reads of a section (the eval section has both): the window and its stride, in tokens."""

    context_length: int
    stride: int


def bits_per_byte(
    model: "PreTrainedModel", tok: "PreTrainedTokenizerBase", texts: list[str], cfg: "Windowing", desc: str = ""
) -> dict[str, float]:
    import torch
    import torch.nn.functional as F

    sep = doc_separator_id(tok)
    pieces: list[tuple[list[int], int]] = []  # (window ids, scored tail length)
    n_tokens = 0
    for ids in tok(texts, add_special_tokens=False, verbose=False)["input_ids"]:
        ids = [sep] + ids
        n_tokens += len(ids) - 1
        pieces.extend((ids[b:e], s) for b, e, s in windows(len(ids), cfg.context_length, cfg.stride))
    pieces.sort(key=lambda p: len(p[0]))
    pad = tok.pad_token_id if tok.pad_token_id is not None else sep
    total_nats = 0.0
    model.eval()
    batches = [pieces[i : i + BATCH] for i in range(0, len(pieces), BATCH)]
    with torch.no_grad():
        for batch in track(batches, desc or "scoring"):
            width = max(len(ids) for ids, _ in batch)
            input_ids = torch.full((len(batch), width), pad, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for i, (ids, _) in enumerate(batch):
                input_ids[i, : len(ids)] = torch.tensor(ids)
                mask[i, : len(ids)] = 1
            input_ids, mask = input_ids.to(model.device), mask.to(model.device)
            logits = model(input_ids=input_ids, attention_mask=mask).logits.float()
            for i, (ids, scored) in enumerate(batch):
                n = len(ids)
                pred = logits[i, n - 1 - scored : n - 1]
                gold = input_ids[i, n - scored : n]
                total_nats += F.cross_entropy(pred, gold, reduction="sum").item()
    n_bytes = sum(len(t.encode("utf-8")) for t in texts)
    return {
        "bits_per_byte": total_nats / math.log(2) / n_bytes,
        "tokens": n_tokens,
        "bytes": n_bytes,
        "bits_per_token": total_nats / math.log(2) / max(n_tokens, 1),
    }
