"""FOCUS (Dobler & de Melo, 2023): new rows as sparse combinations of overlapping tokens.

fastText vectors are trained on the target corpus as the new tokenizer segments it, so
every token of the new vocabulary, old or new, has a vector in one space. Tokens the new
vocabulary shares with the old one (and that the corpus shows) are anchors: their rows
in the model are known. A new token's row is the sparsemax-weighted sum of the rows of
its most similar anchors; sparsemax keeps the few anchors that matter and gives the rest
exactly zero. A new token the corpus never shows has no trained vector and falls back to
FVT (the mean of its pieces).

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
)

if TYPE_CHECKING:
    import torch

    from langadapt.init.vectors import Space


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


def nearest(queries: "torch.Tensor", anchors: "torch.Tensor", k: int) -> tuple["torch.Tensor", "torch.Tensor"]:
    """(cosine similarities, anchor positions) of the k most similar anchors, in chunks."""
    import torch

    a = torch.nn.functional.normalize(anchors, dim=1)
    k = min(k, a.shape[0])
    sims, idx = [], []
    for start in range(0, queries.shape[0], 1024):
        q = torch.nn.functional.normalize(queries[start : start + 1024], dim=1)
        s, i = (q @ a.T).topk(k, dim=1)
        sims.append(s)
        idx.append(i)
    if not sims:
        return torch.zeros(0, k, dtype=anchors.dtype), torch.zeros(0, k, dtype=torch.long)
    return torch.cat(sims), torch.cat(idx)


def sparsemax(z: "torch.Tensor") -> "torch.Tensor":
    """Sparsemax over the last dimension (Martins & Astudillo, 2016): a projection onto the
    simplex that sets small scores exactly to zero."""
    import torch

    zs, _ = z.sort(dim=-1, descending=True)
    ks = torch.arange(1, z.shape[-1] + 1, dtype=z.dtype)
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
    sims, pos = nearest(queries, anchors.vectors, k)
    mix = pieces_mixture(x.pieces)
    width = max(mix.ids.shape[1], sims.shape[1])
    mix = widen(mix, width)
    weights = weigh(sims)
    for i in usable.nonzero().flatten().tolist():
        mix.ids[i] = 0
        mix.weights[i] = 0
        mix.ids[i, : pos.shape[1]] = anchors.old_ids[pos[i]]
        mix.weights[i, : pos.shape[1]] = weights[i]
        mix.how[i] = name
    return mix


def widen(mix: Mixture, width: int) -> Mixture:
    import torch

    pad = width - mix.ids.shape[1]
    if pad <= 0:
        return mix
    ids = torch.cat([mix.ids, torch.zeros(mix.ids.shape[0], pad, dtype=torch.long)], 1)
    weights = torch.cat([mix.weights, torch.zeros(mix.ids.shape[0], pad, dtype=mix.weights.dtype)], 1)
    return Mixture(ids, weights, mix.how)


@INIT_METHODS.register(
    "focus",
    help="sparsemax over the most similar overlapping tokens in fastText vectors trained on the target corpus "
    "(Dobler & de Melo 2023); needs the init extra",
)
def init_focus(x: InitInputs) -> InitRows:
    ctx = x.need_context("focus")
    k = ctx.config.neighbours
    mix = ctx.once("mixture:focus", lambda: similarity_mixture(x, "focus", sparsemax, k))
    return mixture_rows(x, mix)
