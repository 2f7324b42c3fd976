"""Export format `gguf`: the adapted model as one GGUF file for llama.cpp, Ollama and LM Studio.

Written with the `gguf` library from the merged model (`train/final`): the architecture's
hyperparameters, every tensor under llama.cpp's name (the library's name map), 1-D tensors
in f32 and matrices in the chosen `--quant` (the library's numpy quantisers), and the
adapted tokenizer (`gguf_vocab.py`: byte-level or SentencePiece-style BPE). Llama-family
decoders only: Llama (SmolLM), Mistral (written as llama, as llama.cpp reads it), Qwen2 and
Gemma 2 (its norms stored as llama.cpp applies them, 1 + w);
anything else is refused before work, every problem at once.

Before the folder is published, the file's tokenizer is read back by every reader there is
and must give the adapted tokenizer's token ids on all held-out target and source text;
a difference stops the export with nothing published. An Ollama `Modelfile` goes beside it.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from langadapt.config import ModelConfig
from langadapt.documents import languages, read_texts
from langadapt.errors import ConfigError, InputError
from langadapt.gguf_vocab import (
    BaseTokenizer,
    Vocab,
    base_tokenizer,
    build_vocab,
    parity,
    tokenizer_problems,
    write_vocab,
)
from langadapt.models.loading import load_tokenizer
from langadapt.rundir import RunDir, read_json, write_json

if TYPE_CHECKING:
    import numpy as np
    from transformers import PreTrainedTokenizerBase

log = logging.getLogger(__name__)
# --quant -> the ggml type of matrices; 1-D tensors (norms, biases) stay f32 as llama.cpp expects
QUANTS = ("f16", "f32", "bf16", "q8_0", "q5_1", "q5_0", "q4_1", "q4_0")
FILE_TYPES = {"f32": 0, "f16": 1, "q4_0": 2, "q4_1": 3, "q8_0": 7, "q5_0": 8, "q5_1": 9, "bf16": 32}


@dataclass(frozen=True)
class Arch:
    gguf: str  # general.architecture: which llama.cpp graph runs it
    unrotate_qk: bool  # llama.cpp's llama graph pairs rotary dimensions (i, i+1); HF's pairs (i, i + d/2)
    norm_offset: float = 0.0  # Gemma's RMSNorm scales by (1 + w); llama.cpp stores the factor itself


ARCHS = {
    "llama": Arch("llama", True),
    "mistral": Arch("llama", True),
    "qwen2": Arch("qwen2", False),
    "gemma2": Arch("gemma2", False, 1.0),
}


@dataclass(frozen=True)
class Plan:
    """What the export will write, decided (and every problem found) before any work."""

    final: Path
    config: dict[str, Any]
    arch: Arch
    quant: str
    tokenizer: "PreTrainedTokenizerBase"
    base: BaseTokenizer
    name: str


def plan(final: Path, base: ModelConfig, quant: str, name: str) -> Plan:
    """Check that the model, its tokenizer and `quant` can be written as GGUF; all problems at once."""
    config = read_json(final / "config.json")
    problems = architecture_problems(config)
    if quant not in QUANTS:
        problems.append(f"--quant {quant}: unknown; valid: {', '.join(QUANTS)}")
    tok = load_tokenizer(str(final))
    problems += tokenizer_problems(tok)
    if problems:
        raise ConfigError(problems, source=f"GGUF export of {final}")
    return Plan(final, config, ARCHS[config["model_type"]], quant, tok, base_tokenizer(base, tok), name)


def architecture_problems(config: dict[str, Any]) -> list[str]:
    """Why llama.cpp's graphs cannot run this model as written here (empty: they can)."""
    kind = config.get("model_type", "?")
    if kind not in ARCHS:
        what = ", ".join(config.get("architectures") or [kind])
        return [
            f"model type '{kind}' ({what}) cannot be written as GGUF here; supported: "
            f"{', '.join(sorted(ARCHS))} (decoders of the Llama family)"
        ]
    out = []
    scaling = config.get("rope_scaling") or {}
    if scaling and scaling.get("rope_type", scaling.get("type")) != "linear":
        out.append(f"rope_scaling {scaling} has no GGUF form here (only none or linear)")
    if ARCHS[kind].gguf == "llama" and (config.get("attention_bias") or config.get("mlp_bias")):
        out.append("attention or MLP biases on a Llama model are not written by the GGUF export")
    if kind == "gemma2" and config.get("query_pre_attn_scalar", config.get("head_dim")) != config.get("head_dim"):
        out.append(
            "Gemma 2 with query_pre_attn_scalar other than head_dim (the 27B's) is not written by the GGUF export"
        )
    return out


