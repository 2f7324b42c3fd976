"""FOCUS (Dobler & de Melo, 2023): new rows as sparse combinations of overlapping tokens.

fastText vectors are trained on the target corpus as the new tokenizer segments it, so
every token of the new vocabulary, old or new, has a vector in one space. Tokens the new
vocabulary shares with the old one (and that the corpus shows) are anchors: their rows
in the model are known. As in the paper, a new token's row is the sum of the anchors'
rows weighted by sparsemax over its cosine similarities to every anchor; sparsemax gives
most anchors exactly zero, and only the non-zero weights are kept (a few to some dozens
per token, whatever the number of anchors). `init.focus_top_k` is a variant that keeps
only the k most similar anchors before sparsemax (cheaper to sort, and a support of at
most k). A new token the corpus never shows has no trained vector and falls back to FVT
(the mean of its pieces); the paper samples such rows from the old rows' normal instead.

The helpers here (anchors, nearest neighbours, sparsemax) are shared by OMP and OFA.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from langadapt.errors import InputError
from langadapt.init.methods import (
    INIT_METHODS,
    InitContext,
    InitInputs,
    InitRows,
    Mixture,
    mixture_rows,
    pieces_mixture,
    replace_rows,
)

if TYPE_CHECKING:
    import torch

    from langadapt.init.vectors import Space

SIMILARITY_BLOCK = 1 << 22  # similarities computed at once (queries x anchors): 32 MB in float64


@dataclass
class Anchors:
    """Old tokens that also have a vector in a donor space."""

    old_ids: "torch.Tensor"  # (A,) ids in the old vocabulary
    vectors: "torch.Tensor"  # (A, d) their donor-space vectors (float64)


def new_token_space(ctx: InitContext) -> "Space":
    """fastText vectors of the new tokenizer's tokens, trained on the target corpus (cached)."""
    from langadapt.init.vectors import token_space

    def build() -> "Space":
        texts = ctx.target_texts()
        if not texts:
            raise InputError("the target corpus is empty; fastText vectors cannot be trained")
        c = ctx.config
        return token_space(ctx.cache, ctx.new_tokenizer, texts, c.vector_dim, c.vector_epochs, ctx.seed)

    return ctx.once("new-token-space", build)


def token_anchors(ctx: InitContext, space: "Space") -> Anchors:
    """Tokens of the new vocabulary that the old vocabulary has and the corpus trained."""
    import torch

    old_vocab = ctx.old_tokenizer.get_vocab()
    rows = [(old_vocab[k], i) for i, k in enumerate(space.keys) if k in old_vocab and space.trained[i]]
    if not rows:
        raise InputError(
            "no token of the new vocabulary is both in the old vocabulary and in the target corpus, so there is "
            "nothing to anchor new rows to",
            hint="use init.method fvt, or a tokenizer that keeps part of the base vocabulary",
        )
    old_ids = torch.tensor([r[0] for r in rows], dtype=torch.long)
    vectors = torch.from_numpy(space.vectors[[r[1] for r in rows]]).double()
    return Anchors(old_ids, vectors)


def query_vectors(space: "Space", tokens: list[str]) -> tuple["torch.Tensor", "torch.Tensor"]:
    """(vectors, usable) for new tokens: usable where the corpus trained a vector for the token."""
    import torch

    index = space.index()
    pos = [index.get(t, -1) for t in tokens]
    usable = torch.tensor([p >= 0 and bool(space.trained[p]) for p in pos], dtype=torch.bool)
    vecs = torch.zeros(len(tokens), space.vectors.shape[1], dtype=torch.float64)
    for i, p in enumerate(pos):
        if p >= 0:
            vecs[i] = torch.from_numpy(space.vectors[p]).double()
    return vecs, usable


def nearest(
    queries: "torch.Tensor", anchors: "torch.Tensor", k: int, device: "torch.device | None" = None
) -> tuple["torch.Tensor", "torch.Tensor"]:
    """(cosine similarities, anchor positions) of the k most similar anchors, in chunks, computed on `device`
    (default: where the tensors are) and returned on the CPU."""
    import torch

    a = torch.nn.functional.normalize(anchors.to(device or anchors.device), dim=1)
    k = min(k, a.shape[0])
    sims, idx = [], []
    for start in range(0, queries.shape[0], 1024):
        q = torch.nn.functional.normalize(queries[start : start + 1024].to(a.device), dim=1)
        s, i = (q @ a.T).topk(k, dim=1)
        sims.append(s.cpu())
        idx.append(i.cpu())
    if not sims:
        return torch.zeros(0, k, dtype=anchors.dtype), torch.zeros(0, k, dtype=torch.long)
    return torch.cat(sims), torch.cat(idx)


