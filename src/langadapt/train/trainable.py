"""The contract of a train method (which weights train) and the registry that names them.

A method takes the initialised model, the train section and the ids of new tokens, and returns the
model with exactly the weights it trains set to require gradients (wrapped by peft or the adapters
library where it adds weights). The methods register in `methods.py` (peft) and `adapters.py`
(AdapterHub); importing `methods.py` loads both.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from langadapt.errors import ConfigError
from langadapt.registry import Registry
from langadapt.train import factorised
from langadapt.train.config import TrainConfig

if TYPE_CHECKING:
    from transformers import PreTrainedModel


TrainMethod = Callable[["PreTrainedModel", TrainConfig, list[int]], "PreTrainedModel"]
TRAIN_METHODS: Registry[TrainMethod] = Registry("train-methods")


def embedding_module_name(model: "PreTrainedModel") -> str:
    emb = model.get_input_embeddings()
    for name, module in model.named_modules():
        if module is emb:
            return name.split(".")[-1]
    raise ConfigError(["train: cannot find the model's input embedding module"])


def train_all_embeddings(model: "PreTrainedModel") -> int:
    """The whole input embedding matrix, and the output projection (tied to it or not), trainable."""
    if factorised.embedding_of(model) is not None:  # both factors of each matrix
        return factorised.train_all(model)
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    weights = {id(m.weight): m.weight for m in (inner.get_input_embeddings(), inner.get_output_embeddings()) if m}
    for w in weights.values():
        w.requires_grad_(True)
    return sum(w.numel() for w in weights.values())


def trained_embedding_rows(model: "PreTrainedModel") -> tuple[int, int]:
    """(rows of the input embedding matrix that train, rows in all): every row, peft's trainable new rows,
    OFA's trained coordinates, or none."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    emb = inner.get_input_embeddings()
    layer = getattr(emb, "token_adapter", emb)  # peft: a TrainableTokensWrapper, or the layer itself
    base = getattr(layer, "base_layer", layer)
    factors = factorised.embedding_of(model)
    if factors is not None:  # coordinates A (vocab x rank) times primitives P: a trained factor moves every row
        total = factors.num_embeddings
        if factors.coordinates.requires_grad or factors.primitives.requires_grad:
            return total, total
        new = factors.new_coordinates
        return (len(factors.row_ids) if new is not None and new.requires_grad else 0), total
    total = int(base.weight.shape[0])
    if base.weight.requires_grad:
        return total, total
    rows = getattr(layer, "token_indices", None) or {}
    deltas = getattr(layer, "trainable_tokens_delta", None) or {}
    return sum(len(rows[name]) for name in rows if name in deltas and deltas[name].requires_grad), total
