"""Training data: packed token streams per language and the replay mix of each step."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from langadapt.train.pairs import text_segments
from langadapt.train.tokenised import TokenisedDocuments, tokenise

if TYPE_CHECKING:
    import numpy as np
    import torch

# the held-out sample is taken from the first this many held-out documents
HELDOUT_CANDIDATES = 1000


@dataclass
class TokenStream:
    """Documents of one source (one language), shuffled per epoch and packed into blocks of seq_len tokens.

    `documents` are the tokenised documents (`tokenised.TokenisedDocuments`, the run
    directory's cache) or texts, which are then tokenised here, at once, in batches. Every
    document starts with the separator token; blocks are cut at seq_len without padding, so
    no token is dropped (the tail of the last epoch simply is not reached). Drawing a block
    slices the token array; the unfinished rest of a document waits in `buffer`.
    """

    documents: "TokenisedDocuments | list[str]" = field(repr=False)
    tok: Any
    sep_id: int
    seq_len: int
    seed: int
    epoch: int = 0
    next_doc: int = 0
    documents_started: int = 0
    language: str = ""  # its documents' language: held-out figures per language, LangSAMP's per-position ids
    heldout: list[str] = field(default_factory=list)  # documents never trained on, for evaluation during training
    heldout_ids: "TokenisedDocuments | None" = None  # the first of them tokenised (HELDOUT_CANDIDATES), when cached
    buffer: "np.ndarray" = field(default=None, repr=False)  # type: ignore[assignment]
    _order: list[int] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        import numpy as np

        if not isinstance(self.documents, TokenisedDocuments):
            self.documents = tokenise(list(self.documents), self.tok)
        if len(self.documents) == 0:
            raise ValueError("TokenStream: no documents to train on")
        self.buffer = np.zeros(0, dtype=np.int64)
        self._shuffle()

    @property
    def docs(self) -> TokenisedDocuments:
        assert isinstance(self.documents, TokenisedDocuments)
        return self.documents

    def _shuffle(self) -> None:
        self._order = list(range(len(self.docs)))
        random.Random(self.seed * 1_000_003 + self.epoch).shuffle(self._order)

    def _next_document(self) -> "np.ndarray":
        if self.next_doc >= len(self._order):
            self.epoch += 1
            self.next_doc = 0
            self._shuffle()
        doc = self.docs[self._order[self.next_doc]]
        self.next_doc += 1
        self.documents_started += 1
        return doc

    def next_block(self) -> "np.ndarray":
        """The next seq_len tokens (int64): the buffered rest of a document, then whole documents, each after a separator."""
        import numpy as np

        block = np.empty(self.seq_len, dtype=np.int64)
        n = min(len(self.buffer), self.seq_len)
        block[:n], rest = self.buffer[:n], self.buffer[n:]
        while n < self.seq_len:
            doc = self._next_document()
            block[n] = self.sep_id
            take = min(len(doc), self.seq_len - n - 1)
            block[n + 1 : n + 1 + take] = doc[:take]
            n, rest = n + 1 + take, doc[take:]
        self.buffer = rest  # a view of the token array (or of a restored buffer): nothing is copied
        return block

    @property
    def epoch_tokens(self) -> int:
        """Tokens of one pass over the documents, one separator each included."""
        return self.docs.n_tokens + len(self.docs)

    def epochs_seen(self) -> float:
        """Passes over the documents so far, counted in tokens handed out (a document's unread rest excluded)."""
        import numpy as np

        lengths = np.diff(self.docs.offsets)[self._order[: self.next_doc]]
        done = int(lengths.sum()) + self.next_doc - len(self.buffer)
        return self.epoch + done / self.epoch_tokens

    def state(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "next_doc": self.next_doc,
            "buffer": self.buffer.tolist(),
            "documents_started": self.documents_started,
        }

    def restore(self, state: dict[str, Any]) -> None:
        import numpy as np

        self.epoch, self.next_doc = state["epoch"], state["next_doc"]
        self.buffer, self.documents_started = np.asarray(state["buffer"], dtype=np.int64), state["documents_started"]
        self._shuffle()


def batch_languages(step: int, batch_size: int, replay_ratio: float, seed: int) -> list[bool]:
    """Which sequences of a step are replay; a pure function of the step, so resumable."""
    rng = random.Random(seed * 7_919 + step)
    return [rng.random() < replay_ratio for _ in range(batch_size)]


def pair_rows(step: int, langs: list[str], target: str, pairs: str, ratio: float, seed: int) -> list[str]:
    """Which of a step's target rows come from the stream of pairs `pairs` (each with probability `ratio`);
    replay rows stay. A pure function of the step, drawn apart from the replay mix, so resumable."""
    rng = random.Random(seed * 104_729 + step * 31 + 7)
    return [pairs if lang == target and rng.random() < ratio else lang for lang in langs]


def row_with_segments(stream: Any) -> tuple["np.ndarray", "np.ndarray"]:
    """A stream's next row and its segments (`train/pairs.py`): a stream of pairs lays them out itself; in a
    monolingual row the separators start documents and the rest is text."""
    if hasattr(stream, "next_block_with_segments"):
        return stream.next_block_with_segments()
    ids = stream.next_block()
    return ids, text_segments(ids, stream.sep_id)


def row_languages(stream: Any, segments: "np.ndarray", index: dict[str, int]) -> "np.ndarray":
    """Each position's language index (`index`: language -> row of LangSAMP's table) for a row just drawn from
    `stream`: a stream of pairs knows each side's; any other stream is of one language."""
    import numpy as np

    if hasattr(stream, "position_languages"):
        return stream.position_languages(index)
    return np.full(len(segments), index.get(stream.language, 0), dtype=np.int64)


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
    """Draws the next step's batch (slices of the tokenised corpus) in a background thread while the current step trains.

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


def _heldout_choice(texts: list[str], tok: Any, max_tokens: int, ids: TokenisedDocuments | None) -> list[int]:
    """Which held-out documents the sample takes: in order while they fit in max_tokens (with a separator
    each; longer ones are passed over), from the first HELDOUT_CANDIDATES. `ids`: those tokenised (the cache)."""
    ids = ids if ids is not None else tokenise(texts[:HELDOUT_CANDIDATES], tok)
    out, used = [], 0
    for i in range(min(len(texts), HELDOUT_CANDIDATES)):
        n = 1 + len(ids[i])
        if used + n <= max_tokens:
            out.append(i)
            used += n
    return out


def heldout_documents(texts: list[str], tok: Any, max_tokens: int, ids: TokenisedDocuments | None = None) -> list[str]:
    """A fixed sample of whole held-out documents: taken in order while they fit in max_tokens
    (with a separator each; longer ones are passed over), from the first HELDOUT_CANDIDATES.
    `ids`: those candidates already tokenised (the run directory's cache), else they are tokenised here."""
    return [texts[i] for i in _heldout_choice(texts, tok, max_tokens, ids)]


def heldout_sample(
    texts: list[str], tok: Any, sep_id: int, seq_len: int, max_tokens: int, ids: TokenisedDocuments | None = None
) -> tuple["torch.Tensor", "torch.Tensor", int]:
    """The held-out documents of `heldout_documents`, packed: (rows, which predictions count, UTF-8 bytes).

    The last row is filled with separators whose predictions do not count. A figure to
    watch during training: the first token of each row is not predicted, so it reads about
    1/seq_len lower than the evaluation stage's sliding-window bits per byte.
    """
    import numpy as np
    import torch

    ids = ids if ids is not None else tokenise(texts[:HELDOUT_CANDIDATES], tok)
    chosen = _heldout_choice(texts, tok, max_tokens, ids)
    pieces = [p for i in chosen for p in (np.array([sep_id], dtype=np.int64), ids[i].astype(np.int64))]
    flat_ids = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.int64)
    n_bytes = sum(len(texts[i].encode("utf-8")) for i in chosen)
    rows = max(1, -(-len(flat_ids) // seq_len))
    flat = torch.full((rows * seq_len,), sep_id, dtype=torch.long)
    flat[: len(flat_ids)] = torch.from_numpy(flat_ids)
    real = torch.arange(rows * seq_len) < len(flat_ids)
    # per-token losses have shape (rows, seq_len - 1): position j of a row predicts its token j + 1
    counted = real.view(rows, seq_len)[:, 1:]
    return flat.view(rows, seq_len), counted, n_bytes
