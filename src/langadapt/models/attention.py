"""Which attention kernel a model runs (`model.attn_implementation`), and how packed documents reach it.

`choose_attention` turns `auto` into flash_attention_2, sdpa or eager for one model class on
one device; `attention_problems` refuses, before any work, what cannot run.

Packed documents (`train.packed_attention: document`) reach a decoder as rows of token ids
with position ids that restart at 0 at every document start, and no attention mask. What
transformers (4.57) does with them depends on the kernel:

- sdpa and eager: `masking_utils.find_packed_sequence_indices` reads the documents off the
  position ids and `create_causal_mask` builds a block-diagonal causal mask, dense (rows x 1
  x L x L): exact, but a mask keeps SDPA off its flash kernel (memory-efficient or math).
- flash_attention_2: `modeling_flash_attention_utils._is_packed_sequence` sends the tokens to
  `flash_attn_varlen_func` with the sequence boundaries taken from the position ids (no mask
  at all), but only when the batch is one row; a batch of several rows runs plain causal
  attention over each whole row, across its documents. `flatten_packed_rows` therefore joins
  a micro-batch's rows into one row before the decoder body runs and splits its output
  again: every row starts at position 0, so rows and documents are all separate varlen
  sequences, and the loss sees the shapes it always sees.

Encoders keep their documents apart with a (rows x L x L) attention mask of their own
(`encoder.document_inputs`), which FlashAttention-2 cannot take: auto gives them sdpa.
"""

from __future__ import annotations

import importlib.util
import inspect
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

ATTENTIONS = ("auto", "flash_attention_2", "sdpa", "eager")
FLASH_INSTALL = "pip install flash-attn --no-build-isolation"
HALF_DTYPES = ("bfloat16", "float16")


def flash_attn_installed() -> bool:
    """Whether the flash_attn package is importable (found without importing it: that needs a GPU)."""
    try:
        return importlib.util.find_spec("flash_attn") is not None
    except ValueError:  # already imported without a spec
        return True


def supports_flash(cls: Any) -> bool:
    """Whether a transformers model class has a FlashAttention-2 path (the flag was `_supports_flash_attn_2` before 4.53)."""
    return bool(getattr(cls, "_supports_flash_attn", False) or getattr(cls, "_supports_flash_attn_2", False))


def supports_sdpa(cls: Any) -> bool:
    return bool(getattr(cls, "_supports_sdpa", False))


def choose_attention(requested: str, cls: Any, device: "torch.device", dtype: str, encoder: bool) -> str:
    """The kernel a model of class `cls`, held in `dtype` on `device`, runs for `model.attn_implementation`.

    auto: flash_attention_2 where all of these hold: the flash_attn package is installed, the
    device is a CUDA GPU, the weights are bf16 or fp16 (FlashAttention computes in half
    precision only: a float32 model asked for float32 attention), the model is a decoder (an
    encoder's per-document mask is (L x L)) and its class has the FA2 path; else sdpa where
    the class has it; else eager. An explicit choice is returned as it is (checked at validation).
    """
    if requested != "auto":
        return requested
    if (
        device.type == "cuda"
        and dtype in HALF_DTYPES
        and not encoder
        and supports_flash(cls)
        and flash_attn_installed()
    ):
        return "flash_attention_2"
    return "sdpa" if supports_sdpa(cls) else "eager"


def model_class(config: Any, encoder: bool) -> Any:
    """The transformers class `load_model` builds for `config` (masked LM for encoders, causal LM otherwise), or None."""
    from transformers import AutoModelForCausalLM, AutoModelForMaskedLM

    mapping = (AutoModelForMaskedLM if encoder else AutoModelForCausalLM)._model_mapping
    try:
        return mapping[type(config)]
    except KeyError:
        return None


