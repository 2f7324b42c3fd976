"""Metadata conditioning then cool-down (MeCo, Gao et al. 2025, "Metadata Conditioning Accelerates
Language Model Pre-training"), for decoders.

Each target document is prefixed with its metadata, `URL: <domain>\\n\\n` as in the paper
(`train.meco_template`): the domain of the document's URL when the corpus has one (a `url`
field in jsonl, csv or parquet input), else the name of the corpus source it came from. The
prefix is context only: the next-token loss never predicts a prefix token, while the
document's first token is predicted from it. The paper ends with a cool-down on plain text
(its last 10% of steps) so that the model needs no metadata at inference; here that is a
phase with `objective: clm` after the `meco` phase, which validation asks for:

    phases:
      - {name: meco, method: lora, max_steps: 90, objective: meco}
      - {name: cooldown, method: lora, max_steps: 10}          # train.objective: clm

The metadata rows are the target language's (replay rows stay plain text); the prefix of a
document is its first tokens in the row, with segment `PREFIX` (`train/pairs.py`), so a
document cut at a row boundary continues without it as ordinary text does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from langadapt.train.data import TokenStream
from langadapt.train.objectives import OBJECTIVES, clm_loss
from langadapt.train.pairs import PREFIX, SEPARATOR, TEXT, predicted_counts, segment_positions

if TYPE_CHECKING:
    import numpy as np
    import torch

DEFAULT_TEMPLATE = "URL: {domain}\n\n"


def domain(url: str) -> str:
    """The host of a URL without `www.` (the paper's metadata); '' when it has none."""
    host = urlparse(url if "//" in url else f"//{url}").netloc.split("@")[-1].split(":")[0].lower()
    return host[4:] if host.startswith("www.") else host


def source_name(path: str) -> str:
    """A corpus source's name for the metadata: `bible-nya` for builtin:bible-nya, a file's stem."""
    if ":" in path.split("/")[0]:
        return path.split(":", 1)[1]
    return Path(path).name.split(".")[0] or path


@OBJECTIVES.register(
    "meco",
    help="decoders: MeCo metadata conditioning: each target document prefixed with URL: <domain> (train.meco_template; "
    "the source's name without a URL), no loss on the prefix; follow it with a clm phase (the cool-down)",
)
def meco_loss(model: Any, input_ids: "torch.Tensor", segments: "torch.Tensor") -> "torch.Tensor":
    """The next-token loss over every prediction but those of prefix tokens, per row: (batch, 1)."""
    loss = clm_loss(model, input_ids, segment_positions(segments, restart_second=False))
    counted = predicted_counts(segments, "both")
    return ((loss * counted).sum(dim=1) / counted.sum(dim=1).clamp(min=1)).unsqueeze(1)


class MetadataLM:
    """`meco` as the loop calls it: every target row from the stream with metadata (`target_stream`)."""

    target_share = 1.0

    def __init__(self, target_stream: str) -> None:
        self.target_stream = target_stream

    def __call__(self, model: Any, input_ids: "torch.Tensor", segments: "torch.Tensor") -> "torch.Tensor":
        return meco_loss(model, input_ids, segments)


@dataclass
class MetadataStream(TokenStream):
    """Target documents, each after its metadata prefix, packed as TokenStream packs them, with segments."""

    prefixes: list[str] = field(default_factory=list, repr=False)  # per document: its prefix text
    prefix_left: int = 0  # prefix tokens at the start of `buffer` (a row ended inside a prefix)
    _encoded: dict[str, "np.ndarray"] = field(default_factory=dict, repr=False)
    _last: int = field(default=-1, repr=False)

    def _prefix_ids(self, k: int) -> "np.ndarray":
        import numpy as np

        text = self.prefixes[k]
        if text not in self._encoded:
            ids = self.tok(text, add_special_tokens=False, verbose=False)["input_ids"]
            self._encoded[text] = np.asarray(ids, dtype=np.int64)
        return self._encoded[text]

    def _next_document(self) -> "np.ndarray":
        import numpy as np

        if self.next_doc >= len(self._order):
            self.epoch += 1
            self.next_doc = 0
            self._shuffle()
        self._last = self._order[self.next_doc]
        self.next_doc += 1
        self.documents_started += 1
        return np.concatenate([self._prefix_ids(self._last), self.docs[self._last].astype(np.int64)])

    def next_block_with_segments(self) -> tuple["np.ndarray", "np.ndarray"]:
        import numpy as np

        ids = np.empty(self.seq_len, dtype=np.int64)
        seg = np.full(self.seq_len, TEXT, dtype=np.int8)
        n = min(len(self.buffer), self.seq_len)
        ids[:n], rest = self.buffer[:n], self.buffer[n:]
        seg[: min(self.prefix_left, n)] = PREFIX
        left = max(0, self.prefix_left - n)
        while n < self.seq_len:
            doc = self._next_document()
            n_prefix = len(self._prefix_ids(self._last))
            ids[n], seg[n] = self.sep_id, SEPARATOR
            take = min(len(doc), self.seq_len - n - 1)
            ids[n + 1 : n + 1 + take] = doc[:take]
            seg[n + 1 : n + 1 + min(n_prefix, take)] = PREFIX
            left = max(0, n_prefix - take)
            n, rest = n + 1 + take, doc[take:]
        self.buffer, self.prefix_left = rest, left
        return ids, seg

    def next_block(self) -> "np.ndarray":
        return self.next_block_with_segments()[0]

    def state(self) -> dict[str, Any]:
        return {**super().state(), "prefix_left": self.prefix_left}

    def restore(self, state: dict[str, Any]) -> None:
        super().restore(state)
        self.prefix_left = state.get("prefix_left", 0)


def metadata_prefixes(template: str, urls: list[str] | None, n: int, source: str) -> tuple[list[str], dict[str, int]]:
    """Each document's prefix text, and how many took a URL's domain and how many the source's name."""
    out, by = [], {"url_domain": 0, "source_name": 0}
    for i in range(n):
        host = domain(urls[i]) if urls and urls[i] else ""
        by["url_domain" if host else "source_name"] += 1
        out.append(template.format(domain=host or source))
    return out, by
