"""The simple initialisers: random, mean, multivariate normal, and subword mean (FVT)."""

from __future__ import annotations

from langadapt.init.methods import INIT_METHODS, InitInputs, InitRows, mixture_rows, pieces_mixture


@INIT_METHODS.register("random", help="normal noise with the model's initializer_range (what a plain resize does)")
def init_random(x: InitInputs) -> InitRows:
    import torch

    rows = torch.randn(len(x.pieces), x.old.shape[1], generator=x.generator, dtype=x.old.dtype) * x.init_std
    return InitRows(rows, ["random"] * len(x.pieces))


@INIT_METHODS.register("mean", help="the mean of all old rows for every new token")
def init_mean(x: InitInputs) -> InitRows:
    rows = x.old.mean(0, keepdim=True).expand(len(x.pieces), -1).clone()
    return InitRows(rows, ["mean"] * len(x.pieces))


@INIT_METHODS.register("mvn", help="samples from a normal with the old rows' mean and covariance (Hewitt 2021)")
def init_mvn(x: InitInputs) -> InitRows:
    import torch

    old = x.old.double()
    mean = old.mean(0)
    if old.shape[1] == 1:  # a bias column: its own variance
        cov = old.var().reshape(1, 1) * 1e-5 + 1e-12
    else:
        cov = torch.cov(old.T) * 1e-5 + torch.eye(old.shape[1], dtype=old.dtype) * 1e-12
    chol = torch.linalg.cholesky(cov)
    z = torch.randn(len(x.pieces), old.shape[1], generator=x.generator, dtype=old.dtype)
    return InitRows((mean + z @ chol.T).to(x.old.dtype), ["mvn"] * len(x.pieces))


@INIT_METHODS.register(
    "fvt", help="mean of the old rows of the token's pieces under the old tokenizer (Fast Vocabulary Transfer)"
)
def init_fvt(x: InitInputs) -> InitRows:
    return mixture_rows(x, pieces_mixture(x.pieces))
