"""The `train` section of a recipe."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from langadapt.config import opt

if TYPE_CHECKING:
    from langadapt.recipe import Recipe


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    method: str = opt(
        "lora",
        "lora: LoRA on the transformer + trainable new-token rows; full: all weights (see `langadapt list train-methods`)",
    )
    objective: str = opt("clm", "training objective (see `langadapt list objectives`)")
    lora_rank: int = opt(16, "LoRA rank")
    lora_alpha: int = opt(32, "LoRA scaling numerator (scale = alpha / rank)")
    lora_dropout: float = opt(0.0, "dropout on the LoRA path")
    lora_targets: tuple[str, ...] = opt(
        ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
        "module names that receive LoRA; names absent from the model are an error",
    )
    train_new_embeddings: bool = opt(True, "also train the embedding (and untied output) rows of new tokens")
    replay_ratio: float = opt(0.25, "fraction of training sequences drawn from the replay language")
    seq_len: int = opt(256, "tokens per training sequence (documents are packed)")
    batch_size: int = opt(8, "sequences per optimizer step")
    max_steps: int = opt(40, "optimizer steps")
    lr: float = opt(1e-3, "peak learning rate")
    embedding_lr: float = opt(0.0, "learning rate for new embedding rows (0: same as lr)")
    warmup_steps: int = opt(4, "linear warmup steps")
    min_lr_ratio: float = opt(0.1, "cosine decay floor as a fraction of the peak learning rate")
    weight_decay: float = opt(0.0, "AdamW weight decay (never applied to embedding rows)")
    grad_clip: float = opt(1.0, "gradient norm clipping (0: off)")
    save_every: int = opt(10, "write a resumable checkpoint every this many steps (0: only at the end)")
    keep_checkpoints: int = opt(2, "how many recent checkpoints to keep")
    threads: int = opt(0, "CPU threads for torch (0: torch's default)")
    # -- devices, precision and throughput ---------------------------------------------------------
    device: str = opt(
        "auto", "where training runs: auto (a CUDA or Apple GPU when present, else the CPU), cpu, cuda, cuda:N, mps"
    )
    precision: str = opt(
        "auto",
        "auto: bf16 autocast where the device computes bf16 natively, else fp32; fp32; bf16; fp16 (GPU, loss scaling). "
        "Trained weights stay float32",
    )
    micro_batch_size: int = opt(
        0, "sequences per forward/backward pass; the step accumulates gradients over the batch (0: whole batch at once)"
    )
    tokens_per_step: int = opt(
        0, "tokens per optimizer step; sets the batch to tokens_per_step / seq_len sequences (0: batch_size)"
    )
    packed_attention: str = opt(
        "document",
        "document: position ids restart at each packed document and attention stays inside it; "
        "row: a packed row is one sequence (attention crosses documents)",
    )
    gradient_checkpointing: bool = opt(
        False, "recompute activations in the backward pass: less memory, ~30% more compute"
    )
    compile: bool = opt(False, "torch.compile the model (slow first steps; pays off on long runs)")


def check(recipe: "Recipe") -> list[str]:
    """Problems with the train section."""
    from langadapt.train.methods import TRAIN_METHODS
    from langadapt.train.objectives import OBJECTIVES

    tr, p = recipe.train, []

    def need(cond: bool, msg: str) -> None:
        if not cond:
            p.append(msg)

    if tr.method not in TRAIN_METHODS:
        p.append(f"train.method: {TRAIN_METHODS.unknown_message(tr.method)}")
    if tr.objective not in OBJECTIVES:
        p.append(f"train.objective: {OBJECTIVES.unknown_message(tr.objective)}")
    need(tr.lora_rank >= 1, "train.lora_rank: must be >= 1")
    need(bool(tr.lora_targets), "train.lora_targets: list at least one module name")
    need(0.0 <= tr.replay_ratio < 1.0, "train.replay_ratio: must be in [0, 1)")
    if tr.replay_ratio > 0:
        need(
            recipe.corpus.replay is not None,
            "train.replay_ratio: > 0 needs a valid corpus.replay (or set train.replay_ratio: 0)",
        )
    need(tr.seq_len >= 8, "train.seq_len: must be >= 8")
    need(tr.batch_size >= 1, "train.batch_size: must be >= 1")
    need(tr.max_steps >= 1, "train.max_steps: must be >= 1")
    need(tr.lr > 0, "train.lr: must be > 0")
    need(tr.embedding_lr >= 0, "train.embedding_lr: must be >= 0")
    need(0 <= tr.warmup_steps <= tr.max_steps, "train.warmup_steps: must be between 0 and train.max_steps")
    need(0.0 <= tr.min_lr_ratio <= 1.0, "train.min_lr_ratio: must be in [0, 1]")
    need(tr.save_every >= 0, "train.save_every: must be >= 0")
    need(tr.keep_checkpoints >= 1, "train.keep_checkpoints: must be >= 1")
    need(tr.threads >= 0, "train.threads: must be >= 0")
    p.extend(throughput_problems(recipe))
    return p


def effective_batch_size(tr: TrainConfig) -> int:
    """Sequences per optimizer step: from tokens_per_step when given, else batch_size."""
    return -(-tr.tokens_per_step // tr.seq_len) if tr.tokens_per_step else tr.batch_size


def throughput_problems(recipe: "Recipe") -> list[str]:
    """Device, precision and batching problems, found before any work."""
    from langadapt.devices import device_problems, resolve_device
    from langadapt.train.precision import precision_problems

    tr = recipe.train
    p = device_problems(tr.device, "train.device")
    if not p:
        p += precision_problems(tr.precision, resolve_device(tr.device))
    if tr.packed_attention not in ("document", "row"):
        p.append(f"train.packed_attention: '{tr.packed_attention}' is not one of document, row")
    if tr.micro_batch_size < 0 or tr.tokens_per_step < 0:
        p.append("train.micro_batch_size, train.tokens_per_step: must be >= 0")
    elif tr.micro_batch_size and effective_batch_size(tr) % tr.micro_batch_size:
        p.append(
            f"train.micro_batch_size: {tr.micro_batch_size} must divide the batch of {effective_batch_size(tr)} "
            "sequences per step (train.batch_size, or train.tokens_per_step / train.seq_len)"
        )
    return p
