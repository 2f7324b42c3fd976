"""Train methods from the `adapters` library (AdapterHub), a head-only method, and how they are saved.

`seq-bn` (Pfeiffer, AdapterHub's `seq_bn`), `seq-bn-inv` (MAD-X: plus an invertible adapter
on the embeddings, `seq_bn_inv`) and `double-seq-bn` (Houlsby, `double_seq_bn`) add bottleneck
adapters; LoRA on an encoder goes through the same library (`lora-adapters`). Beside any of them, the rows of new tokens train through
peft's trainable tokens (the rest of the embedding matrix stays frozen, and checkpoints
hold only the new rows), and on an encoder the masked-LM head's transform and bias train
too when `train.train_head` is on. `head` trains the head alone: the warm-up a freshly
created head needs, and the honest baseline for what adaptation adds.

Saving (`finalize`): a peft part is saved to `adapter/` and merged; an AdapterHub adapter
is saved as a standard folder (`load_adapter`-able) under `adapters/<name>/`; LoRA is then
merged into the weights, while bottleneck adapters cannot be merged and travel with the
final model as `final/adapters/<name>/`, which `langadapt.models.load_model` reattaches.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from langadapt.errors import ConfigError, MissingDependencyError
from langadapt.models.encoder import PACKED_ENCODERS
from langadapt.models.loading import ADAPTER_NAME, adapter_activation, is_encoder
from langadapt.train import factorised
from langadapt.train.config import TrainConfig, objective_settings
from langadapt.train.objectives import CAUSAL_OBJECTIVES, MASKED_OBJECTIVES, is_masked
from langadapt.train.processes import is_main_process
from langadapt.train.trainable import TRAIN_METHODS, new_token_rows, train_all_embeddings

if TYPE_CHECKING:
    from transformers import PretrainedConfig, PreTrainedModel

    from langadapt.recipe import Recipe

log = logging.getLogger(__name__)
INSTALL = "pip install 'langadapt[adapters]'"
ADAPTER_METHODS = ("seq-bn", "seq-bn-inv", "double-seq-bn", "lora-adapters")
MERGEABLE_METHODS = ("lora-adapters",)


def _require_adapters() -> Any:
    try:
        import adapters
    except ImportError:
        raise MissingDependencyError("adapters", "this train method (AdapterHub adapters)", INSTALL) from None
    return adapters


def adapters_installed() -> bool:
    try:
        return importlib.util.find_spec("adapters") is not None
    except ValueError:  # already imported: its lazy module has no spec
        return True


def supports_adapters(model_type: str) -> bool:
    """Whether the `adapters` library knows this architecture (it has a module for it, or an interface)."""
    if not adapters_installed():
        return False
    from adapters.wrappers.interfaces import get_adapter_interface
    from adapters.wrappers.model import get_module_name

    if get_adapter_interface(model_type) is not None:
        return True
    name = get_module_name(model_type)
    try:
        return importlib.util.find_spec(f"adapters.models.{name}.modeling_{name}") is not None
    except (ImportError, ValueError):
        return False


def _adapter_config(method: str, cfg: TrainConfig) -> Any:
    from adapters import DoubleSeqBnConfig, LoRAConfig, SeqBnConfig, SeqBnInvConfig

    if method == "seq-bn":
        return SeqBnConfig(reduction_factor=cfg.adapter_reduction_factor)
    if method == "seq-bn-inv":
        return SeqBnInvConfig(
            reduction_factor=cfg.adapter_reduction_factor, inv_adapter_reduction_factor=cfg.adapter_inv_reduction_factor
        )
    if method == "double-seq-bn":
        return DoubleSeqBnConfig(reduction_factor=cfg.adapter_reduction_factor)
    # LoRA on every attention matrix and both feed-forward layers, like the decoder default
    return LoRAConfig(
        r=cfg.lora_rank,
        alpha=cfg.lora_alpha,
        dropout=cfg.lora_dropout,
        attn_matrices=["q", "k", "v"],
        selfattn_lora=True,
        intermediate_lora=True,
        output_lora=True,
    )


def add_adapter(model: "PreTrainedModel", method: str, cfg: TrainConfig, new_ids: list[int]) -> Any:
    """Add one AdapterHub adapter, freeze the rest, then make new rows (and the encoder head) trainable."""
    adapters = _require_adapters()
    if not supports_adapters(model.config.model_type):
        raise ConfigError([f"train.method {method}: the adapters library does not support {model.config.model_type}"])
    adapters.init(model)
    with adapter_activation():
        model.add_adapter(ADAPTER_NAME, config=_adapter_config(method, cfg))
        model.train_adapter(ADAPTER_NAME)  # freezes the base model, activates the adapter
    for p in model.parameters():  # train_adapter leaves task heads trainable: decide below
        if not _is_adapter_param(p, model):
            p.requires_grad_(False)
    return with_rows_and_head(model, cfg, new_ids)


def _is_adapter_param(p: Any, model: Any) -> bool:
    return any(p is q for n, q in model.named_parameters() if f".{ADAPTER_NAME}." in f".{n}.")


def with_rows_and_head(model: Any, cfg: TrainConfig, new_ids: list[int]) -> Any:
    """The embedding rows of train.embeddings (new ones through peft trainable tokens, or all) and, on an
    encoder with train_head, the MLM head, trainable."""
    keep = {n for n, p in model.named_parameters() if p.requires_grad}
    if cfg.embeddings == "all":
        train_all_embeddings(model)
    elif cfg.embeddings == "new" and new_ids and factorised.embedding_of(model) is not None:
        factorised.train_new_rows(model, new_ids)  # the new tokens' coordinates
    elif cfg.embeddings == "new" and new_ids:
        model = new_token_rows(model, new_ids)
        for n, p in model.named_parameters():  # peft froze everything else; restore what was trainable
            if _strip_peft(n) in keep:
                p.requires_grad_(True)
    if cfg.train_head and is_encoder(model.config):
        set_head_trainable(model)
    return model


def _strip_peft(name: str) -> str:
    return name.removeprefix("base_model.model.")


def set_head_trainable(model: Any) -> int:
    """Make the masked-LM head's own weights trainable (transform, bias), not the projection tied to the embeddings."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    tied = {id(p) for p in inner.get_input_embeddings().parameters()}
    body = getattr(inner, inner.base_model_prefix)
    n = 0
    for child in inner.children():
        if child is body:
            continue
        for p in child.parameters():
            if id(p) not in tied:
                p.requires_grad_(True)
                n += p.numel()
    if n == 0:
        raise ConfigError([f"train: {type(inner).__name__} has no head weights of its own to train"])
    return n


