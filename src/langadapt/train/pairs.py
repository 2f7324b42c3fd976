"""Training rows made of sentence pairs, and what each position of a row is (its segment).

The pair objectives (tlm, translation-clm, codeswitch-restore) train on pairs: a sentence and
its translation (or its code-switched copy and the original). A pair is laid out as

    <sep> first side <mid> second side

where `<sep>` is the run's document separator (`models/separator.py`) and `<mid>` the sides'
separator: the tokenizer's sep token for an encoder (XLM-R `</s>`, BERT `[SEP]`: the token its
pretraining put between two sentences), and for a decoder the text `train.pair_separator`
(default a newline) encoded on its own. Pairs are packed whole into rows of seq_len tokens;
where the next pair does not fit, the row is filled with separators (segment `FILLER`), which
no objective predicts or masks. A pair longer than a row is cut, each side keeping at least
half of what fits, and counted (`truncated`).

Each row comes with its segments, one small integer per position, made with the row on the
host (the layout is known there, never guessed from token ids):

- `SEPARATOR` (-1): the token that starts a document or a pair;
- `FILLER` (-2): a separator filling the end of a row;
- `TEXT` (0): monolingual text;
- `FIRST` (1) and `SECOND` (2): the two sides of a pair; the sides' separator is the first
  token of the second side;
- `PREFIX` (3): a metadata prefix (MeCo), never a prediction target.

From the segments an objective builds what the model reads (`segment_inputs`): attention
within each pair or document, positions that restart at every pair and again at its second
side (as XLM's TLM does), and token types (0 for the first side, 1 for the second) for
models that have two.

`direction: both` shows each pair in a random order (first side first or second), drawn per
pair and epoch from the seed, so a model translates both ways; `forward` keeps the file's order.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import torch

    from langadapt.train.config import TrainConfig

SEPARATOR, FILLER, TEXT, FIRST, SECOND, PREFIX = -1, -2, 0, 1, 2, 3
DIRECTIONS = ("both", "forward")


@dataclass
class PairStream:
    """Encoded pairs, shuffled per epoch and packed whole into rows of seq_len tokens, with their segments.

    `first` and `second` hold each pair's token ids per side (no special tokens). The stream's
    position (`state`/`restore`) is the epoch and the next pair, as TokenStream's: a row never
    leaves part of a pair for the next one.
    """

    first: list["np.ndarray"] = field(repr=False)
    second: list["np.ndarray"] = field(repr=False)
    sep_id: int
    mid_ids: tuple[int, ...]
    seq_len: int
    seed: int
    direction: str = "both"
    tok: Any = None
    epoch: int = 0
    next_doc: int = 0
    documents_started: int = 0
    truncated: int = 0
    languages: tuple[str, str] = ("", "")  # of the first and second side as read (LangSAMP)
    heldout: list[str] = field(default_factory=list)  # no held-out sample of pairs (train.eval_every skips them)
    _row_sides: "np.ndarray | None" = field(
        default=None, repr=False
    )  # per position of the last row: 0/1, which language
    _order: list[int] = field(default_factory=list, repr=False)
    _swap: list[bool] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        if not self.first or len(self.first) != len(self.second):
            raise ValueError("PairStream: no pairs to train on")
        if self.seq_len < len(self.mid_ids) + 3:
            raise ValueError("PairStream: seq_len too short for a pair")
        self._shuffle()

    def __len__(self) -> int:
        return len(self.first)

    def _shuffle(self) -> None:
        rng = random.Random(self.seed * 1_000_003 + self.epoch)
        self._order = list(range(len(self.first)))
        rng.shuffle(self._order)
        self._swap = [self.direction == "both" and rng.random() < 0.5 for _ in self._order]

    def _peek(self) -> tuple["np.ndarray", "np.ndarray"]:
        if self.next_doc >= len(self._order):
            self.epoch += 1
            self.next_doc = 0
            self._shuffle()
        k = self._order[self.next_doc]
        a, b = self.first[k], self.second[k]
        return (b, a) if self._swap[self.next_doc] else (a, b)

    def _fit(self, a: "np.ndarray", b: "np.ndarray") -> tuple["np.ndarray", "np.ndarray"]:
        """The two sides cut to fit one row with their separators, each keeping at least half of the room."""
        room = self.seq_len - 1 - len(self.mid_ids)
        if len(a) + len(b) <= room:
            return a, b
        keep_a = min(len(a), max(room // 2, room - len(b)))
        return a[:keep_a], b[: room - keep_a]

    def next_block_with_segments(self) -> tuple["np.ndarray", "np.ndarray"]:
        """The next row (int64 ids) and its segments (int8): whole pairs, then filler."""
        import numpy as np

        ids = np.full(self.seq_len, self.sep_id, dtype=np.int64)
        seg = np.full(self.seq_len, FILLER, dtype=np.int8)
        sides = np.zeros(self.seq_len, dtype=np.int64)
        n = 0
        while True:
            whole = self._peek()
            swapped = self._swap[self.next_doc]  # after the peek, which may have begun an epoch
            a, b = self._fit(*whole)
            size = 1 + len(a) + len(self.mid_ids) + len(b)
            if n + size > self.seq_len:
                break
            self.truncated += len(a) + len(b) < len(whole[0]) + len(whole[1])
            m = n + 1 + len(a)
            ids[n + 1 : m] = a
            ids[m : m + len(self.mid_ids)] = self.mid_ids
            ids[m + len(self.mid_ids) : n + size] = b
            seg[n], seg[n + 1 : m], seg[m : n + size] = SEPARATOR, FIRST, SECOND
            sides[n:m], sides[m : n + size] = int(swapped), 1 - int(swapped)
            n += size
            self.next_doc += 1
            self.documents_started += 1
        self._row_sides = sides
        return ids, seg

    def next_block(self) -> "np.ndarray":
        return self.next_block_with_segments()[0]

    def position_languages(self, index: dict[str, int]) -> "np.ndarray":
        """The last row's language index per position (`index`: language -> LangSAMP's row)."""
        import numpy as np

        assert self._row_sides is not None
        table = np.array([index.get(self.languages[0], 0), index.get(self.languages[1], 0)], dtype=np.int64)
        return table[self._row_sides]

    def state(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "next_doc": self.next_doc,
            "documents_started": self.documents_started,
            "truncated": self.truncated,
        }

    def restore(self, state: dict[str, Any]) -> None:
        self.epoch, self.next_doc = state["epoch"], state["next_doc"]
        self.documents_started, self.truncated = state["documents_started"], state.get("truncated", 0)
        self._shuffle()


def encode_pairs(texts: list[tuple[str, str]], tok: Any) -> tuple[list["np.ndarray"], list["np.ndarray"]]:
    """Each side's token ids, without special tokens, in batches (newlines inside a side become spaces:
    a decoder's default sides' separator is a newline)."""
    import numpy as np

    out = []
    for side in (0, 1):
        batch = [" ".join(t[side].split()) for t in texts]
        ids = tok(batch, add_special_tokens=False, verbose=False)["input_ids"] if batch else []
        out.append([np.asarray(x, dtype=np.int64) for x in ids])
    return out[0], out[1]


def sides_separator(tok: Any, masked: bool, text: str) -> tuple[int, ...]:
    """The ids between a pair's two sides: an encoder's sep token; a decoder's `text`, encoded alone."""
    if masked:
        token = tok.sep_token or tok.eos_token
        if token is None:
            raise ValueError("the tokenizer has no sep or eos token to put between a pair's sides")
        return (int(tok.convert_tokens_to_ids(token)),)
    ids = tok(text, add_special_tokens=False, verbose=False)["input_ids"]
    if not ids:
        raise ValueError(f"train.pair_separator {text!r} encodes to no token")
    return tuple(int(i) for i in ids)


