"""The `train` section of a recipe."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from langadapt.config import opt, req

if TYPE_CHECKING:
    from langadapt.recipe import Recipe


@dataclass(frozen=True, kw_only=True)
class PhaseConfig:
    name: str = opt("", "label of the phase (its folder: train/phases/<n>-<name>/); default: the method")
    method: str = req("train method of this phase (see `langadapt list train-methods`)")
    max_steps: int = req("optimizer steps in this phase")
    lr: float = opt(0.0, "peak learning rate of this phase (0: train.lr)")
    warmup_steps: int = opt(-1, "linear warmup steps of this phase (-1: train.warmup_steps, at most the phase's steps)")
    embeddings: str = opt("", "which embedding rows train in this phase: new, all, none ('': train.embeddings)")


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
    embeddings: str = opt(
        "new",
        "embedding rows that train beside the method: new (the rows of added tokens), all (the whole input "
        "embedding matrix and an output projection, tied or not: MAFT-style, cheap after tokenizer.method trim), none",
    )
    dropout: float = opt(
        -1.0,
        "dropout probability of the base model's own layers while training (hidden and attention): -1: the "
        "model's own (0.1 for XLM-R and BERT); 0: off, which also saves drawing the random masks (about 15% of "
        "an encoder's step on a CPU). The saved model's config keeps the model's own rates",
    )
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
        0,
        "sequences per forward/backward pass; the step accumulates gradients over the batch "
        "(0: on a CPU, passes of about 512 tokens in fp32 or 1,024 in bf16, which bound peak memory at no cost in speed; "
        "on a GPU, the whole batch)",
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
    sharding: str = opt(
        "none",
        "with several processes (accelerate launch / torchrun): none: data parallel (DDP), each process holds the "
        "whole model; full: FSDP, weights, gradients and optimizer state split over all processes (for models whose "
        "training state does not fit one GPU); hybrid: split within a node, replicated across nodes (less traffic "
        "between nodes); zero1, zero2, zero3: DeepSpeed ZeRO, splitting the optimizer state (1), and the gradients "
        "(2), and the weights (3) (pip install 'langadapt[deepspeed]'). An accelerate FSDP config (FULL_SHARD, "
        "HYBRID_SHARD) or DeepSpeed config (its ZeRO stage) sets it too; one process: no effect",
    )
    eval_every: int = opt(
        0, "every this many steps, bits per byte of a fixed held-out sample per trained language (0: off)"
    )
    eval_tokens: int = opt(8192, "tokens of whole held-out documents in that sample, per language")
    early_stopping_patience: int = opt(
        0, "stop when the target's held-out bits per byte has not improved in this many evaluations (0: never)"
    )
    log_to: tuple[str, ...] = opt(
        (), "also send each step's metrics to: tensorboard, wandb (offline unless logged in); metrics.jsonl always"
    )
    # -- masked-LM objective (encoders) and adapters ------------------------------------------------
    mlm_probability: float = opt(0.15, "mlm: fraction of each sequence's tokens chosen for prediction")
    mlm_mask_ratio: float = opt(0.8, "mlm: of the chosen tokens, the fraction replaced by the mask token")
    mlm_random_ratio: float = opt(
        0.1, "mlm: of the chosen tokens, the fraction replaced by a random token (rest: kept)"
    )
    mlm_whole_word: bool = opt(
        True, "mlm: choose whole words (SentencePiece '▁', byte-level 'Ġ', WordPiece '##', read from the tokenizer)"
    )
    adapter_reduction_factor: int = opt(
        16, "seq-bn, seq-bn-inv, double-seq-bn: bottleneck size = hidden size / this factor"
    )
    adapter_inv_reduction_factor: int = opt(2, "seq-bn-inv: reduction factor of the invertible embedding adapter")
    train_head: bool = opt(
        True,
        "encoders: the masked-LM head's own weights (transform, bias) train beside adapter and LoRA methods; "
        "its vocabulary projection is tied to the embeddings",
    )
    phases: tuple[PhaseConfig, ...] = opt(
        (),
        "a schedule of phases run one after the other, each with its own method, steps and learning rate "
        "(e.g. new rows and head first, then adapters); empty: one phase from train.method / max_steps / lr",
    )


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
    need(tr.dropout == -1 or 0 <= tr.dropout < 1, "train.dropout: must be -1 (the model's own) or in [0, 1)")
    p.extend(_embedding_problems(tr))
    need(0 <= tr.warmup_steps <= tr.max_steps, "train.warmup_steps: must be between 0 and train.max_steps")
    need(0.0 <= tr.min_lr_ratio <= 1.0, "train.min_lr_ratio: must be in [0, 1]")
    need(tr.save_every >= 0, "train.save_every: must be >= 0")
    need(tr.keep_checkpoints >= 1, "train.keep_checkpoints: must be >= 1")
    need(tr.threads >= 0, "train.threads: must be >= 0")
    p.extend(throughput_problems(recipe))
    p.extend(qlora_problems(recipe))
    p.extend(_encoder_problems(recipe))
    return p


EMBEDDINGS = ("new", "all", "none")


def _embedding_problems(tr: TrainConfig) -> list[str]:
    """Known values, and `all` only with methods whose other weights it does not contradict."""
    p = []
    settings = [("train.embeddings", tr.embeddings, tr.method if not tr.phases else "")]
    settings += [(f"train.phases[{i}].embeddings", ph.embeddings, ph.method) for i, ph in enumerate(tr.phases)]
    for where, value, method in settings:
        if value and value not in EMBEDDINGS:
            p.append(f"{where}: '{value}' is not one of {', '.join(EMBEDDINGS)}")
        elif (value or tr.embeddings) == "all" and method in ("head", "new-rows", "qlora"):
            p.append(
                f"{where}: all trains the whole embedding matrix, which method {method} keeps frozen "
                "(head and new-rows are the baselines of that choice; qlora's base is quantised); "
                "set it on a lora, adapter or full phase"
            )
    return p


def qlora_problems(recipe: "Recipe") -> list[str]:
    """What `train.method: qlora` needs: bitsandbytes, a CUDA GPU to train on, a decoder, no phases."""
    import importlib.util

    from langadapt.devices import device_problems, resolve_device

    tr, p = recipe.train, []
    phased = [i for i, ph in enumerate(tr.phases) if ph.method == "qlora"]
    for i in phased:
        p.append(
            f"train.phases[{i}].method: qlora loads the base in 4 bits for the whole run; "
            "use it as train.method without train.phases"
        )
    if tr.method != "qlora" and not phased:
        return p
    if importlib.util.find_spec("bitsandbytes") is None:
        p.append("train.method qlora: needs the package bitsandbytes: pip install 'langadapt[qlora]'")
    if not device_problems(tr.device, "train.device") and resolve_device(tr.device).type != "cuda":
        p.append(
            "train.method qlora: needs a CUDA GPU (bitsandbytes' 4-bit NF4 kernels) and "
            + ("train.device is not cuda" if tr.device != "auto" else "torch sees none here")
            + "; use train.method: lora"
        )
    from langadapt.models import base_config, is_encoder

    config = base_config(recipe.model)
    if config is not None and is_encoder(config):
        p.append(f"train.method qlora: decoders only; {config.model_type} is an encoder (use lora)")
    return p


def _encoder_problems(recipe: "Recipe") -> list[str]:
    """Masking ranges, the phase schedule, and what the base model allows (objective, methods, sequence length)."""
    from langadapt.train.methods import TRAIN_METHODS

    tr, p = recipe.train, []
    if not 0 < tr.mlm_probability < 1:
        p.append("train.mlm_probability: must be in (0, 1)")
    if tr.mlm_mask_ratio < 0 or tr.mlm_random_ratio < 0 or tr.mlm_mask_ratio + tr.mlm_random_ratio > 1:
        p.append("train.mlm_mask_ratio, train.mlm_random_ratio: must be >= 0 and sum to at most 1")
    if tr.adapter_reduction_factor < 1 or tr.adapter_inv_reduction_factor < 1:
        p.append("train.adapter_reduction_factor, train.adapter_inv_reduction_factor: must be >= 1")
    names = []
    for i, ph in enumerate(tr.phases):
        if ph.method not in TRAIN_METHODS:
            p.append(f"train.phases[{i}].method: {TRAIN_METHODS.unknown_message(ph.method)}")
        if ph.max_steps < 1:
            p.append(f"train.phases[{i}].max_steps: must be >= 1")
        if ph.lr < 0:
            p.append(f"train.phases[{i}].lr: must be >= 0 (0: train.lr)")
        if ph.warmup_steps < -1 or ph.warmup_steps > ph.max_steps:
            p.append(f"train.phases[{i}].warmup_steps: must be -1 or between 0 and the phase's max_steps")
        names.append(ph.name or ph.method)
    if len(set(names)) != len(names):
        p.append("train.phases: give phases with the same method distinct names")
    from langadapt.train.adapters import ADAPTER_METHODS, MERGEABLE_METHODS

    for i, ph in enumerate(tr.phases[:-1]):
        if ph.method in ADAPTER_METHODS and ph.method not in MERGEABLE_METHODS:
            p.append(
                f"train.phases[{i}].method: {ph.method} adapters cannot be merged, so only the last phase may add them"
            )
    from langadapt.train.adapters import model_problems

    p.extend(model_problems(recipe))
    return p


def effective_batch_size(tr: TrainConfig) -> int:
    """Sequences per optimizer step: from tokens_per_step when given, else batch_size."""
    return -(-tr.tokens_per_step // tr.seq_len) if tr.tokens_per_step else tr.batch_size


def throughput_problems(recipe: "Recipe") -> list[str]:
    """Device, precision and batching problems, found before any work."""
    from langadapt.devices import device_problems, resolve_device
    from langadapt.train.precision import precision_problems, resolve_precision
    from langadapt.train.tracking import sink_problems

    tr = recipe.train
    p, precision = device_problems(tr.device, "train.device"), "fp32"
    if not p:
        p += precision_problems(tr.precision, resolve_device(tr.device))
        precision = resolve_precision(tr.precision, resolve_device(tr.device)) if not p else precision
    if tr.eval_every < 0 or tr.eval_tokens < tr.seq_len or tr.early_stopping_patience < 0:
        p.append("train.eval_every, train.early_stopping_patience: must be >= 0; train.eval_tokens: >= train.seq_len")
    if tr.early_stopping_patience and not tr.eval_every:
        p.append("train.early_stopping_patience: needs train.eval_every > 0 (stopping is decided on held-out text)")
    p += sink_problems(tr.log_to)
    if tr.packed_attention not in ("document", "row"):
        p.append(f"train.packed_attention: '{tr.packed_attention}' is not one of document, row")
    if tr.micro_batch_size < 0 or tr.tokens_per_step < 0:
        p.append("train.micro_batch_size, train.tokens_per_step: must be >= 0")
    elif tr.micro_batch_size and effective_batch_size(tr) % tr.micro_batch_size:
        p.append(
            f"train.micro_batch_size: {tr.micro_batch_size} must divide the batch of {effective_batch_size(tr)} "
            "sequences per step (train.batch_size, or train.tokens_per_step / train.seq_len)"
        )
    return p + launch_problems(tr, precision)


def launch_problems(tr: TrainConfig, precision: str = "fp32") -> list[str]:
    """What `accelerate launch` / `torchrun` asked for that this run cannot do (seen in its environment)."""
    from langadapt.errors import ConfigError
    from langadapt.train.distributed import (
        ACCELERATE_SHARDINGS,
        SHARDINGS,
        accelerate_fsdp_strategy,
        launched_world_size,
        requested_sharding,
    )
    from langadapt.train.zero import accelerate_deepspeed_config, accelerate_zero_sharding, zero_problems

    world, p = launched_world_size(), []
    if tr.sharding not in SHARDINGS:
        p.append(f"train.sharding: '{tr.sharding}' is not one of {', '.join(SHARDINGS)}")
    p += _accelerate_fsdp_problems(tr, accelerate_fsdp_strategy(), ACCELERATE_SHARDINGS)
    try:
        ds = accelerate_deepspeed_config()
    except ConfigError as e:
        return p + e.problems
    zero = accelerate_zero_sharding(ds) if ds is not None else None
    if zero == "zero0":
        p.append(
            "train: accelerate is configured for DeepSpeed ZeRO stage 0, which shards nothing; choose stage 1, 2 "
            "or 3 in `accelerate config`, or multi-GPU for data parallelism (DDP)"
        )
    elif zero and tr.sharding not in ("none", zero):
        p.append(
            f"train.sharding: {tr.sharding}, but accelerate is configured for DeepSpeed ({zero}); make them agree, "
            "or leave train.sharding at none to follow accelerate"
        )
    sharding = requested_sharding(tr.sharding) if tr.sharding in SHARDINGS and zero != "zero0" else "none"
    if sharding != "none":
        p += _sharding_problems(tr, sharding, world)
    if sharding.startswith("zero"):
        p += zero_problems(tr, sharding, precision, ds)
    mixed = os.environ.get("ACCELERATE_MIXED_PRECISION", "no").lower()
    if mixed not in ("no", precision):
        p.append(
            f"train.precision resolves to {precision}, but accelerate is configured for mixed precision {mixed}; "
            f"set train.precision: {mixed}, or choose 'no' in `accelerate config` (langadapt applies train.precision)"
        )
    rows = effective_batch_size(tr)
    if world > 1 and rows % (world * (tr.micro_batch_size or 1)):
        p.append(
            f"train.batch_size: {rows} sequences per step do not split evenly over {world} processes"
            + (f" x micro-batches of {tr.micro_batch_size}" if tr.micro_batch_size else "")
        )
    return p


def _accelerate_fsdp_problems(tr: TrainConfig, strategy: str | None, mapping: dict[str, str]) -> list[str]:
    """An accelerate FSDP config is honoured as train.sharding; what of it langadapt cannot apply is refused."""
    from langadapt.train.distributed import env_flag

    if strategy is None:
        return []
    p = []
    if strategy not in mapping:
        p.append(
            f"train: accelerate's FSDP sharding strategy {strategy} is not supported; langadapt shards with "
            "FULL_SHARD (train.sharding: full) or HYBRID_SHARD (hybrid): choose one of them in `accelerate config`, "
            "or multi-GPU without FSDP for data parallelism (DDP)"
        )
    elif tr.sharding not in ("none", mapping[strategy]):
        p.append(
            f"train.sharding: {tr.sharding}, but accelerate is configured for FSDP {strategy} "
            f"({mapping[strategy]}); make them agree, or leave train.sharding at none to follow accelerate"
        )
    refused = {
        "FSDP_OFFLOAD_PARAMS": ("parameter offloading to the CPU", "shard over more GPUs or train fewer weights"),
        "FSDP_ACTIVATION_CHECKPOINTING": ("activation checkpointing", "set train.gradient_checkpointing: true"),
    }
    for env, (what, instead) in refused.items():
        if env_flag(env):
            p.append(
                f"train: accelerate's FSDP config asks for {what}, which langadapt does not apply; {instead}, "
                "and turn it off in `accelerate config`"
            )
    return p


def _sharding_problems(tr: TrainConfig, sharding: str, world: int) -> list[str]:
    """Methods that cannot be sharded, and hybrid sharding over processes that do not form whole nodes."""
    from langadapt.train.distributed import node_size

    p = []
    methods = [ph.method for ph in tr.phases] if tr.phases else [tr.method]
    if "qlora" in methods:
        p.append(
            f"train.sharding {sharding}: qlora's 4-bit bitsandbytes weights cannot be sharded; use "
            "train.method: lora with sharding (the base is sharded instead of quantised), or qlora with "
            "train.sharding: none"
        )
    if sharding == "hybrid" and world > 1:
        node = node_size()
        if node is None:
            p.append(
                "train.sharding hybrid: the processes per node are unknown (LOCAL_WORLD_SIZE is not set); "
                "launch with torchrun or accelerate launch, which set it"
            )
        elif world % node:
            p.append(
                f"train.sharding hybrid: {world} processes do not split into nodes of {node} (LOCAL_WORLD_SIZE); "
                "start the same number of processes on every node"
            )
    return p