@TRAIN_METHODS.register(
    "head",
    help="only the language-modelling head trains (encoders: the MLM transform and bias; decoders: an untied "
    "lm_head), plus new-token rows (every row with embeddings: all); the warm-up of a fresh head, and the "
    "baselines adaptation is measured against",
)
def head(model: "PreTrainedModel", cfg: TrainConfig, new_ids: list[int]) -> Any:
    for p in model.parameters():
        p.requires_grad_(False)
    if not is_encoder(model.config):
        out, emb = model.get_output_embeddings(), model.get_input_embeddings()
        own = factorised.head_of(model)
        if out is None or (own.tied if own is not None else out.weight is emb.weight):
            raise ConfigError(
                ["train.method head: this decoder's head is tied to its input embeddings; use new-rows or lora"]
            )
        for p in own.factors.parameters() if own is not None else [out.weight]:
            p.requires_grad_(True)
        return with_rows_and_head(model, cfg, new_ids)
    model = with_rows_and_head(model, cfg, new_ids)
    if not cfg.train_head:
        set_head_trainable(model)  # the whole point of this method
    return model


def _adapter_method(method: str, help: str) -> None:
    def build(model: "PreTrainedModel", cfg: TrainConfig, new_ids: list[int]) -> Any:
        return add_adapter(model, method, cfg, new_ids)

    build.__name__ = method
    TRAIN_METHODS.register(method, help=help)(build)


_adapter_method("seq-bn", "sequential bottleneck adapter after each feed-forward block (Pfeiffer; AdapterHub seq_bn)")
_adapter_method(
    "seq-bn-inv", "MAD-X language adapter (AdapterHub seq_bn_inv): seq-bn plus an invertible adapter on the embeddings"
)
_adapter_method(
    "double-seq-bn", "bottleneck adapters after attention and feed-forward (Houlsby; AdapterHub double_seq_bn)"
)
_adapter_method(
    "lora-adapters", "LoRA on attention q/k/v and both feed-forward layers through the adapters library (mergeable)"
)


# -- saving ---------------------------------------------------------------------------------


def finalize(model: Any, out: Path) -> Any:
    """Save the adapter parts in their standard formats; return the model with what can be merged, merged.

    peft parts (LoRA on decoders, new-token rows) go to `adapter/` and are merged; an
    AdapterHub adapter goes to `adapters/<name>/` (loadable with `load_adapter`) and, when
    it is LoRA, is merged into the weights too.
    """
    if hasattr(model, "merge_and_unload"):
        if is_main_process():  # one writer; under FSDP the other processes' models hold no weights
            model.save_pretrained(out / "adapter")
        model = model.merge_and_unload()
    if has_adapter(model):
        if is_main_process():
            (out / "adapters" / ADAPTER_NAME).mkdir(parents=True, exist_ok=True)
            model.save_adapter(str(out / "adapters" / ADAPTER_NAME), ADAPTER_NAME)
        if getattr(model.adapters_config.get(ADAPTER_NAME), "architecture", None) == "lora":
            _merge_lora(model)
    return model


