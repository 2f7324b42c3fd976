"""The registry of init methods, what every method is given, and what it returns.

A method returns one row per new token for one matrix: the input embeddings, an untied
output head (in its own space), or an output bias (a one-column matrix). Rows of tokens
the base vocabulary already has are copied by the stage, never by a method.

Most methods compute, once, a mixture per new token: which old tokens, with which
weights. The same mixture is applied to every matrix (so an untied head gets its rows
from its own space by the same method) and is what `init_report.json` shows as the
token's sources. Expensive shared work (fastText vectors, dictionaries, a helper model)
is done once per stage through `InitContext.once` and cached in the run directory.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from langadapt.errors import InputError
from langadapt.registry import Registry

if TYPE_CHECKING:
    import torch

    from langadapt.init.config import InitConfig


@dataclass
class InitContext:
    """What the whole stage knows, shared by the passes over each matrix."""

    config: "InitConfig"
    seed: int
    old_tokenizer: Any  # the base tokenizer (its ids index the old rows)
    new_tokenizer: Any  # the adapted tokenizer
    cache: Path  # run-directory folder for vectors and dictionaries; survives re-runs and --force
    target_texts: Callable[[], list[str]]  # training text of the target language
    source_texts: Callable[[], list[str]]  # text of the source (replay) language; [] when there is none
    source_language: str = ""
    target_language: str = ""
    memo: dict[str, Any] = field(default_factory=dict)

    def once(self, key: str, compute: Callable[[], Any]) -> Any:
        """The result of `compute`, computed on the first call for `key` only."""
        if key not in self.memo:
            self.memo[key] = compute()
        return self.memo[key]


@dataclass
class InitInputs:
    old: "torch.Tensor"  # (old_vocab, dim) rows of one matrix (input embeddings, output head or bias)
    pieces: list[list[int]]  # per new token: its old-token decomposition (may be empty)
    generator: "torch.Generator"
    init_std: float
    tokens: list[str] = field(default_factory=list)  # per new token: its string in the tokenizer's alphabet
    space: str = "input"  # input | output | output-bias
    context: InitContext | None = None

    def need_context(self, method: str) -> InitContext:
        if self.context is None:
            raise InputError(f"init method '{method}' needs the stage context (corpus, tokenizers, cache)")
        return self.context


@dataclass
class Mixture:
    """Per new token, a weighted combination of old tokens (padded with weight 0)."""

    ids: "torch.Tensor"  # (n_new, k) long
    weights: "torch.Tensor"  # (n_new, k) float64
    how: list[str]  # per new token: the method that chose the weights (a fallback names itself)

    def apply(self, old: "torch.Tensor") -> "torch.Tensor":
        rows = (self.weights.unsqueeze(-1) * old[self.ids].double()).sum(1)
        return rows.to(old.dtype)

    def sources(self, i: int, top: int = 32) -> list[tuple[int, float]]:
        """The old tokens with the largest |weight| for new token i."""
        pairs = [(int(t), float(w)) for t, w in zip(self.ids[i], self.weights[i]) if float(w) != 0.0]
        return sorted(pairs, key=lambda p: -abs(p[1]))[:top]


@dataclass
class InitRows:
    rows: "torch.Tensor"  # (n_new, dim), dtype of the old matrix
    how: list[str]  # per new token: the method that produced its row
    mixture: Mixture | None = None  # the old tokens combined, for methods that combine old rows


def pieces_mixture(pieces: list[list[int]], name: str = "fvt") -> Mixture:
    """Equal weights over each token's pieces; tokens without pieces get the mean of all rows
    (marked 'mean'), which the caller fills in."""
    import torch

    k = max((len(p) for p in pieces), default=1) or 1
    ids = torch.zeros(len(pieces), k, dtype=torch.long)
    weights = torch.zeros(len(pieces), k, dtype=torch.float64)
    for i, p in enumerate(pieces):
        if p:
            ids[i, : len(p)] = torch.tensor(p)
            weights[i, : len(p)] = 1.0 / len(p)
    return Mixture(ids, weights, [name if p else "mean" for p in pieces])


def mixture_rows(x: InitInputs, mix: Mixture) -> InitRows:
    """Apply a mixture to one matrix; tokens with no weights get the mean of the old rows."""
    rows = mix.apply(x.old)
    empty = mix.weights.abs().sum(1) == 0
    if bool(empty.any()):
        rows[empty] = x.old.mean(0).to(rows.dtype)
    return InitRows(rows, list(mix.how), mix)


InitMethod = Callable[[InitInputs], InitRows]
INIT_METHODS: Registry[InitMethod] = Registry("init-methods")


def decompose(token: str, base_tok: Any, vocab: dict[str, int] | None = None) -> list[int]:
    """Old-token ids of a new token, applying the old model's own segmentation to its spelling.

    Working on the token string in the tokenizer's alphabet (e.g. 'Ġndipo', '▁ndipo')
    avoids decode/re-encode problems with partial UTF-8 byte tokens. A WordPiece
    continuation ('##ndi') is spelled without its marker, then its first piece is taken
    as a continuation too.
    """
    model = base_tok.backend_tokenizer.model
    continuation = token.startswith("##") and len(token) > 2
    try:
        ids = [t.id for t in model.tokenize(token[2:] if continuation else token)]
    except Exception:  # a token the old model cannot spell (e.g. unseen characters, no byte fallback)
        return []
    if continuation and ids:
        vocab = vocab if vocab is not None else base_tok.get_vocab()  # pass it in loops: get_vocab() is slow
        first = model.id_to_token(ids[0])
        if "##" + first in vocab:
            ids[0] = vocab["##" + first]
    unk = getattr(base_tok, "unk_token_id", None)
    return [] if unk is not None and unk in ids else ids
