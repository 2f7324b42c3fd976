"""Checks of the train section of a recipe that need the stage's parts (registries, files, the model).

`validation.py` runs them with every other section's; `config.py` holds the section itself and imports
only mechanics.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
from typing import TYPE_CHECKING

from langadapt.config import is_mixed, primary, scratch_requested
from langadapt.devices import DTYPES, device_problems, resolve_device, resolve_dtype
from langadapt.errors import ConfigError
from langadapt.models.loading import base_config, is_encoder
from langadapt.sources.parallel import language_problems, pair_problems
from langadapt.train.adapters import ADAPTER_METHODS, MERGEABLE_METHODS, model_problems
from langadapt.train.config import (
    AUTO_RATIO,
    MIXING_METHODS,
    NOT_FACTORISED,
    SCRATCH_VOCABULARIES,
    TrainConfig,
    effective_batch_size,
    objective_settings,
)
from langadapt.train.distributed import ACCELERATE_SHARDINGS, SHARDINGS, accelerate_fsdp_strategy, requested_sharding
from langadapt.train.memory import memory_problems
from langadapt.train.methods import TRAIN_METHODS
from langadapt.train.objectives import (
    CAUSAL_OBJECTIVES,
    CODESWITCH_OBJECTIVES,
    MASKED_OBJECTIVES,
    OBJECTIVES,
    PAIR_OBJECTIVES,
    is_masked,
)
from langadapt.train.pairs import DIRECTIONS
from langadapt.train.precision import WEIGHT_PRECISIONS, load_dtype, precision_problems, resolve_precision, supports
from langadapt.train.processes import env_flag, launched_world_size, node_size
from langadapt.train.scratch import byte_premium_problems, size_problems
from langadapt.train.tracking import sink_problems
from langadapt.train.translation import TRANSLATION_LOSS_ON
from langadapt.train.zero import accelerate_deepspeed_config, accelerate_zero_sharding, zero_problems

if TYPE_CHECKING:
    import torch
    from transformers import PretrainedConfig

    from langadapt.recipe import Recipe


def check(recipe: "Recipe") -> list[str]:
    """Problems with the train section."""

    tr, p = recipe.train, []

    def need(cond: bool, msg: str) -> None:
        if not cond:
            p.append(msg)

    if tr.method not in TRAIN_METHODS:
        p.append(f"train.method: {TRAIN_METHODS.unknown_message(tr.method)}")
    if tr.objective not in OBJECTIVES and tr.objective != AUTO:
        p.append(f"train.objective: {OBJECTIVES.unknown_message(tr.objective)} (or auto)")
    need(tr.lora_rank >= 1, "train.lora_rank: must be >= 1")
    need(bool(tr.lora_targets), "train.lora_targets: list at least one module name")
    p.extend(replay_ratio_problems(recipe))
    mx = tr.mixing
    need(
        mx.method in MIXING_METHODS,
        f"train.mixing.method: '{mx.method}' is not one of {', '.join(MIXING_METHODS)}",
    )
    need(mx.alpha >= 0, f"train.mixing.alpha: must be >= 0 (got {mx.alpha}); 0 samples sources uniformly, 1 by size")
    need(mx.unimax_epochs > 0, f"train.mixing.unimax_epochs: must be > 0 (got {mx.unimax_epochs})")
    need(mx.warn_epochs > 0, f"train.mixing.warn_epochs: must be > 0 (got {mx.warn_epochs})")
    need(tr.seq_len >= 8, "train.seq_len: must be >= 8")
    need(tr.batch_size >= 1, "train.batch_size: must be >= 1")
    need(tr.max_steps >= 1, "train.max_steps: must be >= 1")
    need(tr.lr > 0, "train.lr: must be > 0")
    need(tr.embedding_lr >= 0, "train.embedding_lr: must be >= 0")
    need(tr.dropout == -1 or 0 <= tr.dropout < 1, "train.dropout: must be -1 (the model's own) or in [0, 1)")
    p.extend(_embedding_problems(tr))
    p.extend(factorised_problems(recipe))
    need(0 <= tr.warmup_steps <= tr.max_steps, "train.warmup_steps: must be between 0 and train.max_steps")
    need(0.0 <= tr.min_lr_ratio <= 1.0, "train.min_lr_ratio: must be in [0, 1]")
    need(tr.save_every >= 0, "train.save_every: must be >= 0")
    need(tr.keep_checkpoints >= 1, "train.keep_checkpoints: must be >= 1")
    need(tr.threads >= 0, "train.threads: must be >= 0")
    need(
        tr.peak_tflops >= 0,
        "train.peak_tflops: must be >= 0 (a GPU's dense TFLOP/s; 0: looked up for known GPUs, measured on a CPU)",
    )
    p.extend(throughput_problems(recipe))
    p.extend(qlora_problems(recipe))
    p.extend(_encoder_problems(recipe))
    p.extend(scratch_problems(recipe))
    p.extend(objective_problems(recipe))
    return p


def objective_problems(recipe: "Recipe") -> list[str]:
    """Each phase's objective, and what the objectives need: parallel data for the pair objectives,
    checked here (files, counts, empty sides, languages) before any work."""
    tr, p = recipe.train, []
    settings = objective_settings(tr)
    for where, name in settings:
        if where != "train.objective" and name not in OBJECTIVES:
            p.append(f"{where}: {OBJECTIVES.unknown_message(name)}")
    kinds = {is_masked(name) for _, name in settings if name != AUTO}
    if len(kinds) > 1:
        p.append(
            "train.phases: every phase's objective must be of one kind, masked (" + ", ".join(MASKED_OBJECTIVES) + ") "
            "or causal (" + ", ".join(CAUSAL_OBJECTIVES) + "): they train one model"
        )
    pair_users = [(where, name) for where, name in settings if name in PAIR_OBJECTIVES]
    if pair_users and tr.parallel is None:
        p.append(
            f"{pair_users[0][0]} {pair_users[0][1]}: trains on translation pairs and train.parallel is not set; set "
            "train.parallel.path (builtin:bible-bitext, a two-column TSV, or two aligned files)"
        )
    if not 0 < tr.parallel_ratio <= 1:
        p.append("train.parallel_ratio: must be in (0, 1]")
    if tr.pair_direction not in DIRECTIONS:
        p.append(f"train.pair_direction: '{tr.pair_direction}' is not one of {', '.join(DIRECTIONS)}")
    if tr.translation_loss_on not in TRANSLATION_LOSS_ON:
        p.append(
            f"train.translation_loss_on: '{tr.translation_loss_on}' is not one of {', '.join(TRANSLATION_LOSS_ON)}"
        )
    if not tr.pair_separator:
        p.append("train.pair_separator: must not be empty (it marks where the translation starts)")
    switch_users = [(where, name) for where, name in settings if name in CODESWITCH_OBJECTIVES]
    if switch_users:
        where, name = switch_users[0]
        if not tr.codeswitch_dictionary:
            p.append(
                f"{where} {name}: replaces words by their dictionary translations and train.codeswitch_dictionary "
                "is not set; give a TSV of word pairs, a dictd .index file (freedict), or init (WECHSEL's dictionary)"
            )
        elif tr.codeswitch_dictionary == "init" and recipe.init.method != "wechsel":
            p.append(
                f"train.codeswitch_dictionary: init takes the dictionary WECHSEL aligns with, and init.method is "
                f"{recipe.init.method}; set init.method: wechsel or give a dictionary file"
            )
        elif tr.codeswitch_dictionary != "init" and not os.path.isfile(os.path.expanduser(tr.codeswitch_dictionary)):
            p.append(f"train.codeswitch_dictionary: no such file: {tr.codeswitch_dictionary}")
    if not 0 < tr.codeswitch_probability <= 1:
        p.append("train.codeswitch_probability: must be in (0, 1]")
    if not 0 < tr.codeswitch_ratio <= 1:
        p.append("train.codeswitch_ratio: must be in (0, 1]")
    lem = [where for where, name in settings if name == "lem"]
    if lem:
        target = primary(recipe.corpus, "target").language
        if not tr.lem_lexicon and not tr.lem_tagger:
            p.append(
                f"{lem[0]} lem: masks nouns, verbs and named entities, and nothing says which words of {target} "
                "those are: set train.lem_lexicon (a TSV of word<TAB>tag) or train.lem_tagger (a spaCy pipeline "
                "for the language)"
            )
        if tr.lem_lexicon and not os.path.isfile(os.path.expanduser(tr.lem_lexicon)):
            p.append(f"train.lem_lexicon: no such file: {tr.lem_lexicon}")
        if tr.lem_tagger and importlib.util.find_spec("spacy") is None:
            p.append("train.lem_tagger: needs the package spacy: pip install spacy")
        if not 0 < tr.lem_probability <= 1:
            p.append("train.lem_probability: must be in (0, 1]")
    meco = [i for i, (_, name) in enumerate(settings) if name == "meco"]
    if meco and (meco[-1] == len(settings) - 1 or settings[-1][1] != "clm"):
        p.append(
            "train.objective meco: MeCo ends with a cool-down on plain text, so that the model needs no metadata; "
            "use train.phases with the meco phase(s) followed by a clm phase (the paper: the last 10% of steps)"
        )
    if "{domain}" not in tr.meco_template:
        p.append("train.meco_template: must contain {domain}, where each document's URL domain or source name goes")
    own_stream = sorted({name for _, name in settings if name in (*PAIR_OBJECTIVES, *CODESWITCH_OBJECTIVES, "meco")})
    if own_stream and is_mixed(recipe.corpus):
        p.append(
            f"train.objective {', '.join(own_stream)}: draws target rows from a stream of its own and cannot yet share "
            "them with several target or replay sources (corpus.target / corpus.replay as lists); give one source each"
        )
    if tr.parallel is not None:
        target_src, replay_src = primary(recipe.corpus, "target"), primary(recipe.corpus, "replay")
        target = target_src.language if target_src is not None else ""
        replay = replay_src.language if replay_src is not None else None
        p.extend(language_problems(tr.parallel, target, replay, "train.parallel"))
        p.extend(pair_problems(tr.parallel, "train.parallel"))
    return p


def scratch_problems(recipe: "Recipe") -> list[str]:
    """train.method scratch and eval.reference scratch: what the from-scratch model needs, and what it cannot be."""
    tr, p = recipe.train, []
    for i, ph in enumerate(tr.phases):
        if ph.method == "scratch":
            p.append(
                f"train.phases[{i}].method: scratch trains a fresh model whole and cannot be a phase beside "
                "adaptation methods; use train.method: scratch without phases, or eval.reference: scratch for a "
                "from-scratch model beside the adapted one"
            )
    if tr.method == "scratch":
        if tr.phases:
            p.append("train.phases: train.method scratch trains one fresh model in one phase; remove train.phases")
        if recipe.eval.reference == "scratch":
            p.append(
                "eval.reference: scratch trains a from-scratch model beside an adapted one, and with train.method "
                "scratch this run's model is already from scratch; remove one of them"
            )
        if recipe.tokenizer.method != "keep":
            p.append(
                f"tokenizer.method: {recipe.tokenizer.method} adapts a tokenizer that train.method scratch does not "
                "use (the model gets its own, train.scratch.vocabulary); set tokenizer.method: keep"
            )
        if tr.factorised_embeddings:
            p.append(
                "train.factorised_embeddings: OFA's factors need an initialised model; train.method scratch has none"
            )
    if not scratch_requested(recipe):
        return p
    s = tr.scratch
    if s.vocabulary not in SCRATCH_VOCABULARIES:
        p.append(f"train.scratch.vocabulary: '{s.vocabulary}' is not one of {', '.join(SCRATCH_VOCABULARIES)}")
    p.extend(size_problems(s))
    p.extend(byte_premium_problems(recipe))
    return p


def replay_ratio_problems(recipe: "Recipe") -> list[str]:
    """train.replay_ratio: a fraction in [0, 1), or auto with pilots that can run and be compared."""
    tr = recipe.train
    if isinstance(tr.replay_ratio, str):
        if tr.replay_ratio != AUTO_RATIO:
            return [f"train.replay_ratio: '{tr.replay_ratio}' is neither a fraction in [0, 1) nor auto"]
        p = []
        if recipe.corpus.replay is None:
            p.append("train.replay_ratio: auto chooses how much replay text to mix in and needs corpus.replay")
        ratios = tr.pilots.ratios
        if len(set(ratios)) < 2 or any(not 0.0 <= r < 1.0 for r in ratios):
            p.append(
                f"train.pilots.ratios: give at least 2 distinct replay ratios, each in [0, 1) (got {list(ratios)})"
            )
        if tr.pilots.steps < 0 or 0 < tr.pilots.steps < 4:
            p.append(f"train.pilots.steps: 0 (a tenth of the schedule) or at least 4 (got {tr.pilots.steps})")
        if not tr.forgetting_tolerance > 0:
            p.append(f"train.forgetting_tolerance: must be > 0 bits per byte (got {tr.forgetting_tolerance})")
        if tr.phases:
            p.append(
                "train.replay_ratio: auto runs its pilots with train.method and cannot yet follow train.phases; set a ratio"
            )
        if tr.factorised_embeddings:
            p.append("train.replay_ratio: auto cannot yet run pilots with train.factorised_embeddings; set a ratio")
        if tr.objective not in ("clm", "mlm", "auto") or tr.langsamp:
            p.append(
                f"train.replay_ratio: auto runs its pilots with plain clm or mlm and train.objective is "
                f"{tr.objective}{' with train.langsamp' if tr.langsamp else ''}; set a ratio"
            )
        if launched_world_size() > 1:
            p.append(
                "train.replay_ratio: auto runs its pilots in one process only; set a number under a launcher "
                "(a one-process run with auto writes its choice to train/pilots/choice.json)"
            )
        return p
    if not 0.0 <= tr.replay_ratio < 1.0:
        return ["train.replay_ratio: must be in [0, 1) or auto"]
    if tr.replay_ratio > 0 and recipe.corpus.replay is None:
        return ["train.replay_ratio: > 0 needs a valid corpus.replay (or set train.replay_ratio: 0)"]
    return []


def memory_problems_here(recipe: "Recipe") -> list[str]:
    """What the model, method and strategy need against what this machine has (empty: it fits, or cannot be told).

    Run before the train stage (`pipeline.run`), not at every recipe load: a recipe written for a
    GPU cluster must still run its corpus and tokenizer stages on a laptop.
    """
    if recipe.train.method == "scratch":  # the estimate is of the base model; a from-scratch one is at most 12 x 768
        return []
    device = resolve_device(recipe.train.device)
    return memory_problems(recipe, device, resolve_precision(recipe.train.precision, device))


EMBEDDINGS = ("new", "all", "none")
AUTO = "auto"


def resolve_objective(recipe: "Recipe", config: "PretrainedConfig | None" = None) -> "Recipe":
    """`train.objective: auto` made concrete from the base model: mlm for an encoder, clm for a decoder.

    `config` is the base model's config when the caller has it (the pipeline's preflight reads a hub
    model's); otherwise it is read offline (`base_config`: bundled models, folders, the hub cache).
    A GGUF file always imports as a causal LM. Returns the recipe unchanged when the kind is not
    known yet; every stage that trains reads it after the preflight has resolved it.
    """
    if recipe.train.objective != AUTO:
        return recipe
    if config is None and not recipe.model.gguf_file:
        config = base_config(recipe.model)
    if config is None and not recipe.model.gguf_file:
        return recipe
    objective = "mlm" if config is not None and is_encoder(config) else "clm"
    return dataclasses.replace(recipe, train=dataclasses.replace(recipe.train, objective=objective))


def _embedding_problems(tr: TrainConfig) -> list[str]:
    """Known values, and `all` only with methods whose other weights it does not contradict."""
    p = []
    settings = [("train.embeddings", tr.embeddings, tr.method if not tr.phases else "")]
    settings += [(f"train.phases[{i}].embeddings", ph.embeddings, ph.method) for i, ph in enumerate(tr.phases)]
    for where, value, method in settings:
        if value and value not in EMBEDDINGS:
            p.append(f"{where}: '{value}' is not one of {', '.join(EMBEDDINGS)}")
        elif (value or tr.embeddings) == "all" and method in ("new-rows", "qlora"):
            p.append(
                f"{where}: all trains the whole embedding matrix, which method {method} keeps frozen "
                "(new-rows is the baseline of that choice; qlora's base is quantised); "
                "set it on a head, lora, adapter or full phase"
            )
    return p


def factorised_problems(recipe: "Recipe") -> list[str]:
    """`train.factorised_embeddings` needs OFA's factors and a method that can train them."""
    tr, p = recipe.train, []
    if not tr.factorised_embeddings:
        return p
    if recipe.init.method != "ofa":
        p.append(
            f"train.factorised_embeddings: trains OFA's factors (coordinates times primitives), which init.method "
            f"{recipe.init.method} does not compute; set init.method: ofa, or remove train.factorised_embeddings"
        )
    settings = [(f"train.phases[{i}].method", ph.method) for i, ph in enumerate(tr.phases)]
    for where, method in settings or [("train.method", tr.method)]:
        if method in NOT_FACTORISED:
            p.append(
                f"{where}: {method} cannot train factorised embeddings (train.factorised_embeddings): "
                f"{NOT_FACTORISED[method]}"
            )
    return p


