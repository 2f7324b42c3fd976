"""The from-scratch model: Goldfish's size table and recipe, the byte premium, a fresh model of the base's family.

Goldfish (Chang et al. 2024, "Goldfish: Monolingual Language Models for 350 Languages"; the
size tiers come from their "When Is Multilinguality a Curse?") trains one monolingual model
per language and data size. Sizes are measured in English-equivalent bytes: the language's
UTF-8 bytes divided by its byte premium (Arnett et al. 2024), the bytes it needs for the
content of one English byte, so a language written in a script of 2- or 3-byte characters is
not given a larger model for the same content. The table (their training scripts,
training_code/prepare_training_scripts.py and gpt_small/base_config.json):

| English-equivalent MB | Goldfish tier | layers x hidden | heads | batch (sequences of 512) |
|---|---|---|---|---|
| below 10 | 5mb | 4 x 512 | 8 | 4 |
| 10 to 100 | 10mb | 4 x 512 | 8 | 8 |
| 100 to 1000 | 100mb | 12 x 768 | 12 | 32 |
| 1000 and more | 1000mb | 12 x 768 | 12 | 64 |

Goldfish has no model below 5 MB; a smaller corpus gets the 5mb tier's recipe (the record
says so). Goldfish's "full" models (all of a language's data, under 1 GB) were 12 x 768 at any
size; the table follows the fixed tiers, whose model matches the text it is trained on.
Training: 10 epochs, peak learning rate 1e-4, warmup over 10% of the steps, AdamW weight
decay 0.01. Departures, all of the training loop's: the decay after warmup is its cosine to 0
(Goldfish: linear to 0), and weight decay spares embedding rows.

The model is the base's config class (Llama for SmolLM2, XLM-R for XLM-R) with the table's
depth and width: attention heads of 64 dimensions, each with its own keys and values (as
Goldfish's GPT-2), the feed-forward width at the base's ratio to the hidden size rounded to a
multiple of 64, the base's position scheme, norms, activation and tying; the vocabulary is the
scratch tokenizer's.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from langadapt.config import SourceConfig, primary
from langadapt.errors import ConfigError
from langadapt.models.loading import is_encoder, max_sequence_length
from langadapt.train.config import ScratchConfig

if TYPE_CHECKING:
    from transformers import PretrainedConfig, PreTrainedModel, PreTrainedTokenizerBase

    from langadapt.recipe import Recipe

HEAD_DIM = 64
MB = 1_000_000  # Goldfish's MB: 10^6 bytes


@dataclass(frozen=True)
class Tier:
    from_mb: float  # English-equivalent MB from which the tier applies
    name: str
    layers: int
    hidden: int
    batch_size: int


SIZES = (
    Tier(0.0, "5mb", 4, 512, 4),
    Tier(10.0, "10mb", 4, 512, 8),
    Tier(100.0, "100mb", 12, 768, 32),
    Tier(1000.0, "1000mb", 12, 768, 64),
)
GOLDFISH_SMALLEST_MB = 5.0

# a bundled target corpus -> its bundled English translation, documents paired by id (book.chapter)
BUNDLED_PARALLEL = {"builtin:bible-nya": "builtin:bible-eng"}


@dataclass(frozen=True)
class Size:
    tier: str
    layers: int
    hidden: int
    batch_size: int
    scaled_mb: float
    overridden: tuple[str, ...] = ()  # the train.scratch keys that replaced the table's values

    def record(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["overridden"] = list(self.overridden)
        if self.scaled_mb < GOLDFISH_SMALLEST_MB:
            out["note"] = f"below Goldfish's smallest tier ({GOLDFISH_SMALLEST_MB:g} MB): its 5mb recipe is used"
        return out


def scaled_megabytes(corpus_bytes: int, byte_premium: float) -> float:
    """The corpus's English-equivalent size in MB: its UTF-8 bytes over the language's byte premium."""
    if byte_premium <= 0:
        raise ValueError("byte premium must be > 0")
    return corpus_bytes / byte_premium / MB


def choose_size(scaled_mb: float, cfg: ScratchConfig) -> Size:
    """The table's row for `scaled_mb`, with train.scratch's layers, hidden and batch_size where given."""
    tier = [t for t in SIZES if scaled_mb >= t.from_mb][-1]
    layers, hidden = (cfg.layers, cfg.hidden) if cfg.layers and cfg.hidden else (tier.layers, tier.hidden)
    overridden = tuple(k for k in ("layers", "hidden", "batch_size") if getattr(cfg, k))
    return Size(tier.name, layers, hidden, cfg.batch_size or tier.batch_size, round(scaled_mb, 3), overridden)


def size_problems(cfg: ScratchConfig, where: str = "train.scratch") -> list[str]:
    """What makes no sense in train.scratch, each with what to write instead."""
    p = []
    if bool(cfg.layers) != bool(cfg.hidden):
        p.append(f"{where}.layers and {where}.hidden: give both (a size of your own) or neither (the size table)")
    if cfg.layers < 0 or cfg.hidden < 0 or cfg.batch_size < 0 or cfg.max_steps < 0 or cfg.vocab_size < 0:
        p.append(f"{where}: layers, hidden, batch_size, max_steps and vocab_size must be >= 0 (0: the default)")
    if cfg.hidden > 0 and cfg.hidden % HEAD_DIM:
        p.append(
            f"{where}.hidden: {cfg.hidden} is not a multiple of {HEAD_DIM} (attention heads of {HEAD_DIM} "
            f"dimensions); e.g. {max(HEAD_DIM, round(cfg.hidden / HEAD_DIM) * HEAD_DIM)}"
        )
    if cfg.epochs <= 0:
        p.append(f"{where}.epochs: must be > 0 (Goldfish: 10)")
    if cfg.lr <= 0:
        p.append(f"{where}.lr: must be > 0 (Goldfish: 1e-4)")
    if not 0 <= cfg.warmup_ratio < 1:
        p.append(f"{where}.warmup_ratio: must be in [0, 1) (Goldfish: 0.1)")
    if cfg.weight_decay < 0:
        p.append(f"{where}.weight_decay: must be >= 0")
    if cfg.seq_len < 8:
        p.append(f"{where}.seq_len: must be >= 8 (Goldfish: 512)")
    if cfg.byte_premium < 0:
        p.append(f"{where}.byte_premium: must be > 0, or 0 to compute it from parallel text")
    if cfg.vocabulary == "target" and 0 < cfg.vocab_size < 300:
        p.append(
            f"{where}.vocab_size: {cfg.vocab_size} is below the byte alphabet a trained tokenizer starts from; "
            "use vocabulary: bytes for a byte-level model"
        )
    return p


# -- the byte premium ---------------------------------------------------------------------------


def parallel_sources(recipe: "Recipe") -> tuple[SourceConfig, SourceConfig] | None:
    """Target-language text and its English translation to measure the byte premium on, if the recipe has any."""
    t = recipe.tokenizer
    if t.parity_target is not None and t.parity_reference is not None:
        return t.parity_target, t.parity_reference
    target = primary(recipe.corpus, "target")
    english = BUNDLED_PARALLEL.get(target.path) if target is not None else None
    if english is not None:
        return target, SourceConfig(path=english, language="eng")
    return None


def byte_premium_problems(recipe: "Recipe") -> list[str]:
    """A from-scratch model needs a byte premium: given, or parallel text with English to compute it from."""
    if recipe.train.scratch.byte_premium > 0:
        return []
    pair = parallel_sources(recipe)
    if pair is None:
        return [
            "train.scratch.byte_premium: the from-scratch model is sized by English-equivalent bytes, and this "
            "recipe has no parallel English text to compute the byte premium from; give it (e.g. 1.0 for a "
            "language as compact as English; Goldfish's model cards list it per language), or name parallel text "
            "in tokenizer.parity_target and tokenizer.parity_reference"
        ]
    if pair[1].language != "eng":
        return [
            f"train.scratch.byte_premium: a byte premium is measured against English, and "
            f"tokenizer.parity_reference is '{pair[1].language}'; give train.scratch.byte_premium"
        ]
    return []


def measure_byte_premium(target: list[Any], english: list[Any]) -> dict[str, Any]:
    """UTF-8 bytes of the target documents over those of their English translations, documents paired by id."""
    theirs = {d.id: d.text for d in english}
    pairs = [(d.text, theirs[d.id]) for d in target if d.id in theirs]
    if not pairs:
        raise ConfigError(
            ["train.scratch.byte_premium: the parallel texts share no document id; give train.scratch.byte_premium"]
        )
    t_bytes = sum(len(a.encode("utf-8")) for a, _ in pairs)
    e_bytes = sum(len(b.encode("utf-8")) for _, b in pairs)
    return {
        "byte_premium": round(t_bytes / e_bytes, 4),
        "pairs": len(pairs),
        "bytes": t_bytes,
        "english_bytes": e_bytes,
    }


# -- the model -----------------------------------------------------------------------------------


def scratch_config(base: "PretrainedConfig", tok: "PreTrainedTokenizerBase", size: Size) -> "PretrainedConfig":
    """The base's config class at `size`, for `tok`'s vocabulary."""
    config = copy.deepcopy(base)
    ratio = _ffn_width(base) / base.hidden_size
    heads = size.hidden // HEAD_DIM
    config.hidden_size = size.hidden
    config.num_hidden_layers = size.layers
    config.num_attention_heads = heads
    if getattr(config, "num_key_value_heads", None) is not None:
        config.num_key_value_heads = heads
    if getattr(config, "head_dim", None) is not None:
        config.head_dim = HEAD_DIM
    width = max(HEAD_DIM, round(size.hidden * ratio / HEAD_DIM) * HEAD_DIM)
    if hasattr(config, "intermediate_size"):
        config.intermediate_size = width
    elif hasattr(config, "n_inner"):
        config.n_inner = width
    if getattr(config, "layer_types", None) is not None:  # per-layer attention kinds (Gemma 3, Qwen 3): the first ones
        config.layer_types = list(config.layer_types)[: size.layers]
    config.vocab_size = len(tok)
    for name in ("bos_token_id", "eos_token_id", "pad_token_id"):
        token = getattr(tok, name.replace("_id", ""), None)
        setattr(config, name, tok.convert_tokens_to_ids(token) if token else None)
    for stale in ("quantization_config", "mlm_head_created"):
        if hasattr(config, stale):
            delattr(config, stale)
    return config


def _ffn_width(config: "PretrainedConfig") -> int:
    width = getattr(config, "intermediate_size", None) or getattr(config, "n_inner", None)
    return int(width or 4 * config.hidden_size)  # GPT-2's n_inner None means 4 x hidden


def build_model(config: "PretrainedConfig", seed: int) -> "PreTrainedModel":
    """A freshly initialised model of `config` (the family's own initialisation), float32."""
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForMaskedLM

    torch.manual_seed(seed)
    auto = AutoModelForMaskedLM if is_encoder(config) else AutoModelForCausalLM
    return auto.from_config(config, dtype=torch.float32)


def sequence_length(cfg: ScratchConfig, config: "PretrainedConfig") -> int:
    """train.scratch.seq_len, at most what the model's positions allow."""
    return min(cfg.seq_len, max_sequence_length(config))


def steps_for(cfg: ScratchConfig, tokens: int, seq_len: int, batch_size: int) -> dict[str, Any]:
    """Goldfish's schedule: epochs x (tokens / seq_len) sequences in batches; warmup the first warmup_ratio of it."""
    per_epoch = tokens / (seq_len * batch_size)
    full = max(1, int(cfg.epochs * per_epoch))
    steps = min(full, cfg.max_steps) if cfg.max_steps else full
    return {
        "steps": steps,
        "steps_for_epochs": full,
        "warmup_steps": int(steps * cfg.warmup_ratio),
        "epochs_scheduled": round(steps / per_epoch, 3),
        "capped": steps < full,
    }


def scratch_recipe(recipe: "Recipe", seq_len: int, size: Size, schedule: dict[str, Any]) -> "Recipe":
    """The recipe the training loop runs the from-scratch model under: every weight trains, target text only."""
    s, tr = recipe.train.scratch, recipe.train
    train = dataclasses.replace(
        tr,
        method="scratch",
        lr=s.lr,
        embedding_lr=0.0,
        max_steps=schedule["steps"],
        warmup_steps=schedule["warmup_steps"],
        min_lr_ratio=0.0,
        weight_decay=s.weight_decay,
        seq_len=seq_len,
        batch_size=size.batch_size,
        tokens_per_step=0,
        replay_ratio=0.0,
        embeddings="all",
        factorised_embeddings=False,
        phases=(),
        # one word of a byte vocabulary is the whole text (no pre-tokeniser splits it): mask bytes, not words
        mlm_whole_word=tr.mlm_whole_word and s.vocabulary != "bytes",
    )
    return dataclasses.replace(recipe, train=train)


def parameters(model: Any) -> int:
    """Distinct parameters (a tied head counted once)."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def describe(size: Size) -> str:
    return f"{size.layers} layers x {size.hidden} hidden ({size.hidden // HEAD_DIM} heads)"


def within_epochs(tokens_trained: int, corpus_tokens: int) -> float:
    return round(tokens_trained / corpus_tokens, 3) if corpus_tokens else math.nan
