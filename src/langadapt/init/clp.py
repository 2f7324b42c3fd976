"""CLP-Transfer (Ostendorff & Rehm, 2023): similarities from a small helper model, values from the base.

A small model already trained on the target language knows which target tokens are alike;
the large base model knows good rows for the tokens it shares with the new vocabulary. A
new token's row is the base rows of its k most similar shared tokens, weighted by their
cosine similarity in the helper's embedding space (clipped at zero, normalised to sum 1).

The helper's vocabulary is matched to the new one by token string. A new token the helper
lacks is spelled with the helper's own tokenizer and given the mean of those pieces' helper
rows; a token it cannot spell falls back to FVT. The same helper space serves OMP as its
donor space.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from langadapt.errors import ConfigError, InputError
from langadapt.init.focus import Anchors, nearest
from langadapt.init.methods import (
    INIT_METHODS,
    InitContext,
    InitInputs,
    InitRows,
    Mixture,
    decompose,
    mixture_rows,
    pieces_mixture,
    replace_rows,
)

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)


def helper_space(ctx: InitContext) -> dict[str, Any]:
    """The helper model's input embeddings and tokenizer, loaded once."""

    def load() -> dict[str, Any]:
        from langadapt.config import ModelConfig
        from langadapt.models.loading import load_model, load_tokenizer, resolve_base

        if not ctx.config.helper_model:
            raise ConfigError(["init.helper_model: this method needs a helper model trained on the target language"])
        path = resolve_base(ModelConfig(base=ctx.config.helper_model))
        model = load_model(path, "float32")
        tok = load_tokenizer(path)
        rows = model.get_input_embeddings().weight.detach().double().clone()
        log.info("helper model %s: %d x %d embeddings", ctx.config.helper_model, *rows.shape)
        return {"rows": rows, "tokenizer": tok, "vocab": tok.get_vocab()}

    return ctx.once("helper", load)


def helper_vector(helper: dict[str, Any], token: str) -> "torch.Tensor | None":
    """A token's helper row by string, else the mean of its pieces under the helper tokenizer."""
    vocab, rows = helper["vocab"], helper["rows"]
    if token in vocab and vocab[token] < rows.shape[0]:
        return rows[vocab[token]]
    ids = [i for i in decompose(token, helper["tokenizer"], vocab) if i < rows.shape[0]]
    return rows[ids].mean(0) if ids else None


def helper_anchors(ctx: InitContext) -> Anchors:
    """Old tokens the helper also has, with their helper rows."""
    import torch

    helper = helper_space(ctx)
    vocab, rows = helper["vocab"], helper["rows"]
    pairs = sorted((oid, vocab[t]) for t, oid in ctx.old_tokenizer.get_vocab().items() if t in vocab)
    pairs = [(o, h) for o, h in pairs if h < rows.shape[0]]
    if not pairs:
        raise InputError(
            f"the helper model {ctx.config.helper_model} shares no token with the base vocabulary",
            hint="a helper for clp/omp must use a tokenizer that overlaps the base model's",
        )
    return Anchors(torch.tensor([o for o, _ in pairs]), rows[[h for _, h in pairs]])


def helper_queries(ctx: InitContext, tokens: list[str]) -> tuple["torch.Tensor", "torch.Tensor"]:
    import torch

    helper = helper_space(ctx)
    vecs = torch.zeros(len(tokens), helper["rows"].shape[1], dtype=torch.float64)
    usable = torch.zeros(len(tokens), dtype=torch.bool)
    for i, t in enumerate(tokens):
        v = helper_vector(helper, t)
        if v is not None:
            vecs[i], usable[i] = v, True
    return vecs, usable


def clp_mixture(x: InitInputs) -> Mixture:
    ctx = x.need_context("clp")
    anchors = helper_anchors(ctx)
    queries, usable = helper_queries(ctx, x.tokens)
    sims, pos = nearest(queries, anchors.vectors, ctx.config.neighbours, ctx.device)
    weights = sims.clamp(min=0)
    totals = weights.sum(1)
    rows = [i for i in usable.nonzero().flatten().tolist() if float(totals[i]) > 0]  # else FVT
    ids = [anchors.old_ids[pos[i]] for i in rows]
    return replace_rows(pieces_mixture(x.pieces), rows, ids, [weights[i] / totals[i] for i in rows], "clp")


@INIT_METHODS.register(
    "clp",
    help="CLP-Transfer: base rows of the most similar shared tokens, similarities from a small helper model "
    "trained on the target language (init.helper_model) (Ostendorff & Rehm 2023)",
)
def init_clp(x: InitInputs) -> InitRows:
    return mixture_rows(x, x.mixture or clp_mixture(x))