def write(p: Plan, rd: RunDir, out: Path) -> dict[str, Any]:
    """The GGUF file, its parity check and the Modelfile in `out`; returns the export's record."""
    started = time.perf_counter()
    n_vocab = int(p.config["vocab_size"])
    vocab = build_vocab(p.tokenizer, n_vocab, p.base)
    path = out / f"{p.name}.{p.quant}.gguf"
    tensors = write_gguf(p, vocab, path)
    target, replay = languages(rd)
    sets = {f"{lang}-heldout": read_texts(rd, lang, "heldout") for lang in (target, replay) if lang}
    checked = parity(path, p.tokenizer, sets)
    (out / "Modelfile").write_text(modelfile(path.name, p.tokenizer, vocab), encoding="utf-8")
    record = {
        "file": path.name,
        "quant": p.quant,
        "architecture": p.arch.gguf,
        "vocab_size": n_vocab,
        "tokenizer": {"model": vocab.model, "pre": vocab.pre, "pre_from": vocab.pre_source, "add_bos": vocab.add_bos},
        "tensors": tensors,
        "parity": checked,
        "bytes": path.stat().st_size,
        "seconds": round(time.perf_counter() - started, 1),
    }
    write_json(out / "gguf_export.json", record)
    return record


# -- weights --------------------------------------------------------------------------------


