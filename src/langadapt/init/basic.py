"""The simple initialisers: the library's own resize, random, mean, multivariate normal, and subword mean (FVT).

What a plain `model.resize_token_embeddings(n)` gives has changed with transformers'
versions, so the baselines name what they do rather than "what a resize does":

- `hf-resize` is transformers' own default, called as a user would: since 4.46
  (`mean_resizing=True`) new rows are samples from N(mean, 1e-9 x covariance) of the old
  rows, in effect their mean (an output bias: N(mean, (1e-9 x std)^2) of the old biases).
  It is the plain baseline.
- `random` is N(0, initializer_range^2) per value, the model's own initialiser: what
  `resize_token_embeddings(n, mean_resizing=False)` gives, and what a resize gave by
  default before 4.46 (an output bias: zero).
- `mean` is the mean of the old rows, exactly.
- `mvn` samples N(mean, covariance) of the old rows at full scale. Hewitt (2021) proposed
  the old rows' distribution but sampled with 1e-5 of the covariance, which transformers
  shrinks to 1e-9: both are in effect `mean`. `mvn` is the distribution itself, so that
  new rows have the spread of the old ones.
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING, Any

from langadapt.init.methods import INIT_METHODS, InitInputs, InitRows, mixture_rows, pieces_mixture

if TYPE_CHECKING:
    import torch


@INIT_METHODS.register(
    "hf-resize",
    help="what model.resize_token_embeddings(n) gives with transformers' defaults (mean_resizing since 4.46): "
    "samples from N(mean, 1e-9 x covariance) of the old rows, in effect their mean; the plain baseline",
)
def init_hf_resize(x: InitInputs) -> InitRows:
    import torch

    n_old, n_new = x.old.shape[0], len(x.pieces)
    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=x.generator))
    holder = _holder(x.old, x.space)
    with torch.random.fork_rng(devices=[]), torch.no_grad():  # transformers samples from the global generator
        torch.manual_seed(seed)
        holder.resize_token_embeddings(n_old + n_new)
        if x.space == "input":
            rows = holder.get_input_embeddings().weight[n_old:]
        elif x.space == "output":
            rows = holder.get_output_embeddings().weight[n_old:]
        else:
            rows = holder.get_output_embeddings().bias[n_old:].unsqueeze(1)
    return InitRows(rows.detach().clone().to(x.old.dtype), ["hf-resize"] * n_new)


def _holder(old: "torch.Tensor", space: str) -> Any:
    """A model holding one matrix where transformers looks for it, to be resized by its own code."""
    import torch
    from transformers import PretrainedConfig

    Holder = _holder_class()
    n_old, dim = old.shape
    config = PretrainedConfig(vocab_size=n_old, tie_word_embeddings=False)
    if space == "input":
        return Holder(config, torch.nn.Embedding.from_pretrained(old.detach().clone(), freeze=False), None)
    # an untied head (or its bias) is resized by transformers' head code; zero input rows have no spread to sample
    embed = torch.nn.Embedding.from_pretrained(torch.zeros(n_old, 1, dtype=old.dtype), freeze=False)
    if space == "output":
        head = torch.nn.Linear(dim, n_old, bias=False, dtype=old.dtype)
        head.weight.data.copy_(old)
    else:
        head = torch.nn.Linear(1, n_old, bias=True, dtype=old.dtype)
        head.weight.data.zero_()
        head.bias.data.copy_(old[:, 0])
    return Holder(config, embed, head)


@lru_cache(maxsize=1)
def _holder_class() -> Any:
    from transformers import PretrainedConfig, PreTrainedModel

    class Holder(PreTrainedModel):
        config_class = PretrainedConfig

        def __init__(self, config: PretrainedConfig, embed: torch.nn.Module, head: torch.nn.Module | None):
            super().__init__(config)
            self.embed, self.head = embed, head

        def get_input_embeddings(self) -> torch.nn.Module:
            return self.embed

        def set_input_embeddings(self, value: torch.nn.Module) -> None:
            self.embed = value

        def get_output_embeddings(self) -> torch.nn.Module | None:
            return self.head

        def set_output_embeddings(self, value: torch.nn.Module) -> None:
            self.head = value

    return Holder


@INIT_METHODS.register(
    "random",
    help="N(0, initializer_range^2) noise (output bias: 0), the model's own initialiser: what "
    "resize_token_embeddings(n, mean_resizing=False) gives, and a resize's default before transformers 4.46",
)
def init_random(x: InitInputs) -> InitRows:
    import torch

    if x.space == "output-bias":
        return InitRows(torch.zeros(len(x.pieces), 1, dtype=x.old.dtype), ["random"] * len(x.pieces))
    rows = torch.randn(len(x.pieces), x.old.shape[1], generator=x.generator, dtype=x.old.dtype) * x.init_std
    return InitRows(rows, ["random"] * len(x.pieces))


@INIT_METHODS.register("mean", help="the mean of all old rows for every new token")
def init_mean(x: InitInputs) -> InitRows:
    rows = x.old.mean(0, keepdim=True).expand(len(x.pieces), -1).clone()
    return InitRows(rows, ["mean"] * len(x.pieces))


@INIT_METHODS.register(
    "mvn",
    help="samples from N(mean, covariance) of the old rows at full scale, so new rows spread as the old ones do "
    "(Hewitt 2021's distribution; his 1e-5 and transformers' 1e-9 scaling of the covariance is in effect mean)",
)
def init_mvn(x: InitInputs) -> InitRows:
    import torch

    old = x.old.double()
    mean = old.mean(0)
    centred = old - mean
    cov = centred.T @ centred / old.shape[0]  # the old rows' covariance, as transformers computes it
    values, vectors = torch.linalg.eigh(cov)  # a square root that needs no positive definiteness
    root = vectors * values.clamp(min=0).sqrt()
    z = torch.randn(len(x.pieces), old.shape[1], generator=x.generator, dtype=old.dtype)
    return InitRows((mean + z @ root.T).to(x.old.dtype), ["mvn"] * len(x.pieces))


@INIT_METHODS.register(
    "fvt", help="mean of the old rows of the token's pieces under the old tokenizer (Fast Vocabulary Transfer)"
)
def init_fvt(x: InitInputs) -> InitRows:
    return mixture_rows(x, pieces_mixture(x.pieces))