def qlora_problems(recipe: "Recipe") -> list[str]:
    """What `train.method: qlora` needs: bitsandbytes, a CUDA GPU to train on, a decoder, no phases."""
    import importlib.util

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
    config = base_config(recipe.model)
    if config is not None and is_encoder(config):
        p.append(f"train.method qlora: decoders only; {config.model_type} is an encoder (use lora)")
    return p


def _encoder_problems(recipe: "Recipe") -> list[str]:
    """Masking ranges, the phase schedule, and what the base model allows (objective, methods, sequence length)."""
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
    for i, ph in enumerate(tr.phases[:-1]):
        if ph.method in ADAPTER_METHODS and ph.method not in MERGEABLE_METHODS:
            p.append(
                f"train.phases[{i}].method: {ph.method} adapters cannot be merged, so only the last phase may add them"
            )
    p.extend(model_problems(recipe))
    return p


def throughput_problems(recipe: "Recipe") -> list[str]:
    """Device, precision and batching problems, found before any work."""

    tr = recipe.train
    p, precision = device_problems(tr.device, "train.device"), "fp32"
    if not p:
        device = resolve_device(tr.device)
        p += precision_problems(tr.precision, device)
        p += dtype_problems(recipe, device)
        weights = load_dtype(recipe, resolve_dtype(recipe.model.dtype, device, tr.precision))
        precision = resolve_precision(tr.precision, device, weights) if not p else precision
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


