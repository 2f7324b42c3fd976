"""The registry of init methods, what every method is given, and what it returns.

A method returns one row per new token for one matrix: the input embeddings, an untied
output head (in its own space), or an output bias (a one-column matrix). Rows of tokens
the base vocabulary already has are copied by the stage, never by a method.

Most methods compute, once, a mixture per new token: which old tokens, with which
weights. The stage hands the mixture a method chose for the first matrix back to it for
the others (`InitInputs.mixture`), so an untied head gets its rows from its own space by
the same combination, and the mixture is what `init_report.json` shows as the token's
sources. What a method has to tell the stage travels in its result (`InitRows`): the
rows, the mixture, a report for `init_report.json`, and factors to save beside the model.
Expensive work shared by several methods (fastText vectors, dictionaries, a helper model)
is done once per stage through `InitContext.once` and cached in the run directory.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

from langadapt.errors import InputError
from langadapt.registry import Registry

if TYPE_CHECKING:
    import torch

    from langadapt.init.config import InitConfig

APPLY_CHUNK = 1 << 22  # old-row values gathered at once when a mixture is applied (32 MB in float64)


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
    device: Any = None  # a torch device for the similarity searches (init.device); None: the CPU

    def once(self, key: str, compute: Callable[[], Any]) -> Any:
        """Shared work (vectors, a helper model, parallel text): `compute` runs on the first call for `key` only."""
        if key not in self.memo:
            self.memo[key] = compute()
        return self.memo[key]


@dataclass
class Mixture:
    """Per new token, a weighted combination of old tokens, stored sparse.

    Token i combines old ids `ids[offsets[i]:offsets[i + 1]]` with the weights at the same
    positions; only non-zero weights are kept, so a token may combine any number of old
    tokens without a dense (new x old) matrix.
    """

    offsets: "torch.Tensor"  # (n_new + 1,) long
    ids: "torch.Tensor"  # (entries,) long: old-token ids
    weights: "torch.Tensor"  # (entries,) float64
    how: list[str]  # per new token: the method that chose the weights (a fallback names itself)

    def row(self, i: int) -> tuple["torch.Tensor", "torch.Tensor"]:
        """(old ids, weights) of new token i."""
        start, end = int(self.offsets[i]), int(self.offsets[i + 1])
        return self.ids[start:end], self.weights[start:end]

    def sizes(self) -> "torch.Tensor":
        """(n_new,) how many old tokens each new token combines."""
        return self.offsets[1:] - self.offsets[:-1]

    def apply(self, old: "torch.Tensor") -> "torch.Tensor":
        """(n_new, dim) rows: each token's weighted sum of old rows, summed in float64."""
        import torch

        n, dim = len(self.how), old.shape[1]
        out = torch.zeros(n, dim, dtype=torch.float64)
        owner = torch.repeat_interleave(torch.arange(n), self.sizes())
        step = max(1, APPLY_CHUNK // max(dim, 1))
        for start in range(0, len(self.ids), step):
            part = slice(start, start + step)
            out.index_add_(0, owner[part], old[self.ids[part]].double() * self.weights[part].unsqueeze(1))
        return out.to(old.dtype)

    def sources(self, i: int, top: int = 32) -> list[tuple[int, float]]:
        """The old tokens with the largest |weight| for new token i."""
        ids, weights = self.row(i)
        pairs = [(int(t), float(w)) for t, w in zip(ids, weights)]
        return sorted(pairs, key=lambda p: -abs(p[1]))[:top]


def sparse_mixture(ids: Sequence["torch.Tensor"], weights: Sequence["torch.Tensor"], how: list[str]) -> Mixture:
    """A mixture from per-token (old ids, weights); zero weights are dropped."""
    import torch

    keep = [w != 0 for w in weights]
    ids = [i[k].long() for i, k in zip(ids, keep)]
    weights = [w[k].double() for w, k in zip(weights, keep)]
    sizes = torch.tensor([len(i) for i in ids], dtype=torch.long)
    offsets = torch.zeros(len(ids) + 1, dtype=torch.long)
    offsets[1:] = sizes.cumsum(0)
    flat_ids = torch.cat(ids) if ids else torch.zeros(0, dtype=torch.long)
    flat_weights = torch.cat(weights) if weights else torch.zeros(0, dtype=torch.float64)
    return Mixture(offsets, flat_ids, flat_weights, list(how))


def replace_rows(
    mix: Mixture,
    rows: Sequence[int],
    ids: Sequence["torch.Tensor"],
    weights: Sequence["torch.Tensor"],
    how: str,
) -> Mixture:
    """`mix` with new tokens `rows` combining `ids[r]` with `weights[r]` instead, recorded as made by `how`.

    The one way a method overrides a fallback (FVT) mixture for the tokens it can place.
    """
    per_ids = [mix.row(i)[0] for i in range(len(mix.how))]
    per_weights = [mix.row(i)[1] for i in range(len(mix.how))]
    labels = list(mix.how)
    for r, i in enumerate(rows):
        per_ids[i], per_weights[i], labels[i] = ids[r], weights[r], how
    return sparse_mixture(per_ids, per_weights, labels)


@dataclass
class InitInputs:
    old: "torch.Tensor"  # (old_vocab, dim) rows of one matrix (input embeddings, output head or bias)
    pieces: list[list[int]]  # per new token: its old-token decomposition (may be empty)
    generator: "torch.Generator"
    init_std: float
    tokens: list[str] = field(default_factory=list)  # per new token: its string in the tokenizer's alphabet
    space: str = "input"  # input | output | output-bias
    context: InitContext | None = None
    # the mixture this method returned for the stage's first matrix: reuse it, so that every
    # matrix combines the same old tokens (None on the first matrix)
    mixture: Mixture | None = None

    def need_context(self, method: str) -> InitContext:
        if self.context is None:
            raise InputError(f"init method '{method}' needs the stage context (corpus, tokenizers, cache)")
        return self.context


@dataclass
class InitRows:
    rows: "torch.Tensor"  # (n_new, dim), dtype of the old matrix
    how: list[str]  # per new token: the method that produced its row
    mixture: Mixture | None = None  # the old tokens combined, for methods that combine old rows
    report: dict[str, Any] | None = None  # what the method adds to init_report.json, under its own name
    factors: Any = None  # the matrix's factorisation (OFA's primitives), saved beside the model


def pieces_mixture(pieces: list[list[int]], name: str = "fvt") -> Mixture:
    """Equal weights over each token's pieces; tokens without pieces get the mean of all rows
    (marked 'mean'), which the caller fills in."""
    import torch

    ids = [torch.tensor(p, dtype=torch.long) for p in pieces]
    weights = [torch.full((len(p),), 1.0 / len(p), dtype=torch.float64) if p else torch.zeros(0) for p in pieces]
    return sparse_mixture(ids, weights, [name if p else "mean" for p in pieces])


def mixture_rows(x: InitInputs, mix: Mixture) -> InitRows:
    """Apply a mixture to one matrix; tokens with no weights get the mean of the old rows."""
    rows = mix.apply(x.old)
    empty = mix.sizes() == 0
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