def _merge_lora(model: Any) -> None:
    """Merge the AdapterHub LoRA into the weights for good, then remove it.

    `merge_adapter` alone keeps a record that `delete_adapter` would use to subtract the
    update again; clearing that record makes the merged weights the model's own.
    """
    from adapters.methods.lora import LoRALayer

    model.merge_adapter(ADAPTER_NAME)
    for module in model.modules():
        if isinstance(module, LoRALayer) and module.merged == ADAPTER_NAME:
            module.merged = None
    model.delete_adapter(ADAPTER_NAME)


def merge(model: Any) -> Any:
    """Fold a finished phase into the weights (peft parts, AdapterHub LoRA) so the next phase starts from it."""
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    if has_adapter(model):
        if getattr(model.adapters_config.get(ADAPTER_NAME), "architecture", None) != "lora":
            raise ConfigError(["train.phases: bottleneck adapters cannot be merged; only the last phase may add them"])
        _merge_lora(model)
    factorised.fold_rows(model)
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def has_adapter(model: Any) -> bool:
    return hasattr(model, "adapters_config") and ADAPTER_NAME in model.adapters_config


def save_final(model: Any, tok: Any, folder: Path, dtype: str = "") -> None:
    """The model as a plain HF folder; an adapter that cannot be merged goes beside it in `adapters/<name>/`.

    `dtype` (model.dtype as resolved): the float32 weights that trained are cast to it first,
    so the folder holds one dtype, the one the base was held in (bf16 on a GPU by default, as
    most hub checkpoints; float32 on a CPU). Modules the model class keeps in float32
    (`_keep_in_fp32_modules`) stay float32, as transformers loads them.
    """
    if dtype:
        cast_weights(model, dtype)
    if has_adapter(model):
        (folder / "adapters" / ADAPTER_NAME).mkdir(parents=True, exist_ok=True)
        model.save_adapter(str(folder / "adapters" / ADAPTER_NAME), ADAPTER_NAME)
        model.delete_adapter(ADAPTER_NAME)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)


def cast_weights(model: Any, dtype: str) -> int:
    """Every float32 weight of `model` to `dtype` (bfloat16, float16; float32: nothing), but those of the
    modules its class keeps in float32; returns how many were cast."""
    import torch

    target = getattr(torch, dtype)
    if target == torch.float32:
        return 0
    keep = {
        *(getattr(model, "_keep_in_fp32_modules", None) or ()),
        *(getattr(model, "_keep_in_fp32_modules_strict", None) or ()),
    }
    n = 0
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dtype == torch.float32 and not any(k in name.split(".") for k in keep):
                p.data = p.data.to(target)
                n += 1
    return n


# -- validation -----------------------------------------------------------------------------


def model_problems(recipe: "Recipe") -> list[str]:
    """Checks that need the base model's config (read cheaply, no weights): objective, methods, positions."""
    from langadapt.models.loading import base_config

    config = base_config(recipe.model)
    if config is None:
        return []
    return config_problems(recipe, config)


def config_problems(recipe: "Recipe", config: "PretrainedConfig") -> list[str]:
    tr, p = recipe.train, []
    encoder = is_encoder(config)
    kind = f"{config.model_type} ({'encoder' if encoder else 'decoder'})"
    for where, objective in objective_settings(tr):
        if encoder and not is_masked(objective):
            p.append(
                f"{where}: {objective} does not train an encoder such as {kind}; use mlm ({', '.join(MASKED_OBJECTIVES)})"
            )
        if not encoder and is_masked(objective):
            p.append(
                f"{where}: {objective} needs an encoder; {kind} is a decoder: use clm ({', '.join(CAUSAL_OBJECTIVES)})"
            )
    if encoder and tr.packed_attention == "document" and config.model_type not in PACKED_ENCODERS:
        p.append(
            f"train.packed_attention: document needs a per-document attention mask and position ids, which "
            f"{config.model_type}'s masked-LM class does not take; set train.packed_attention: row (packed "
            f"documents then attend to each other), or use an encoder of type {', '.join(PACKED_ENCODERS)}"
        )
    tlm = [where for where, objective in objective_settings(tr) if objective == "tlm"]
    if encoder and tlm and config.model_type not in PACKED_ENCODERS:
        p.append(
            f"{tlm[0]}: tlm keeps each pair apart with its own attention mask and restarts positions at the second "
            f"side, which {config.model_type}'s masked-LM class does not take; use an encoder of type "
            f"{', '.join(PACKED_ENCODERS)}"
        )
    methods = [ph.method for ph in tr.phases] if tr.phases else [tr.method]
    via_adapters = set(methods) & set(ADAPTER_METHODS) | ({"lora"} & set(methods) if encoder else set())
    for m in sorted(via_adapters):
        if not adapters_installed():
            p.append(f"train.method {m}: needs the adapters library: {INSTALL}")
        elif not supports_adapters(config.model_type):
            p.append(f"train.method {m}: the adapters library does not support {config.model_type}; use lora or full")
    from langadapt.models.loading import max_sequence_length

    limit = max_sequence_length(config)
    if limit is not None and tr.seq_len > limit:
        p.append(f"train.seq_len: {tr.seq_len} is beyond what {config.model_type} can attend to ({limit} positions)")
    return p
