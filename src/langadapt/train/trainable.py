"""The contract of a train method (which weights train) and the registry that names them.

A method takes the initialised model, the train section and the ids of new tokens, and returns the
model with exactly the weights it trains set to require gradients (wrapped by peft or the adapters
library where it adds weights). The methods register in `methods.py` (peft) and `adapters.py`
(AdapterHub); importing `methods.py` loads both. `apply_method` runs one and makes the weights it
trains float32 master copies (`hold_master_weights`), whatever the frozen weights are held in.
New-token rows train through peft's trainable tokens (`new_token_rows`), and a head tied to the
embeddings keeps the bias that peft's layer leaves out of its logits (`keep_head_bias`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from langadapt.errors import ConfigError
from langadapt.registry import Registry
from langadapt.train import factorised, langsamp
from langadapt.train.config import TrainConfig

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel


TrainMethod = Callable[["PreTrainedModel", TrainConfig, list[int]], "PreTrainedModel"]
TRAIN_METHODS: Registry[TrainMethod] = Registry("train-methods")


def apply_method(name: str, model: "PreTrainedModel", cfg: TrainConfig, new_ids: list[int]) -> "PreTrainedModel":
    """The model as train method `name` trains it, its trainable weights float32 (see `hold_master_weights`)."""
    model = TRAIN_METHODS.get(name)(model, cfg, new_ids)
    langsamp.enable(model)  # LangSAMP's tables train whatever the method froze
    hold_master_weights(model, cfg.low_precision_master_weights)
    return model


def hold_master_weights(model: Any, low_precision: bool = False) -> int:
    """Every weight that trains in float32, whatever dtype the model was loaded in; returns how many were cast.

    With frozen weights in bf16 (`model.dtype`), the weights a method adds or unfreezes (LoRA,
    adapters, new-token rows, `embeddings: all`, full, OFA factors, heads) would be bf16 too,
    and an optimizer stepping them loses every update below bf16's resolution. Cast in
    place (`.data`), so tied weights stay one tensor and wrappers keep their parameters.
    `low_precision` (train.low_precision_master_weights) leaves them as they are.
    """
    import torch

    if low_precision:
        return 0
    cast = 0
    for p in model.parameters():
        if p.requires_grad and p.is_floating_point() and p.dtype != torch.float32:
            p.data = p.data.float()
            cast += 1
    wrong = low_precision_trainable(model)
    assert not wrong, f"trainable weights not float32 after the cast: {wrong[:3]}"
    return cast


def low_precision_trainable(model: Any) -> list[str]:
    """Names of the trainable weights that are not float32 (what an optimizer must not step unasked)."""
    import torch

    return [n for n, p in model.named_parameters() if p.requires_grad and p.dtype != torch.float32]


def weight_dtypes(model: Any) -> dict[str, str]:
    """The dtypes of the weights that train and of those that stay frozen (the summary's record), e.g.
    {"trained": "float32", "frozen": "bfloat16"}; several are joined with "+", none is "none"."""
    found: dict[bool, set[str]] = {True: set(), False: set()}
    for p in model.parameters():
        found[p.requires_grad].add(str(p.dtype).removeprefix("torch."))
    return {k: "+".join(sorted(found[t])) or "none" for k, t in (("trained", True), ("frozen", False))}


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


def new_token_rows(model: "PreTrainedModel", new_ids: list[int]) -> Any:
    """The model wrapped by peft's trainable tokens: the rows of `new_ids` train in the input embeddings and in
    an output head tied to them, everything else frozen; a tied head keeps its bias (`keep_head_bias`)."""
    from peft import TrainableTokensConfig, get_peft_model

    config = TrainableTokensConfig(target_modules=[embedding_module_name(model)], token_indices=new_ids)
    model = get_peft_model(model, config)
    keep_head_bias(model)
    return model


def keep_head_bias(model: Any) -> int:
    """Give back the output head's bias where peft's trainable-token layer leaves it out; returns how many heads.

    An output head tied to the input embeddings (a masked-LM decoder: XLM-R's `lm_head`, BERT's
    `cls.predictions`; a tied decoder head with a bias) is wrapped by peft as its embeddings are,
    and peft's layer (0.21) computes `F.linear(x, W)` with the new rows written into W, but
    without the head's bias: training would see logits the model does not compute, and a bias
    that trains would get no gradient, while the merged model adds it again. A forward hook adds
    the bias on the passes that take that path (rows active, not merged; otherwise peft runs the
    head itself, bias included). Each head is asked first whether it drops the bias (its bias
    set to ones, a zero input), so a peft that adds it, or a head already given it, is left alone.
    An untied head is not wrapped at all and computes its own bias.
    """
    from peft.tuners.trainable_tokens.layer import TrainableTokensLayer

    fixed = 0
    for layer in model.modules():
        if isinstance(layer, TrainableTokensLayer) and _drops_bias(layer):
            layer.register_forward_hook(_add_head_bias)
            fixed += 1
    return fixed


def _on_rows_path(layer: Any) -> bool:
    """Whether peft's layer computes the head itself (its rows over the weight) rather than running the wrapped one."""
    return bool(layer.active_adapters) and not layer.merged and not layer.disable_adapters


def _drops_bias(layer: Any) -> bool:
    import torch

    base = layer.get_base_layer()
    if not isinstance(base, torch.nn.Linear) or base.bias is None or not _on_rows_path(layer):
        return False
    name = next(n for n, p in layer.named_parameters(remove_duplicate=False) if p is base.bias)
    probe = torch.zeros(1, base.in_features, dtype=base.weight.dtype, device=base.weight.device)
    with torch.no_grad():  # x = 0: the logits are the bias alone, or zero where it is dropped
        out = torch.func.functional_call(layer, {name: torch.ones_like(base.bias)}, (probe,), strict=False)
    return bool(out.eq(0).all())


def _add_head_bias(layer: Any, args: tuple[Any, ...], out: "torch.Tensor") -> "torch.Tensor":
    if not _on_rows_path(layer):
        return out
    return out + layer.get_base_layer().bias.to(out.dtype)


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
