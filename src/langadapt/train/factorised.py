"""Embeddings trained in OFA's factorised form: coordinates times shared primitives.

OFA (Liu et al. 2024) writes the embedding matrix E (vocab x hidden) as A P: coordinates A
(vocab x rank), one row per token, and primitive embeddings P (rank x hidden), shared by all
tokens. The init stage computes both (`init/ofa.py`: P from the source matrix's SVD, a new
token's coordinates a similarity-weighted mix of old tokens' coordinates) and saves them as
`model-init/ofa_factors.safetensors`. With `train.factorised_embeddings`, training replaces
the model's input embedding by `FactorisedEmbedding` (a row is `A[token] @ P`) and its output
projection by `FactorisedHead`, and A and P are the trained weights: rank x (vocab + hidden)
parameters instead of vocab x hidden, which is the method's point for a 250k vocabulary.

The output projection:
- tied to the input embeddings (SmolLM2, XLM-R, BERT): the head reads the same A and P,
  `logits = (h P^T) A^T + b`, as OFA's own masked-LM head does (down-project by the
  primitives, then score against the coordinates); nothing of the head is stored twice.
- untied (Llama-3, Qwen2.5-7B): factorised likewise with its own A and P, from the init
  stage's factors of the head's own space. OFA's models tie their heads, so the paper has no
  untied case; factorising it keeps the logits in the same rank-k form as the tied case, and
  a head left at full size would keep most of the parameters the method exists to save
  (vocab x hidden against the input side's rank x (vocab + hidden)).

Every row, an old token's too, is A P from the first step, so old rows start at their rank-k
approximation (exact when the rank is the hidden size), as in the paper. At the end of
training `fold` writes E = A P into a plain embedding and linear head (tied again where the
model ties them): the final model is a standard transformers folder at full size, loadable
with no custom code. Checkpoints hold A and P like any trainable weight, so a run resumes
exactly. One process or data parallel (DDP); sharded training is refused at validation.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING, Any

from langadapt.errors import ConfigError, InputError

if TYPE_CHECKING:
    from transformers import PreTrainedModel

FACTORS_FILE = "ofa_factors.safetensors"
CLASSES = ("FactorisedEmbedding", "FactorisedHead")


def __getattr__(name: str) -> Any:
    """`FactorisedEmbedding` and `FactorisedHead`, built on first use so that importing this module stays light."""
    if name in CLASSES:
        return _classes()[CLASSES.index(name)]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@functools.cache
def _classes() -> tuple[type, type]:
    import torch
    from torch import nn
    from torch.nn import functional as F

    class FactorisedEmbedding(nn.Module):
        """Token rows as coordinates times shared primitives: row(t) = A[t] @ P.

        `train_rows(ids)` trains only the coordinates of those tokens (the rest of A, and P,
        frozen): the factorised form of training new-token rows. `fold_rows` writes them back.
        """

        def __init__(self, coordinates: torch.Tensor, primitives: torch.Tensor, padding_idx: int | None = None) -> None:
            super().__init__()
            if coordinates.shape[1] != primitives.shape[0]:
                raise ValueError(
                    f"coordinates {tuple(coordinates.shape)} do not match primitives {tuple(primitives.shape)}"
                )
            self.coordinates = nn.Parameter(coordinates)
            self.primitives = nn.Parameter(primitives)
            self.padding_idx = padding_idx
            self.register_parameter("new_coordinates", None)  # the trained rows' coordinates (train_rows)
            self.register_buffer("row_ids", None, persistent=False)  # their token ids, ascending
            self.register_buffer("row_slot", None, persistent=False)  # (vocab,) index into new_coordinates, or -1

        @property
        def num_embeddings(self) -> int:
            return self.coordinates.shape[0]

        @property
        def embedding_dim(self) -> int:
            return self.primitives.shape[1]

        @property
        def rank(self) -> int:
            return self.primitives.shape[0]

        def table(self) -> torch.Tensor:
            """A as the model uses it: the trained rows written over the frozen ones."""
            if self.new_coordinates is None:
                return self.coordinates
            # the trained rows are float32 master weights; frozen A may be held in bf16 (model.dtype)
            return self.coordinates.index_copy(0, self.row_ids, self.new_coordinates.to(self.coordinates.dtype))

        def matrix(self) -> torch.Tensor:
            """E = A P, (vocab, hidden)."""
            return self.table() @ self.primitives

        def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
            rows = F.embedding(input_ids, self.coordinates, self.padding_idx)
            if self.new_coordinates is not None:
                slot = self.row_slot[input_ids]
                trained = F.embedding(slot.clamp(min=0), self.new_coordinates).to(rows.dtype)
                rows = torch.where((slot >= 0).unsqueeze(-1), trained, rows)
            return rows @ self.primitives

        def train_rows(self, ids: list[int]) -> int:
            """Only the coordinates of `ids` train (A's other rows and P frozen); returns their parameter count."""
            self.fold_rows()
            self.coordinates.requires_grad_(False)
            self.primitives.requires_grad_(False)
            index = torch.tensor(sorted(set(ids)), dtype=torch.long, device=self.coordinates.device)
            slot = torch.full((self.num_embeddings,), -1, dtype=torch.long, device=index.device)
            slot[index] = torch.arange(len(index), device=index.device)
            self.row_ids, self.row_slot = index, slot
            self.new_coordinates = nn.Parameter(self.coordinates.detach()[index].clone())
            return self.new_coordinates.numel()

        def fold_rows(self) -> None:
            """Write trained rows back into A and return to training (or freezing) A as a whole."""
            if self.new_coordinates is None:
                return
            with torch.no_grad():
                self.coordinates.copy_(self.table())
            self.new_coordinates, self.row_ids, self.row_slot = None, None, None

        def extra_repr(self) -> str:
            return f"{self.num_embeddings}, {self.embedding_dim}, rank={self.rank}"

    class FactorisedHead(nn.Module):
        """The output projection in factorised form: logits = (h P^T) A^T + b.

        Tied: reads the input embedding's A and P (held by reference, not registered twice).
        Untied: owns its factors as the submodule `factors`.
        """

        def __init__(self, factors: FactorisedEmbedding, bias: nn.Parameter | None, tied: bool) -> None:
            super().__init__()
            self.tied = tied
            if tied:
                self._shared = (factors,)  # a tuple is not registered: the input embedding owns A and P
            else:
                self.factors = factors
            self.bias = bias

        @property
        def source(self) -> FactorisedEmbedding:
            return self._shared[0] if self.tied else self.factors

        def down_project(self, hidden: torch.Tensor) -> torch.Tensor:
            """h P^T: the hidden states in the primitives' coordinates, (..., rank)."""
            return F.linear(hidden, self.source.primitives)

        def forward(self, hidden: torch.Tensor) -> torch.Tensor:
            return F.linear(self.down_project(hidden), self.source.table(), self.bias)

        def extra_repr(self) -> str:
            return f"tied={self.tied}"

    for cls in (FactorisedEmbedding, FactorisedHead):
        cls.__module__, cls.__qualname__ = __name__, cls.__name__
    return FactorisedEmbedding, FactorisedHead


def _inner(model: Any) -> Any:
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def embedding_of(model: Any) -> Any:
    """The model's `FactorisedEmbedding`, or None when its embeddings train at full size."""
    emb = _inner(model).get_input_embeddings()
    return emb if isinstance(emb, _classes()[0]) else None


def head_of(model: Any) -> Any:
    """The model's `FactorisedHead`, or None."""
    head = _inner(model).get_output_embeddings()
    return head if isinstance(head, _classes()[1]) else None


def factor_modules(model: Any) -> list[Any]:
    """The input embedding's factors, and an untied head's own ones."""
    emb, head = embedding_of(model), head_of(model)
    return [m for m in (emb, None if head is None or head.tied else head.factors) if m is not None]


class DownProjected:
    """A decoder body whose last hidden state comes out in the primitives' coordinates (h P^T).

    The fused loss then treats A as an ordinary linear head: logits (tokens x vocabulary) are
    never materialised, and the head costs rank instead of hidden multiply-adds per logit.
    """

    def __init__(self, body: Any, head: Any) -> None:
        self.body, self.head = body, head

    def __call__(self, **kwargs: Any) -> Any:
        from types import SimpleNamespace

        hidden = self.body(**kwargs).last_hidden_state
        return SimpleNamespace(last_hidden_state=self.head.down_project(hidden))


def train_all(model: Any) -> int:
    """A and P of every factorised matrix trainable (the factorised `train.embeddings: all`); returns the count."""
    n = 0
    for m in factor_modules(model):
        m.fold_rows()
        for p in (m.coordinates, m.primitives):
            p.requires_grad_(True)
            n += p.numel()
    return n


def train_new_rows(model: Any, new_ids: list[int]) -> int:
    """Only the input coordinates of new tokens trainable (the factorised `new-rows`); returns the count."""
    return embedding_of(model).train_rows(new_ids)


def fold_rows(model: Any) -> None:
    """Between phases: trained rows back into A, so the next phase starts from one matrix."""
    for m in factor_modules(model):
        m.fold_rows()


def count_parameters(model: Any) -> int:
    """Distinct parameters of the model (a tied matrix counted once)."""
    return sum(p.numel() for p in model.parameters())


def trainable_record(model: Any) -> dict[str, int] | None:
    """Trainable embedding parameters in factorised form, and what the same trained rows hold at full size."""
    modules = factor_modules(model)
    if not modules:
        return None
    factorised = full = 0
    for m in modules:
        if m.new_coordinates is not None and m.new_coordinates.requires_grad:
            factorised += m.new_coordinates.numel()
            full += m.new_coordinates.shape[0] * m.embedding_dim
        trains = [p for p in (m.coordinates, m.primitives) if p.requires_grad]
        factorised += sum(p.numel() for p in trains)
        if trains:  # P is shared by every row: training either factor moves the whole matrix
            full += m.num_embeddings * m.embedding_dim
    return {"factorised": factorised, "full_size": full}


# -- from the init stage's factors, and back to full size -----------------------------------------------


def factorise(model: "PreTrainedModel", factors_file: Path) -> dict[str, Any]:
    """Replace the input embedding (and output projection) by their factorised form, from OFA's saved factors.

    Returns what the factorised model holds, measured on its modules; `fold` adds the full-size half.
    """
    from safetensors.torch import load_file
    from torch import nn

    FactorisedEmbedding, FactorisedHead = _classes()
    if not factors_file.is_file():
        raise InputError(
            f"train.factorised_embeddings: {factors_file} is missing; the init stage writes it for init.method ofa",
            hint="langadapt run RECIPE --force",
        )
    emb, head = model.get_input_embeddings(), model.get_output_embeddings()
    if type(emb) is not nn.Embedding or (head is not None and type(head) is not nn.Linear):
        raise ConfigError(
            [
                f"train.factorised_embeddings: {model.config.model_type}'s input embedding ({type(emb).__name__}) "
                f"and output projection ({type(head).__name__}) are not a plain embedding and linear layer, the "
                "two the factorised form replaces; train this model at full size"
            ]
        )
    factors = load_file(str(factors_file))
    tied = head is not None and head.weight is emb.weight
    inp = FactorisedEmbedding(*_pair(factors, "input", emb.weight, factors_file), padding_idx=emb.padding_idx)
    spaces = {"input": inp}
    model.set_input_embeddings(inp)
    if head is not None:
        source = inp if tied else FactorisedEmbedding(*_pair(factors, "output", head.weight, factors_file))
        if not tied:
            spaces["output"] = source
        model.set_output_embeddings(FactorisedHead(source, head.bias, tied))
    return {
        "method": "ofa",
        "rank": inp.rank,
        "tied": tied,
        "matrices": {
            space: {
                "rows": m.num_embeddings,
                "hidden": m.embedding_dim,
                "coordinates": m.coordinates.numel(),
                "primitives": m.primitives.numel(),
            }
            for space, m in spaces.items()
        },
        "model_parameters": {"factorised": count_parameters(model)},
    }


def _pair(factors: dict[str, Any], space: str, weight: Any, source: Path) -> tuple[Any, Any]:
    """(coordinates, primitives) of one matrix, checked against the model's own shape."""
    coords, prims = factors.get(f"{space}.coordinates"), factors.get(f"{space}.primitives")
    if coords is None or prims is None:
        raise InputError(
            f"{source} holds no factors of the {space} matrix (written by an older version of the init stage)",
            hint="langadapt run RECIPE --force",
        )
    if coords.shape[0] != weight.shape[0] or prims.shape[1] != weight.shape[1]:
        raise InputError(
            f"{source}: {space} factors {tuple(coords.shape)} x {tuple(prims.shape)} do not make the model's "
            f"{tuple(weight.shape)} matrix",
            hint="langadapt run RECIPE --force",
        )
    return coords.to(weight.device, weight.dtype).contiguous(), prims.to(weight.device, weight.dtype).contiguous()


def fold(model: "PreTrainedModel", record: dict[str, Any]) -> "PreTrainedModel":
    """E = A P written into a plain embedding and linear head (tied where the model ties them).

    Completes `record` (from `factorise`) with the full-size counts measured on the folded
    modules, and the savings. The model is then an ordinary transformers model at full size.
    """
    import torch
    from torch import nn

    emb, head = embedding_of(model), head_of(model)
    if emb is None:
        return model
    with torch.no_grad():
        plain = nn.Embedding.from_pretrained(emb.matrix().detach(), freeze=False, padding_idx=emb.padding_idx)
        sizes = {"input": plain.weight.numel()}
        model.set_input_embeddings(plain)
        if head is not None:
            out = nn.Linear(emb.embedding_dim, emb.num_embeddings, bias=False, device="meta")
            if head.tied:
                out.weight = plain.weight
            else:
                out.weight = nn.Parameter(head.factors.matrix().detach())
                sizes["output"] = out.weight.numel()
            out.bias = head.bias
            model.set_output_embeddings(out)
    for space, n in sizes.items():
        record["matrices"][space]["full_size"] = n
    factor_total = sum(m["coordinates"] + m["primitives"] for m in record["matrices"].values())
    full_total = sum(sizes.values())
    record["embedding_parameters"] = {
        "factorised": factor_total,
        "full_size": full_total,
        "saving": round(1 - factor_total / full_total, 4),
    }
    full_model = count_parameters(model)
    record["model_parameters"].update(
        full_size=full_model, saving=round(1 - record["model_parameters"]["factorised"] / full_model, 4)
    )
    return model
