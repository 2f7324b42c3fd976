"""OFA (Liu et al. 2024): embeddings as coordinates times shared primitives, new rows in that space.

The old matrix E (vocab x hidden) is factorised by its singular value decomposition, as the
paper does: E ~ A P, with the primitive embeddings P = S_k V_k^T (rank x hidden, the top
`init.ofa_rank` right-singular vectors scaled by their singular values), shared by all
tokens, and the coordinates A = U_k (vocab x rank), one row per token. A new token's
coordinates are a temperature softmax over its most similar old tokens' coordinates
(similarities from fastText vectors trained on the target corpus, standing in for OFA's
multilingual word vectors, which no offline registry ships); its row is those coordinates
times P. Tokens without a trained vector fall back to FVT, projected the same way.

What is saved: the model folder holds the product at full size, so it loads and trains as any
HF model; old rows stay exact there (they are copied, not projected). Beside it,
`ofa_factors.safetensors` holds, per matrix (input embeddings, an untied head), the
primitives and every row's coordinates. With `train.factorised_embeddings` training runs in
that form (`train/factorised.py`): A and P train instead of E, every row starting at A P
(an old row at its rank-k approximation, as in the paper), and the trained model is folded
back to full size. `init_report.json` states the factors' sizes, and the parameter saving
only when training uses them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from langadapt.errors import ConfigError
from langadapt.init.focus import similarity_mixture
from langadapt.init.methods import INIT_METHODS, InitInputs, InitRows, Mixture, mixture_rows

if TYPE_CHECKING:
    import torch


@dataclass
class Primitives:
    """The top right-singular vectors of the old matrix and their singular values: P = diag(values) directions."""

    directions: "torch.Tensor"  # (rank, hidden), orthonormal rows, float64
    values: "torch.Tensor"  # (rank,) float64, descending

    def coordinates(self, matrix: "torch.Tensor") -> "torch.Tensor":
        """Rows' coordinates A with A P = the rows projected on the directions (old rows: U_k), float64."""
        import torch

        floor = self.values[0] * torch.finfo(torch.float64).eps  # a zero singular value: a direction no row uses
        return (matrix.double() @ self.directions.T) / self.values.clamp(min=float(floor))

    def matrix(self) -> "torch.Tensor":
        """P, (rank, hidden), float64."""
        return self.values.unsqueeze(1) * self.directions


def principal_directions(old: "torch.Tensor", rank: int) -> Primitives:
    """The old matrix's top `rank` right-singular vectors and singular values (OFA's primitives)."""
    import torch

    _, s, vh = torch.linalg.svd(old.double(), full_matrices=False)
    return Primitives(vh[:rank], s[:rank])


def factors(matrix: "torch.Tensor", primitives: Primitives) -> dict[str, "torch.Tensor"]:
    """OFA's factors of one matrix, in its dtype: coordinates (rows x rank) and primitives (rank x hidden)."""
    return {
        "coordinates": primitives.coordinates(matrix).to(matrix.dtype).contiguous(),
        "primitives": primitives.matrix().to(matrix.dtype).contiguous(),
    }


@INIT_METHODS.register(
    "ofa",
    help="factorised embeddings (Liu et al. 2024): coordinates times primitives from the old matrix's SVD, a new "
    "token's coordinates a softmax over its most similar old tokens in fastText vectors; factors saved beside the "
    "model, trained in that form with train.factorised_embeddings; needs the init extra",
)
def init_ofa(x: InitInputs) -> InitRows:
    ctx = x.need_context("ofa")
    rank = ctx.config.ofa_rank
    if x.space == "output-bias":  # a bias has no directions to factorise
        return mixture_rows(x, x.mixture or _mixture(x))
    if rank > x.old.shape[1]:
        raise ConfigError([f"init.ofa_rank: {rank} is larger than the model's hidden size {x.old.shape[1]}"])
    mix: Mixture = x.mixture or _mixture(x)
    prim = principal_directions(x.old, rank)
    coords = prim.coordinates(x.old)  # the old tokens' coordinates, U_k
    rows = mixture_rows(InitInputs(coords, x.pieces, x.generator, x.init_std, x.tokens, x.space), mix)
    return InitRows((rows.rows.double() @ prim.matrix()).to(x.old.dtype), rows.how, mix, factors=prim)


def _mixture(x: InitInputs) -> Mixture:
    import torch

    ctx = x.need_context("ofa")
    t = ctx.config.temperature
    return similarity_mixture(x, "ofa", lambda sims: torch.softmax(sims / t, dim=1), ctx.config.neighbours)


def factor_report(tensors: dict[str, "torch.Tensor"], trained: bool) -> dict[str, Any]:
    """Sizes of one matrix's saved factors against the matrix; the saving only when training uses them."""
    coords, prims = tensors["coordinates"], tensors["primitives"]
    full = coords.shape[0] * prims.shape[1]
    factorised = coords.numel() + prims.numel()
    out: dict[str, Any] = {
        "rank": prims.shape[0],
        "rows": coords.shape[0],
        "hidden": prims.shape[1],
        "full_parameters": full,
        "factorised_parameters": factorised,
    }
    if trained:
        out["saving"] = round(1 - factorised / full, 4)
    return out
