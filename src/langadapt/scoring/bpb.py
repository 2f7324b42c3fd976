"""Bits per byte of a causal LM, with a sliding window so every token is scored once.

The output head runs only where a token is scored, in chunks of `HEAD_CHUNK` positions: the
body's hidden states of a batch are computed once, the scored ones gathered, and the head
(with whatever the model does to its logits after it: Gemma's soft-capping, Cohere's and
Granite's scaling) applied to `HEAD_CHUNK` of them at a time. A batch of windows never
holds its full-vocabulary logits at every position (4 windows x 512 positions x a 256k
vocabulary is 2 GB in fp32); the largest logits tensor is `HEAD_CHUNK` x vocabulary.
Whether the gathered head reproduces the model's own logits is checked once per model on
a probe (`scored_head_path`); where it does not, the model's own forward runs its head on
the scored positions only (one tensor per batch), still never on every position.
`bits_per_byte_reference` is the plain full-logits computation, for tests and comparisons;
`bits_per_byte_llama_cpp` the same figure from llama.cpp on a GGUF file of the model.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Protocol

from langadapt.models.loading import doc_separator_id
from langadapt.progress import track

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

BATCH = 4
HEAD_CHUNK = 1024  # scored positions per call of the output head
PATH_ATTRIBUTE = "_langadapt_scored_head"  # on the model: "chunked", or "gathered (reason)"
PROBE_TOKENS = 16


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


def _pieces(
    tok: "PreTrainedTokenizerBase", texts: list[str], cfg: Windowing
) -> tuple[list[tuple[list[int], int]], int]:
    """(window ids, scored tail length) of every window, shortest first, and the number of scored tokens."""
    sep = doc_separator_id(tok)
    pieces: list[tuple[list[int], int]] = []
    n_tokens = 0
    for ids in tok(texts, add_special_tokens=False, verbose=False)["input_ids"]:
        ids = [sep] + ids
        n_tokens += len(ids) - 1
        pieces.extend((ids[b:e], s) for b, e, s in windows(len(ids), cfg.context_length, cfg.stride))
    pieces.sort(key=lambda p: len(p[0]))
    return pieces, n_tokens


def _batch(
    batch: list[tuple[list[int], int]], pad: int, device: Any
) -> tuple["torch.Tensor", "torch.Tensor", "torch.Tensor", "torch.Tensor"]:
    """(input ids, attention mask, positions whose prediction is scored, the tokens they predict), on `device`."""
    import torch

    width = max(len(ids) for ids, _ in batch)
    input_ids = torch.full((len(batch), width), pad, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    select = torch.zeros((len(batch), width), dtype=torch.bool)
    for i, (ids, scored) in enumerate(batch):
        input_ids[i, : len(ids)] = torch.tensor(ids)
        mask[i, : len(ids)] = 1
        select[i, len(ids) - 1 - scored : len(ids) - 1] = True  # position p predicts token p + 1
    gold = input_ids[:, 1:][select[:, :-1]]  # row-major, as hidden[select] is
    return input_ids.to(device), mask.to(device), select.to(device), gold.to(device)


def after_head(config: Any, logits: "torch.Tensor") -> "torch.Tensor":
    """What transformers' causal LMs do to the head's output before returning it (nothing for most)."""
    import torch

    scale = getattr(config, "logit_scale", None)  # Cohere
    if isinstance(scale, (int, float)) and scale:
        logits = logits * scale
    scaling = getattr(config, "logits_scaling", None)  # Granite
    if isinstance(scaling, (int, float)) and scaling:
        logits = logits / scaling
    cap = getattr(config, "final_logit_softcapping", None)  # Gemma 2 and 3
    if isinstance(cap, (int, float)) and cap:
        logits = torch.tanh(logits / cap) * cap
    return logits


def _hidden_at(model: Any, input_ids: "torch.Tensor", mask: "torch.Tensor | None", select: "torch.Tensor") -> Any:
    """The hidden states the output head would read at the selected positions, (n, hidden): the body runs once,
    the head on no position (a pre-hook takes its input away, so wrappers and hooks of the head still apply)."""
    head = model.get_output_embeddings()
    kept: dict[str, Any] = {}

    def take(module: Any, args: tuple[Any, ...]) -> tuple[Any, ...]:
        kept["hidden"] = args[0][select]
        return (args[0][..., :0, :],) + args[1:]

    handle = head.register_forward_pre_hook(take)
    try:
        model(input_ids=input_ids, attention_mask=mask)
    finally:
        handle.remove()
    return kept["hidden"]


def _logits_at(model: Any, input_ids: "torch.Tensor", mask: "torch.Tensor | None", select: "torch.Tensor") -> Any:
    """The model's own logits at the selected positions only, (n, vocab), from one forward pass."""
    head = model.get_output_embeddings()

    def gather(module: Any, args: tuple[Any, ...]) -> tuple[Any, ...]:
        return (args[0][select],) + args[1:]

    handle = head.register_forward_pre_hook(gather)
    try:
        return model(input_ids=input_ids, attention_mask=mask).logits
    finally:
        handle.remove()


def scored_head_path(model: Any) -> str:
    """How this model's scored logits are computed, decided once on a probe and stored on the model.

    "chunked" when the output head applied to gathered hidden states (then `after_head`) gives
    the model's own logits; otherwise "gathered (why)": the model's forward runs its head on
    the scored positions, all of a batch at once.
    """
    import torch

    known = model.__dict__.get(PATH_ATTRIBUTE)
    if known is not None:
        return known
    head = model.get_output_embeddings()
    if head is None:
        path = "gathered (the model exposes no output head module)"
    else:
        n = min(PROBE_TOKENS, int(model.config.vocab_size))
        ids = (torch.arange(PROBE_TOKENS) % n).unsqueeze(0).to(model.device)
        select = torch.ones_like(ids, dtype=torch.bool)
        with torch.no_grad():
            own = model(input_ids=ids).logits.float()[0]
            mine = after_head(model.config, head(_hidden_at(model, ids, None, select))).float()
        close = mine.shape == own.shape and bool((mine - own).abs().max() <= 1e-2 * own.abs().max() + 1e-4)
        path = "chunked" if close else "gathered (the head on gathered states differs from the model's logits)"
    model.__dict__[PATH_ATTRIBUTE] = path
    return path