def dtype_problems(recipe: "Recipe", device: "torch.device") -> list[str]:
    """model.dtype against train.precision and the device: the frozen weights' type is what the forward pass
    computes in, and the float32 trained weights meet them under autocast in that type."""
    tr, p = recipe.train, []
    if recipe.model.dtype not in DTYPES or tr.precision not in ("auto", "fp32", "bf16", "fp16"):
        return p  # reported by validation.py and precision_problems
    dtype = resolve_dtype(recipe.model.dtype, device, tr.precision)
    if tr.low_precision_master_weights and dtype == "float16":
        p.append(
            "train.low_precision_master_weights: float16 weights cannot be trained directly (the fp16 loss scaler "
            "refuses fp16 gradients); use model.dtype: bfloat16, or turn the option off"
        )
    methods = {ph.method for ph in tr.phases} if tr.phases else {tr.method}
    weights = WEIGHT_PRECISIONS.get(load_dtype(recipe, dtype))
    if weights is None or methods == {"qlora"}:  # float32 weights, or a 4-bit base computing in train.precision
        return p
    if tr.precision not in ("auto", weights):
        p.append(
            f"train.precision: {tr.precision}, but model.dtype {recipe.model.dtype} holds the frozen weights in "
            f"{dtype}, which the forward pass computes in; set train.precision: auto (it follows the weights) or "
            f"{weights}, or model.dtype: auto or float32"
        )
    elif not supports(device, weights) and not (device.type == "cpu" and weights == "bf16"):
        p.append(
            f"model.dtype: {dtype} weights compute in {weights}, which {device.type} does not train in; "
            "use model.dtype: auto or float32"
        )
    return p


def launch_problems(tr: TrainConfig, precision: str = "fp32") -> list[str]:
    """What `accelerate launch` / `torchrun` asked for that this run cannot do (seen in its environment)."""

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
    p = []
    if tr.factorised_embeddings:
        p.append(
            f"train.sharding {sharding}: factorised embeddings (train.factorised_embeddings) train in one process "
            "or data parallel (DDP) only; use train.sharding: none, or train at full size"
        )
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
