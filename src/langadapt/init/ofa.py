"""OFA (Liu et al., 2023): factorised embeddings, new rows in a shared low-rank space.

The old matrix E (vocab x hidden) is factorised by its principal directions: E ~ F P,
with P (rank x hidden) the top right-singular vectors, shared by all tokens, and F the
tokens' coordinates. A new token's coordinates are a temperature softmax over its most
similar old tokens' coordinates (similarities from fastText vectors trained on the target
corpus, standing in for OFA's multilingual word vectors, which no offline registry ships);
its row is those coordinates times P. Tokens without a trained vector fall back to FVT,
projected the same way.

What is saved: the model folder holds the product materialised, so it loads and trains as
any HF model; old rows stay exact (they are copied, not projected). Beside it,
`ofa_factors.safetensors` holds P and the coordinates F = E P^T of every row (per matrix),
for training in factorised form; `init_report.json` states the parameter saving.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from langadapt.errors import ConfigError
from langadapt.init.focus import similarity_mixture
from langadapt.init.methods import INIT_METHODS, InitInputs, InitRows, Mixture, mixture_rows

if TYPE_CHECKING:
    import torch


def principal_directions(old: "torch.Tensor", rank: int) -> "torch.Tensor":
    """(rank, hidden): the top right-singular vectors of the old matrix."""
    import torch

    _, _, vh = torch.linalg.svd(old.double(), full_matrices=False)
    return vh[:rank]


@INIT_METHODS.register(
    "ofa",
    help="factorised embeddings: rows from the old tokens' coordinates on the principal directions, softmax over the "
    "most similar ones in fastText vectors; factors saved beside the model (Liu et al. 2023); needs the init extra",
)
def init_ofa(x: InitInputs) -> InitRows:
    ctx = x.need_context("ofa")
    rank = ctx.config.ofa_rank
    if x.space == "output-bias":  # a bias has no directions to factorise
        mix = ctx.once("mixture:ofa", lambda: _mixture(x))
        return mixture_rows(x, mix)
    if rank > x.old.shape[1]:
        raise ConfigError([f"init.ofa_rank: {rank} is larger than the model's hidden size {x.old.shape[1]}"])
    mix: Mixture = ctx.once("mixture:ofa", lambda: _mixture(x))
    proj = principal_directions(x.old, rank)
    ctx.memo.setdefault("ofa-projections", {})[x.space] = proj.to(x.old.dtype)
    coords = x.old.double() @ proj.T
    rows = mixture_rows(InitInputs(coords, x.pieces, x.generator, x.init_std, x.tokens, x.space), mix)
    return InitRows((rows.rows.double() @ proj).to(x.old.dtype), rows.how, mix)


def _mixture(x: InitInputs) -> Mixture:
    import torch

    ctx = x.need_context("ofa")
    t = ctx.config.temperature
    return similarity_mixture(x, "ofa", lambda sims: torch.softmax(sims / t, dim=1), ctx.config.neighbours)


def factor_report(vocab: int, hidden: int, rank: int) -> dict[str, float]:
    """Parameters of one embedding matrix, full and factorised."""
    full = vocab * hidden
    factorised = vocab * rank + rank * hidden
    return {"rank": rank, "full_parameters": full, "factorised_parameters": factorised, "saving": 1 - factorised / full}