def text_segments(ids: "np.ndarray", sep_id: int) -> "np.ndarray":
    """Segments of a monolingual row: separators, then text."""
    import numpy as np

    return np.where(ids == sep_id, SEPARATOR, TEXT).astype(np.int8)


def segment_positions(segments: "torch.Tensor", restart_second: bool = True) -> "torch.Tensor":
    """Position ids from 0 at every row start, separator and filler token, and (restart_second) again
    at the first token of a pair's second side."""
    import torch

    idx = torch.arange(segments.shape[1], device=segments.device).expand_as(segments)
    restart = (segments < 0) | (idx == 0)
    if restart_second:
        before = torch.cat([segments[:, :1], segments[:, :-1]], dim=1)
        restart = restart | ((segments == SECOND) & (before != SECOND))
    starts = torch.where(restart, idx, torch.zeros_like(idx))
    return idx - starts.cummax(dim=1).values


def segment_blocks(segments: "torch.Tensor") -> "torch.Tensor":
    """Which attention block each position is in: a new one at every separator and filler token."""
    import torch

    idx = torch.arange(segments.shape[1], device=segments.device).expand_as(segments)
    return torch.cumsum(((segments < 0) | (idx == 0)).long(), dim=1)


def segment_inputs(model: Any, segments: "torch.Tensor", offset: int = 0) -> dict[str, "torch.Tensor"]:
    """An encoder's attention mask (within each pair or document), position ids (restarting at each and at
    the second side, plus the model's `offset`) and token types (the second side 1 where the model has two)."""
    import torch

    blocks = segment_blocks(segments)
    out = {
        "attention_mask": (blocks[:, :, None] == blocks[:, None, :]).long(),
        "position_ids": segment_positions(segments) + offset,
    }
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    if getattr(inner.config, "type_vocab_size", 0) >= 2:
        out["token_type_ids"] = (segments == SECOND).long()
    else:
        out["token_type_ids"] = torch.zeros_like(segments, dtype=torch.long)
    return out