def attention_problems(
    requested: str,
    devices: dict[str, "torch.device"],
    cls: Any = None,
    encoder: bool = False,
    packed_documents: bool = False,
) -> list[str]:
    """What is wrong with `model.attn_implementation` here: an unknown name, or a kernel that cannot run.

    `devices`: the recipe key of each device the model will run on (train.device, eval.device)
    and the device it resolved to. `cls`: the model's transformers class when validation can
    tell it from the base model's config (`model_class`), `encoder` whether it is one.
    """
    if requested not in ATTENTIONS:
        return [f"model.attn_implementation: '{requested}' is not one of {', '.join(ATTENTIONS)}"]
    has = {"flash_attention_2": supports_flash, "sdpa": supports_sdpa}.get(requested)
    if cls is not None and has is not None and not has(cls):
        return [
            f"model.attn_implementation: {requested}: transformers' {cls.__name__} has no {requested} path; use auto"
        ]
    if requested == "flash_attention_2" and encoder and packed_documents:
        return [
            "model.attn_implementation: flash_attention_2 cannot take the per-document (L x L) attention mask "
            "of an encoder's packed rows; set train.packed_attention: row, or model.attn_implementation: auto"
        ]
    if requested != "flash_attention_2":
        return []
    missing = [] if flash_attn_installed() else [f"the flash_attn package is not installed ({FLASH_INSTALL})"]
    not_cuda = [f"{key} is {device.type}" for key, device in devices.items() if device.type != "cuda"]
    if not_cuda:
        missing.append(f"it runs on CUDA GPUs only, and {', '.join(not_cuda)}")
    if not missing:
        return []
    return [f"model.attn_implementation: flash_attention_2: {'; '.join(missing)}; use auto or sdpa"]


# -- packed rows into FlashAttention-2's variable-length path ------------------------------------

_ROWS = "_langadapt_packed_rows"  # on the decoder body: (rows, length) of the call in flight, set by the pre-hook


def flatten_packed_rows(model: Any) -> bool:
    """Join the rows of a packed batch into one before the decoder body runs (FlashAttention-2), and split them after.

    Applies to calls with position ids and without an attention mask or a cache: what
    training and held-out scoring pass. Returns whether the hooks were installed (a model
    without a separate decoder body gets none).
    """
    body = model.get_decoder() if hasattr(model, "get_decoder") else None
    if body is None or body is model or getattr(body, _ROWS + "_hooked", False):
        return False
    signature = inspect.signature(body.forward)
    body.register_forward_pre_hook(lambda m, a, k: _join_rows(m, a, k, signature), with_kwargs=True)
    body.register_forward_hook(_split_rows, with_kwargs=True)
    setattr(body, _ROWS + "_hooked", True)
    return True


def _join_rows(module: Any, args: tuple[Any, ...], kwargs: dict[str, Any], signature: inspect.Signature) -> Any:
    bound = signature.bind_partial(*args, **kwargs).arguments
    for name, param in signature.parameters.items():
        if param.kind is inspect.Parameter.VAR_KEYWORD:
            bound.update(bound.pop(name, {}))
    ids, embeds, positions = bound.get("input_ids"), bound.get("inputs_embeds"), bound.get("position_ids")
    x = ids if ids is not None else embeds
    module.__dict__[_ROWS] = None
    if (
        x is None
        or positions is None
        or x.shape[0] == 1
        or bound.get("attention_mask") is not None
        or bound.get("past_key_values") is not None
    ):
        return None
    rows, length = x.shape[0], x.shape[1]
    module.__dict__[_ROWS] = (rows, length)
    if ids is not None:
        bound["input_ids"] = ids.reshape(1, rows * length)
    else:
        bound["inputs_embeds"] = embeds.reshape(1, rows * length, embeds.shape[-1])
    bound["position_ids"] = positions.expand(rows, length).reshape(1, rows * length)
    return (), bound


def _split_rows(module: Any, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> Any:
    shape = module.__dict__.pop(_ROWS, None)
    if shape is None:
        return None
    rows, length = shape

    def split(t: Any) -> Any:
        return t.view(rows, length, *t.shape[2:]) if t is not None and hasattr(t, "view") else t

    if isinstance(output, tuple):
        return (split(output[0]),) + output[1:]
    output["last_hidden_state"] = split(output["last_hidden_state"])
    if output.get("hidden_states") is not None:
        output["hidden_states"] = tuple(split(h) for h in output["hidden_states"])
    return output