def scored_nats(
    model: Any,
    input_ids: "torch.Tensor",
    mask: "torch.Tensor | None",
    select: "torch.Tensor",
    gold: "torch.Tensor",
    chunk: int | None = None,
) -> "torch.Tensor":
    """Summed negative log-likelihood (fp32, on the model's device) of `gold` predicted at the selected positions,
    `chunk` (default `HEAD_CHUNK`) positions at a time."""
    import torch
    import torch.nn.functional as F

    chunk = chunk or HEAD_CHUNK
    total = torch.zeros((), dtype=torch.float32, device=gold.device)
    if scored_head_path(model) == "chunked":
        hidden, head = _hidden_at(model, input_ids, mask, select), model.get_output_embeddings()
        for s in range(0, len(gold), chunk):
            logits = after_head(model.config, head(hidden[s : s + chunk])).float()
            total = total + F.cross_entropy(logits, gold[s : s + chunk], reduction="sum")
        return total
    logits = _logits_at(model, input_ids, mask, select)
    for s in range(0, len(gold), chunk):
        total = total + F.cross_entropy(logits[s : s + chunk].float(), gold[s : s + chunk], reduction="sum")
    return total


def bits_per_byte(
    model: "PreTrainedModel", tok: "PreTrainedTokenizerBase", texts: list[str], cfg: Windowing, desc: str = ""
) -> dict[str, float]:
    """Bits per byte of `texts` (each preceded by the document separator), the head run on scored positions only.

    The negative log-likelihood stays on the model's device until the end (one transfer, no
    synchronisation per batch). Runs in the caller's autocast context, if any.
    """
    import torch

    pieces, n_tokens = _pieces(tok, texts, cfg)
    pad = tok.pad_token_id if tok.pad_token_id is not None else doc_separator_id(tok)
    model.eval()
    parts = []
    with torch.no_grad():
        for i in track(range(0, len(pieces), BATCH), desc or "scoring"):
            input_ids, mask, select, gold = _batch(pieces[i : i + BATCH], pad, model.device)
            parts.append(scored_nats(model, input_ids, mask, select, gold))
    total_nats = float(torch.stack(parts).cpu().double().sum()) if parts else 0.0
    return _result(total_nats, n_tokens, texts)


def bits_per_byte_reference(
    model: "PreTrainedModel", tok: "PreTrainedTokenizerBase", texts: list[str], cfg: Windowing
) -> dict[str, float]:
    """The same figure from the full-vocabulary logits at every position: the plain computation, for tests."""
    import torch
    import torch.nn.functional as F

    pieces, n_tokens = _pieces(tok, texts, cfg)
    pad = tok.pad_token_id if tok.pad_token_id is not None else doc_separator_id(tok)
    total_nats = 0.0
    model.eval()
    with torch.no_grad():
        for i in range(0, len(pieces), BATCH):
            batch = pieces[i : i + BATCH]
            input_ids, mask, _, _ = _batch(batch, pad, model.device)
            logits = model(input_ids=input_ids, attention_mask=mask).logits.float()
            for row, (ids, scored) in enumerate(batch):
                n = len(ids)
                pred = logits[row, n - 1 - scored : n - 1]
                gold = input_ids[row, n - scored : n]
                total_nats += F.cross_entropy(pred, gold, reduction="sum").item()
    return _result(total_nats, n_tokens, texts)


def bits_per_byte_llama_cpp(
    gguf_file: str, tok: "PreTrainedTokenizerBase", texts: list[str], cfg: Windowing, threads: int | None = None
) -> dict[str, float]:
    """The same figure computed by llama.cpp (llama-cpp-python) from a GGUF file of the model.

    The windows, scored tokens and bytes are `bits_per_byte`'s (`_pieces` with the HF
    tokenizer `tok`, whose ids the GGUF file's must equal); each window is evaluated from an
    empty cache and the log-softmax taken in float64 from llama.cpp's logits.
    """
    import numpy as np
    from llama_cpp import Llama

    pieces, n_tokens = _pieces(tok, texts, cfg)
    longest = max((len(ids) for ids, _ in pieces), default=1)
    llm = Llama(model_path=gguf_file, n_ctx=longest, n_batch=longest, logits_all=True, n_threads=threads, verbose=False)
    total_nats = 0.0
    for ids, scored in pieces:
        llm.reset()
        llm.eval(ids)
        n = len(ids)
        logits = np.asarray(llm.scores[n - 1 - scored : n - 1], dtype=np.float64)
        top = logits.max(axis=1)
        log_z = top + np.log(np.exp(logits - top[:, None]).sum(axis=1))
        total_nats += float((log_z - logits[np.arange(scored), ids[n - scored :]]).sum())
    return _result(total_nats, n_tokens, texts)


def _result(total_nats: float, n_tokens: int, texts: list[str]) -> dict[str, float]:
    n_bytes = sum(len(t.encode("utf-8")) for t in texts)
    return {
        "bits_per_byte": total_nats / math.log(2) / n_bytes,
        "tokens": n_tokens,
        "bytes": n_bytes,
        "bits_per_token": total_nats / math.log(2) / max(n_tokens, 1),
    }