def predicted_counts(segments: "torch.Tensor", sides: str) -> "torch.Tensor":
    """Which next-token predictions count (batch, seq_len - 1): position j predicts token j + 1.

    sides `second`: the tokens of a pair's second side and the separator that ends it (the model
    learns where a translation stops); `both`: both sides, and the end. Monolingual text counts
    whole, as in clm, separators included; filler and metadata prefixes never count.
    """
    nxt, cur = segments[:, 1:], segments[:, :-1]
    ends = (nxt == SEPARATOR) | (nxt == FILLER)
    text = (nxt == TEXT) | ((nxt == SEPARATOR) & (cur == TEXT))
    if sides == "second":
        pair = (nxt == SECOND) | (ends & (cur == SECOND))
    else:
        pair = (nxt == FIRST) | (nxt == SECOND) | (ends & ((cur == FIRST) | (cur == SECOND)))
    return text | pair


def build_pair_stream(
    cfg: "TrainConfig",
    tok: Any,
    sep_id: int,
    masked: bool,
    seed: int,
    target: str,
    replay: str | None,
    heldout_groups: set[str],
) -> tuple[str, PairStream, dict[str, Any]]:
    """The stream of train.parallel's pairs (held-out groups left out), its key (`<first>-<second>`) and a record."""
    from langadapt.sources.parallel import pair_languages, read_pairs

    assert cfg.parallel is not None
    first, second = pair_languages(cfg.parallel, target, replay)
    pairs = read_pairs(cfg.parallel)
    kept = [p for p in pairs if p.group not in heldout_groups]
    if not kept:
        from langadapt.errors import InputError

        raise InputError(
            f"train.parallel: all {len(pairs)} pairs belong to held-out groups ({', '.join(sorted(heldout_groups))}); "
            "give pairs of the training text, or raise train.parallel.max_pairs"
        )
    a, b = encode_pairs([(p.first, p.second) for p in kept], tok)
    mid = sides_separator(tok, masked, cfg.pair_separator)
    stream = PairStream(a, b, sep_id, mid, cfg.seq_len, seed, cfg.pair_direction, tok=tok, languages=(first, second))
    record = {
        "path": cfg.parallel.path,
        "languages": [first, second],
        "pairs_read": len(pairs),
        "pairs_held_out": len(pairs) - len(kept),  # their group (a Bible book) is held out of training
        "pairs": len(kept),
        "tokens": int(sum(len(x) for x in a) + sum(len(x) for x in b)),
        "sides_separator": list(mid),
        "direction": cfg.pair_direction,
    }
    return f"{first}-{second}", stream, record
