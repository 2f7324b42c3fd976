"""Training data: packed token streams per language and the replay mix of each step."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    import torch


@dataclass
class TokenStream:
    """Documents of one language, shuffled per epoch, tokenised lazily and packed.

    Every document starts with the separator token; blocks are cut at seq_len without
    padding, so no token is dropped (the tail of the last epoch simply is not reached).
    """

    texts: list[str]
    tok: Any
    sep_id: int
    seq_len: int
    seed: int
    epoch: int = 0
    next_doc: int = 0
    buffer: list[int] = field(default_factory=list)
    documents_started: int = 0
    heldout: list[str] = field(default_factory=list)  # documents never trained on, for evaluation during training
    _order: list[int] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        self._shuffle()

    def _shuffle(self) -> None:
        self._order = list(range(len(self.texts)))
        random.Random(self.seed * 1_000_003 + self.epoch).shuffle(self._order)

    def next_block(self) -> list[int]:
        while len(self.buffer) < self.seq_len:
            if self.next_doc >= len(self._order):
                self.epoch += 1
                self.next_doc = 0
                self._shuffle()
            text = self.texts[self._order[self.next_doc]]
            self.next_doc += 1
            self.documents_started += 1
            self.buffer.extend([self.sep_id] + self.tok(text, add_special_tokens=False, verbose=False)["input_ids"])
        block, self.buffer = self.buffer[: self.seq_len], self.buffer[self.seq_len :]
        return block

    def state(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "next_doc": self.next_doc,
            "buffer": list(self.buffer),
            "documents_started": self.documents_started,
        }

    def restore(self, state: dict[str, Any]) -> None:
        self.epoch, self.next_doc = state["epoch"], state["next_doc"]
        self.buffer, self.documents_started = list(state["buffer"]), state["documents_started"]
        self._shuffle()


def batch_languages(step: int, batch_size: int, replay_ratio: float, seed: int) -> list[bool]:
    """Which sequences of a step are replay; a pure function of the step, so resumable."""
    rng = random.Random(seed * 7_919 + step)
    return [rng.random() < replay_ratio for _ in range(batch_size)]


def document_positions(ids: "torch.Tensor", sep_id: int) -> "torch.Tensor":
    """Position ids that restart at 0 at every document start (separator) and at every row start.

    transformers reads restarting position ids as packed sequences and keeps each token's
    attention inside its own document (block-diagonal causal mask), so packing changes no
    document's loss. A document cut by a row boundary continues in the next row from 0.
    """
    import torch

    idx = torch.arange(ids.shape[1], device=ids.device).expand_as(ids)
    starts = torch.where((ids == sep_id) | (idx == 0), idx, torch.zeros_like(idx))
    return idx - starts.cummax(dim=1).values


class Prefetcher:
    """Draws (and tokenises) the next step's batch in a background thread while the current step trains.

    `draw(step)` returns the step's batch plus a snapshot of the streams' positions taken right
    after drawing it, which is what a checkpoint after that step must store (the streams
    themselves are already one step ahead).
    """

    def __init__(self, draw: Callable[[int], Any], start: int, end: int) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self._draw, self._end = draw, end
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="langadapt-data")
        self._next = self._pool.submit(draw, start) if start < end else None

    def get(self, step: int) -> Any:
        assert self._next is not None
        result = self._next.result()
        self._next = self._pool.submit(self._draw, step + 1) if step + 1 < self._end else None
        return result

    def close(self) -> None:
        if self._next is not None:
            self._next.cancel()
        self._pool.shutdown(wait=True)


def heldout_documents(texts: list[str], tok: Any, max_tokens: int) -> list[str]:
    """A fixed sample of whole held-out documents: taken in order while they fit in max_tokens
    (with a separator each; longer ones are passed over), from the first 1,000."""
    out, used = [], 0
    for text in texts[:1000]:
        n = 1 + len(tok(text, add_special_tokens=False, verbose=False)["input_ids"])
        if used + n <= max_tokens:
            out.append(text)
            used += n
    return out


def heldout_sample(
    texts: list[str], tok: Any, sep_id: int, seq_len: int, max_tokens: int
) -> tuple["torch.Tensor", "torch.Tensor", int]:
    """The held-out documents of `heldout_documents`, packed: (rows, which predictions count, UTF-8 bytes).

    The last row is filled with separators whose predictions do not count. A figure to
    watch during training: the first token of each row is not predicted, so it reads about
    1/seq_len lower than the evaluation stage's sliding-window bits per byte.
    """
    import torch

    ids: list[int] = []
    n_bytes = 0
    for text in heldout_documents(texts, tok, max_tokens):
        ids += [sep_id] + tok(text, add_special_tokens=False, verbose=False)["input_ids"]
        n_bytes += len(text.encode("utf-8"))
    rows = max(1, -(-len(ids) // seq_len))
    flat = torch.full((rows * seq_len,), sep_id, dtype=torch.long)
    flat[: len(ids)] = torch.tensor(ids, dtype=torch.long)
    real = torch.arange(rows * seq_len) < len(ids)
    # per-token losses have shape (rows, seq_len - 1): position j of a row predicts its token j + 1
    counted = real.view(rows, seq_len)[:, 1:]
    return flat.view(rows, seq_len), counted, n_bytes