def sparsemax(z: "torch.Tensor") -> "torch.Tensor":
    """Sparsemax over the last dimension (Martins & Astudillo, 2016): a projection onto the
    simplex that sets small scores exactly to zero."""
    import torch

    zs, _ = z.sort(dim=-1, descending=True)
    ks = torch.arange(1, z.shape[-1] + 1, dtype=z.dtype, device=z.device)
    cumsum = zs.cumsum(-1) - 1
    support = (zs - cumsum / ks) > 0
    k_z = support.sum(-1, keepdim=True).clamp(min=1)
    tau = cumsum.gather(-1, k_z - 1) / k_z.to(z.dtype)
    return (z - tau).clamp(min=0)


def similarity_mixture(x: InitInputs, name: str, weigh: Callable[["torch.Tensor"], "torch.Tensor"], k: int) -> Mixture:
    """A mixture over the k nearest anchors in the new-token fastText space; `weigh` turns
    similarities into weights. Tokens without a trained vector get FVT."""
    ctx = x.need_context(name)
    space = new_token_space(ctx)
    anchors = token_anchors(ctx, space)
    queries, usable = query_vectors(space, x.tokens)
    rows = usable.nonzero().flatten()
    sims, pos = nearest(queries[rows], anchors.vectors, k, ctx.device)
    weights = weigh(sims)
    ids = [anchors.old_ids[p] for p in pos]
    return replace_rows(pieces_mixture(x.pieces), rows.tolist(), ids, list(weights), name)


def sparsemax_rows(
    queries: "torch.Tensor", anchors: "torch.Tensor", top_k: int = 0, device: "torch.device | None" = None
) -> tuple[list["torch.Tensor"], list["torch.Tensor"]]:
    """Per query, (anchor positions, weights) of sparsemax over its cosine similarities to every
    anchor (top_k > 0: to its top_k most similar anchors only), keeping the non-zero weights.

    Similarities are computed for a block of queries at a time, so memory stays at one block
    times the anchors whatever the number of queries; on `device` (default: where the tensors
    are), the results on the CPU.
    """
    import torch

    a = torch.nn.functional.normalize(anchors.to(device or anchors.device), dim=1)
    block = max(1, SIMILARITY_BLOCK // max(a.shape[0], 1))
    positions: list[torch.Tensor] = []
    weights: list[torch.Tensor] = []
    for start in range(0, queries.shape[0], block):
        q = torch.nn.functional.normalize(queries[start : start + block].to(a.device), dim=1)
        sims = q @ a.T
        if top_k:
            sims, idx = sims.topk(min(top_k, a.shape[0]), dim=1)
            idx = idx.cpu()
        else:
            idx = torch.arange(a.shape[0]).expand(sims.shape[0], -1)
        p = sparsemax(sims).cpu()
        for r in range(p.shape[0]):
            keep = p[r] > 0
            positions.append(idx[r][keep])
            weights.append(p[r][keep])
    return positions, weights


def focus_mixture(x: InitInputs) -> Mixture:
    """FOCUS: sparsemax over the similarities to the anchors; tokens without a trained vector get FVT."""
    ctx = x.need_context("focus")
    space = new_token_space(ctx)
    anchors = token_anchors(ctx, space)
    queries, usable = query_vectors(space, x.tokens)
    rows = usable.nonzero().flatten()
    positions, weights = sparsemax_rows(queries[rows], anchors.vectors, ctx.config.focus_top_k, ctx.device)
    ids = [anchors.old_ids[p] for p in positions]
    return replace_rows(pieces_mixture(x.pieces), rows.tolist(), ids, weights, "focus")


@INIT_METHODS.register(
    "focus",
    help="sparsemax over the similarities to every overlapping token, in fastText vectors trained on the target "
    "corpus (Dobler & de Melo 2023; init.focus_top_k truncates to the most similar first); needs the init extra",
)
def init_focus(x: InitInputs) -> InitRows:
    return mixture_rows(x, x.mixture or focus_mixture(x))