def write_gguf(p: Plan, vocab: Vocab, path: Path) -> dict[str, Any]:
    """Write the file; returns how many tensors went in each type (and which fell back to f16)."""
    import gguf

    cfg = p.config
    n_layers = int(cfg["num_hidden_layers"])
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH[p.arch.gguf.upper()], n_layers)
    writer = gguf.GGUFWriter(str(path), p.arch.gguf)
    _hyperparameters(writer, cfg, p)
    write_vocab(writer, vocab)
    counts: dict[str, int] = {}
    fallback: list[str] = []
    for hf_name, w in _weights(p.final, cfg):
        name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if name is None:
            raise InputError(f"{p.final}: tensor {hf_name} has no GGUF name for {p.arch.gguf}")
        if p.arch.unrotate_qk and name.endswith(("attn_q.weight", "attn_q.bias")):
            w = unrotate(w, int(cfg["num_attention_heads"]))
        elif p.arch.unrotate_qk and name.endswith(("attn_k.weight", "attn_k.bias")):
            w = unrotate(w, int(cfg.get("num_key_value_heads") or cfg["num_attention_heads"]))
        elif p.arch.norm_offset and name.endswith("norm.weight"):
            w = w + p.arch.norm_offset
        data, qtype, used = encode(w, p.quant)
        if used != p.quant and w.ndim > 1:
            fallback.append(name)
        counts[used] = counts.get(used, 0) + 1
        writer.add_tensor(name, data, raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return {"by_type": counts, "f16_fallback": fallback}


def _hyperparameters(writer: Any, cfg: dict[str, Any], p: Plan) -> None:
    import gguf

    heads = int(cfg["num_attention_heads"])
    head_dim = int(cfg.get("head_dim") or cfg["hidden_size"] // heads)
    writer.add_name(p.name)
    writer.add_type("model")
    writer.add_context_length(int(cfg.get("max_position_embeddings", 2048)))
    writer.add_embedding_length(int(cfg["hidden_size"]))
    writer.add_block_count(int(cfg["num_hidden_layers"]))
    writer.add_feed_forward_length(int(cfg["intermediate_size"]))
    writer.add_head_count(heads)
    writer.add_head_count_kv(int(cfg.get("num_key_value_heads") or heads))
    writer.add_layer_norm_rms_eps(float(cfg.get("rms_norm_eps", 1e-6)))
    writer.add_rope_freq_base(float(cfg.get("rope_theta", 10000.0)))
    writer.add_rope_dimension_count(head_dim)
    if head_dim * heads != int(cfg["hidden_size"]) or p.arch.gguf == "gemma2":
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
    if p.arch.gguf == "gemma2":  # soft-capping and the sliding window of every other layer
        writer.add_attn_logit_softcapping(float(cfg.get("attn_logit_softcapping") or 0.0))
        writer.add_final_logit_softcapping(float(cfg.get("final_logit_softcapping") or 0.0))
        writer.add_sliding_window(int(cfg.get("sliding_window") or 4096))
    scaling = cfg.get("rope_scaling") or {}
    if scaling:
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(float(scaling["factor"]))
    writer.add_vocab_size(int(cfg["vocab_size"]))
    writer.add_file_type(FILE_TYPES[p.quant])
    if p.quant not in ("f32", "f16", "bf16"):
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)


def _weights(final: Path, cfg: dict[str, Any]) -> Any:
    """(name, float32 numpy array) of every stored tensor, one at a time; a tied head is not stored twice."""
    from safetensors import safe_open

    index = final / "model.safetensors.index.json"
    files = sorted(set(read_json(index)["weight_map"].values())) if index.is_file() else ["model.safetensors"]
    if not (final / files[0]).is_file():
        raise InputError(f"{final} has no safetensors weights", hint="re-run the train stage")
    tied = cfg.get("tie_word_embeddings", True)
    for file in files:
        with safe_open(str(final / file), framework="pt") as f:
            for key in f.keys():
                if key.endswith("rotary_emb.inv_freq") or (tied and key == "lm_head.weight"):
                    continue
                yield key, f.get_tensor(key).float().numpy()


def unrotate(w: "np.ndarray", n_head: int) -> "np.ndarray":
    """HF's rotary layout (each head's dimensions split in halves) back to llama.cpp's adjacent pairs."""
    rows = w.shape[0]
    return w.reshape(n_head, 2, rows // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def encode(w: "np.ndarray", quant: str) -> tuple["np.ndarray", Any, str]:
    """(data, ggml type for the writer or None to infer it, the type used) of one tensor."""
    import gguf
    import numpy as np

    if w.ndim == 1 or quant == "f32":
        return w.astype(np.float32), None, "f32"
    if quant == "f16":
        return w.astype(np.float16), None, "f16"
    qtype = gguf.GGMLQuantizationType[quant.upper()]
    block, _ = gguf.GGML_QUANT_SIZES[qtype]
    if w.shape[-1] % block:  # rows that are no whole number of blocks cannot be quantised
        return w.astype(np.float16), None, "f16"
    return gguf.quants.quantize(w, qtype), qtype, quant


# -- Ollama -----------------------------------------------------------------------------------

_PROBE = [
    {"role": "system", "content": "S"},
    {"role": "user", "content": "U"},
    {"role": "assistant", "content": "A"},
    {"role": "user", "content": "V"},
]
CHATML_TEMPLATE = (
    "{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}<|im_start|>assistant\n"
)


def _chatml(messages: list[dict[str, str]]) -> str:
    return "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages) + "<|im_start|>assistant\n"


def chat_format(tok: "PreTrainedTokenizerBase") -> tuple[str | None, str | None]:
    """(the chat format, its default system prompt): 'chatml' when the chat template renders a probe
    conversation exactly as ChatML does, None when there is no template or it is another format."""
    if not getattr(tok, "chat_template", None):
        return None, None
    render = lambda msgs: tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)  # noqa: E731
    try:
        if render(_PROBE) != _chatml(_PROBE):
            return None, None
        alone = render(_PROBE[1:2])
    except Exception:  # a template that needs other roles or arguments: not ChatML
        return None, None
    if alone == _chatml(_PROBE[1:2]):
        return "chatml", None
    head, tail = "<|im_start|>system\n", "<|im_end|>\n" + _chatml(_PROBE[1:2])
    if alone.startswith(head) and alone.endswith(tail):
        return "chatml", alone[len(head) : -len(tail)]
    return None, None


def stop_tokens(tok: "PreTrainedTokenizerBase", vocab: Vocab, fmt: str | None) -> list[str]:
    """The strings generation stops at: the end-of-sequence token, and ChatML's end of turn."""
    out = [vocab.tokens[vocab.special["eos"]]] if "eos" in vocab.special else []
    if fmt == "chatml":
        out.append("<|im_end|>")
    return list(dict.fromkeys(out))


def modelfile(gguf_name: str, tok: "PreTrainedTokenizerBase", vocab: Vocab) -> str:
    """An Ollama Modelfile: the file, its chat template in Ollama's template language, the stop tokens."""
    fmt, system = chat_format(tok)
    lines = [f"FROM ./{gguf_name}", ""]
    if fmt == "chatml":
        lines += [f'TEMPLATE """{CHATML_TEMPLATE}"""', ""]
        if system:
            lines += [f'SYSTEM """{system}"""', ""]
    elif vocab.chat_template:
        lines += [
            "# the chat template is not ChatML; Ollama picks a template from the one inside the GGUF file",
            "",
        ]
    else:
        lines += ["# no chat template: a text-completion model (use `ollama run` with raw prompts)", ""]
    lines += [f'PARAMETER stop "{s}"' for s in stop_tokens(tok, vocab, fmt)]
    return "\n".join(lines) + "\n"


def summary(record: dict[str, Any]) -> str:
    """What the export wrote and how its tokenizer was checked, for the terminal."""
    sets = record["parity"]["sets"]
    lines = [
        f"GGUF: {record['file']} ({record['architecture']}, {record['quant']}, {record['bytes'] / 1e6:.1f} MB, "
        f"{record['vocab_size']} tokens); "
        + (
            f"pre-tokenizer '{record['tokenizer']['pre']}' from {record['tokenizer']['pre_from']}"
            if record["tokenizer"]["model"] == "gpt2"
            else "SentencePiece-style tokenizer (llama.cpp's 'llama' model, merges as token scores)"
        ),
        "token-id parity with the adapted tokenizer: identical on "
        + ", ".join(f"{k} ({v['texts']} texts, {v['tokens']:,} tokens)" for k, v in sets.items())
        + f"; read back by {' and '.join(record['parity']['readers'])}",
    ]
    for reader, why in record["parity"]["unreadable"].items():
        lines.append(f"not checked by {reader}, which cannot read the file: {why}")
    if record["tensors"]["f16_fallback"]:
        lines.append(
            f"kept in f16 (rows not a whole number of quant blocks): {', '.join(record['tensors']['f16_fallback'])}"
        )
    return "\n".join(lines)


def card_section(record: dict[str, Any], name: str) -> str:
    """The model card's Use section for the GGUF file."""
    sets = record["parity"]["sets"]
    checked = "; ".join(f"{k}: {v['texts']} texts, {v['tokens']:,} tokens" for k, v in sets.items())
    return "\n".join(
        [
            f"`{record['file']}` ({record['quant']}, {record['bytes'] / 1e6:.1f} MB) runs in llama.cpp, Ollama and "
            f"LM Studio. Its tokenizer gives the adapted tokenizer's token ids on all held-out text ({checked}), "
            f"checked with {' and '.join(record['parity']['readers'])} before it was written here.",
            "",
            "```bash",
            f"llama-cli -m {record['file']}",
            f"ollama create {name} -f Modelfile && ollama run {name}",
            "```",
        ]
    )
