"""The simple initialisers: random, mean, multivariate normal, and subword mean (FVT)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from langadapt.init.methods import INIT_METHODS, InitInputs

if TYPE_CHECKING:
    import torch


@INIT_METHODS.register("random", help="normal noise with the model's initializer_range (what a plain resize does)")
def init_random(x: InitInputs) -> "torch.Tensor":
    import torch

    return torch.randn(len(x.pieces), x.old.shape[1], generator=x.generator, dtype=x.old.dtype) * x.init_std


@INIT_METHODS.register("mean", help="the mean of all old rows for every new token")
def init_mean(x: InitInputs) -> "torch.Tensor":
    return x.old.mean(0, keepdim=True).expand(len(x.pieces), -1).clone()


@INIT_METHODS.register("mvn", help="samples from a normal with the old rows' mean and covariance (Hewitt 2021)")
def init_mvn(x: InitInputs) -> "torch.Tensor":
    import torch

    old = x.old.double()
    mean = old.mean(0)
    cov = torch.cov(old.T) * 1e-5 + torch.eye(old.shape[1], dtype=old.dtype) * 1e-12
    chol = torch.linalg.cholesky(cov)
    z = torch.randn(len(x.pieces), old.shape[1], generator=x.generator, dtype=old.dtype)
    return (mean + z @ chol.T).to(x.old.dtype)


@INIT_METHODS.register(
    "fvt", help="mean of the old rows of the token's pieces under the old tokenizer (Fast Vocabulary Transfer)"
)
def init_fvt(x: InitInputs) -> "torch.Tensor":
    out = init_mean(x)
    for i, ids in enumerate(x.pieces):
        if ids:
            out[i] = x.old[ids].mean(0)
    return out
