"""Train methods on peft: LoRA, QLoRA, new rows only, everything; encoders' LoRA goes through `adapters.py`.

Importing this module registers every train method (it imports `adapters.py`, which registers the
AdapterHub ones); the registry and the contract are in `trainable.py`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from langadapt.errors import ConfigError
from langadapt.models.loading import is_encoder
from langadapt.train import factorised
from langadapt.train.adapters import add_adapter
from langadapt.train.config import TrainConfig
from langadapt.train.trainable import (
    TRAIN_METHODS,
    embedding_module_name,
    keep_head_bias,
    new_token_rows,
    train_all_embeddings,
)

if TYPE_CHECKING:
    from transformers import PreTrainedModel


def _check_targets(model: "PreTrainedModel", targets: tuple[str, ...]) -> None:
    names = {n.split(".")[-1] for n, _ in model.named_modules()}
    missing = [t for t in targets if t not in names]
    if missing:
        linear = sorted({n.split(".")[-1] for n, m in model.named_modules() if type(m).__name__ == "Linear"})
        raise ConfigError(
            [f"train.lora_targets: {', '.join(missing)} not in this model; its linear layers are: {', '.join(linear)}"]
        )


@TRAIN_METHODS.register(
    "lora",
    help="LoRA (peft) on train.lora_targets, plus trainable rows for new tokens; encoders: as lora-adapters",
)
def lora(model: "PreTrainedModel", cfg: TrainConfig, new_ids: list[int]) -> "PreTrainedModel":
    from peft import LoraConfig, get_peft_model

    if is_encoder(model.config):  # encoders: LoRA through the adapters library, on attention and feed-forward
        return add_adapter(model, "lora-adapters", cfg, new_ids)

    _check_targets(model, cfg.lora_targets)
    factors = factorised.embedding_of(model) is not None  # then the new rows are the new tokens' coordinates
    rows = cfg.embeddings == "new" and bool(new_ids)
    tokens = {embedding_module_name(model): new_ids} if rows and not factors else None
    config = LoraConfig(
        r=cfg.lora_rank,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=list(cfg.lora_targets),
        trainable_token_indices=tokens,
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(model, config)
    keep_head_bias(model)  # a head tied to the embeddings carries the new rows too, and must keep its bias
    if cfg.embeddings == "all":  # trained in place: merge_and_unload keeps them, the checkpoint saves them
        train_all_embeddings(model)
    elif rows and factors:
        factorised.train_new_rows(model, new_ids)
    return model


@TRAIN_METHODS.register(
    "qlora",
    help="as lora, over a base whose frozen linear layers are 4-bit NF4 (bitsandbytes, CUDA GPU): "
    "a quarter of the memory; the adapter merges into the full-precision base",
)
def qlora(model: "PreTrainedModel", cfg: TrainConfig, new_ids: list[int]) -> "PreTrainedModel":
    """LoRA on a 4-bit base loaded by `models.load_quantized_model` (the train stage does it for this method)."""
    from peft import prepare_model_for_kbit_training

    if not getattr(model, "is_loaded_in_4bit", False):
        raise ConfigError(
            ["train.method qlora: the base model is not loaded in 4 bits (load it with models.load_quantized_model)"]
        )
    # norms and embeddings to float32, inputs that carry gradients when checkpointing
    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=cfg.gradient_checkpointing)
    return lora(model, cfg, new_ids)


@TRAIN_METHODS.register(
    "new-rows",
    help="only the embedding rows of new tokens train (peft trainable tokens; in a head tied to the embeddings "
    "too); the rest is frozen, an encoder's MLM head (its transform and bias) included",
)
def new_rows(model: "PreTrainedModel", cfg: TrainConfig, new_ids: list[int]) -> "PreTrainedModel":
    if not new_ids:
        raise ConfigError(["train.method new-rows: the tokenizer added no tokens; use tokenizer.method: extend"])
    if factorised.embedding_of(model) is not None:  # the new tokens' coordinates; A's other rows and P frozen
        for p in model.parameters():
            p.requires_grad_(False)
        factorised.train_new_rows(model, new_ids)
        return model
    return new_token_rows(model, new_ids)


@TRAIN_METHODS.register("full", help="every weight trains (needs memory for optimizer state of the whole model)")
def full(model: "PreTrainedModel", cfg: TrainConfig, new_ids: list[int]) -> "PreTrainedModel":
    for p in model.parameters():
        p.requires_grad_(True)
    return model


@TRAIN_METHODS.register(
    "scratch",
    help="no adaptation: a fresh model of the base's family, sized by the corpus (Goldfish's recipe, "
    "train.scratch), trained whole on the target text with its own tokenizer (scratch-tokenizer/)",
)
def scratch(model: "PreTrainedModel", cfg: TrainConfig, new_ids: list[int]) -> "PreTrainedModel":
    """Every weight of the freshly built model trains (the train stage builds it; `train/scratch.py`)."""
    return full(model, cfg, new_ids)
