"""GPU choices decided on a CPU: the attention kernel, packed rows into FlashAttention's varlen path,
fused AdamW, the process's current GPU, and an out-of-memory step as one clear error."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from transformers import BertForMaskedLM, LlamaForCausalLM

import langadapt.catalog  # noqa: F401  (every registry whole)
from langadapt.errors import ConfigError, LangAdaptError, OutOfDeviceMemoryError
from langadapt.models import attention
from langadapt.models.attention import choose_attention, flatten_packed_rows
from langadapt.train import loop, objectives
from langadapt.train.data import document_positions

CUDA, CPU = torch.device("cuda"), torch.device("cpu")


class NoSdpa:  # a model class with neither FlashAttention-2 nor SDPA
    pass


@pytest.mark.parametrize("installed", [True, False])
def test_auto_takes_flash_attention_only_where_it_can_run(monkeypatch, installed):
    monkeypatch.setattr(attention, "flash_attn_installed", lambda: installed)
    flash = "flash_attention_2" if installed else "sdpa"
    assert choose_attention("auto", LlamaForCausalLM, CUDA, "bfloat16", encoder=False) == flash
    assert choose_attention("auto", LlamaForCausalLM, CUDA, "float16", encoder=False) == flash
    assert choose_attention("auto", LlamaForCausalLM, CPU, "bfloat16", encoder=False) == "sdpa"  # CUDA only
    assert choose_attention("auto", LlamaForCausalLM, CUDA, "float32", encoder=False) == "sdpa"  # half precision only
    assert choose_attention("auto", BertForMaskedLM, CUDA, "bfloat16", encoder=True) == "sdpa"  # no FA2 in BERT
    assert choose_attention("auto", LlamaForCausalLM, CUDA, "bfloat16", encoder=True) == "sdpa"  # (L x L) masks
    assert choose_attention("auto", NoSdpa, CUDA, "bfloat16", encoder=False) == "eager"
    assert choose_attention("eager", LlamaForCausalLM, CUDA, "bfloat16", encoder=False) == "eager"


def test_flash_attention_without_the_package_or_a_gpu_is_one_clear_error(tiny_recipe, monkeypatch):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    monkeypatch.setattr(attention, "flash_attn_installed", lambda: False)
    with pytest.raises(ConfigError) as e:
        tiny_recipe(model={"attn_implementation": "flash_attention_2"})
    assert e.value.problems == [
        "model.attn_implementation: flash_attention_2: the flash_attn package is not installed "
        "(pip install flash-attn --no-build-isolation); it runs on CUDA GPUs only, and train.device is cpu, "
        "eval.device is cpu; use auto or sdpa"
    ]
    monkeypatch.setattr(attention, "flash_attn_installed", lambda: True)
    with pytest.raises(ConfigError, match="flash_attention_2: it runs on CUDA GPUs only, and train.device is cpu"):
        tiny_recipe(model={"attn_implementation": "flash_attention_2"})
    with pytest.raises(ConfigError, match="model.attn_implementation: 'flash' is not one of auto, flash_attention_2"):
        tiny_recipe(model={"attn_implementation": "flash"})
    assert tiny_recipe(model={"attn_implementation": "eager"}).model.attn_implementation == "eager"


def test_an_encoder_class_without_flash_attention_is_refused_by_name():
    assert attention.attention_problems("flash_attention_2", {}, BertForMaskedLM, encoder=True) == [
        "model.attn_implementation: flash_attention_2: transformers' BertForMaskedLM has no flash_attention_2 "
        "path; use auto"
    ]


def _varlen_like_flash(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """What FlashAttention-2 computes through transformers, on a CPU: causal attention over each row, or, when
    transformers sees a packed batch of one row in the position ids, over each sequence they delimit (varlen)."""
    from transformers.integrations.sdpa_attention import repeat_kv
    from transformers.modeling_flash_attention_utils import _is_packed_sequence

    CALLS.append((tuple(query.shape), attention_mask))
    key, value = repeat_kv(key, module.num_key_value_groups), repeat_kv(value, module.num_key_value_groups)
    positions = kwargs["position_ids"]
    if _is_packed_sequence(positions, query.shape[0]):
        starts = (positions[0] == 0).nonzero().view(-1).tolist() + [query.shape[2]]
        spans = [(a, b) for a, b in zip(starts, starts[1:]) if b > a]
    else:
        spans = [(0, query.shape[2])]
    out = torch.cat(
        [
            torch.nn.functional.scaled_dot_product_attention(
                query[:, :, a:b], key[:, :, a:b], value[:, :, a:b], is_causal=True, scale=scaling
            )
            for a, b in spans
        ],
        dim=2,
    )
    return out.transpose(1, 2).contiguous(), None


CALLS: list = []


def test_packed_rows_reach_flash_attention_as_one_varlen_row(tiny_model):
    """transformers 4.57 takes FA2's varlen path only for a batch of one row: rows are joined, then split."""
    from transformers import AttentionInterface

    AttentionInterface.register("varlen_like_flash", _varlen_like_flash)
    reference = LlamaForCausalLM.from_pretrained(tiny_model, attn_implementation="sdpa").eval()
    model = LlamaForCausalLM.from_pretrained(tiny_model, attn_implementation="varlen_like_flash").eval()
    ids = torch.randint(3, 300, (3, 24), generator=torch.Generator().manual_seed(0))
    ids[:, 0] = ids[0, 9] = ids[1, 15] = ids[2, 4] = 0  # every row starts a document; three start inside a row
    positions = document_positions(ids, 0)
    objectives.prepare_loss("clm", model)  # the fused loss's probe, out of the way of the calls counted
    with torch.no_grad():
        want = objectives.clm_loss(reference, ids, position_ids=positions)  # documents apart (block mask)
        CALLS.clear()
        crossing = objectives.clm_loss(model, ids, position_ids=positions)
        assert CALLS[0][0][0] == 3  # three rows: FA2 would attend across each row's documents
        assert not torch.allclose(crossing, want, atol=1e-3)
        assert flatten_packed_rows(model) and not flatten_packed_rows(model)  # installed once
        CALLS.clear()
        got = objectives.clm_loss(model, ids, position_ids=positions)
        plain = objectives.plain_clm_loss(model, ids, position_ids=positions)
        padded = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits  # a mask: left as it is
    (shape, mask) = CALLS[0]
    assert shape[0] == 1 and shape[2] == 3 * 24 and mask is None  # one row of every token, no mask
    assert got.shape == (3, 23)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(plain, want, atol=1e-5, rtol=1e-5)
    assert CALLS[-1][0][0] == 3 and padded.shape == (3, 24, reference.config.vocab_size)


def test_adamw_is_fused_when_every_weight_is_on_a_cuda_device_else_foreach(tiny_model):
    def cuda_weight(dtype=torch.float32):
        return SimpleNamespace(device=CUDA, is_floating_point=lambda: dtype.is_floating_point)

    assert loop.adamw_kernel([cuda_weight(), cuda_weight(torch.bfloat16)]) == {"fused": True}
    assert loop.adamw_kernel([cuda_weight(), torch.zeros(2)]) == {"foreach": True}  # one on the CPU
    assert loop.adamw_kernel([torch.zeros(2)]) == {"foreach": True}
    assert loop.adamw_kernel([]) == {"foreach": True}
    model = LlamaForCausalLM.from_pretrained(tiny_model)
    opt = loop._optimizer(model, loop.TrainConfig())
    assert opt.defaults["foreach"] is True and not opt.defaults["fused"]


def test_each_launched_process_makes_its_local_rank_gpu_current(monkeypatch):
    from langadapt.devices import resolve_device

    current = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    monkeypatch.setattr(torch.cuda, "set_device", current.append)
    monkeypatch.setenv("LOCAL_RANK", "2")
    assert resolve_device("auto") == torch.device("cuda:2") and current == ["cuda:2"]
    assert resolve_device("cuda") == torch.device("cuda:2") and current == ["cuda:2", "cuda:2"]
    monkeypatch.setenv("LOCAL_RANK", "5")  # more processes on the node than GPUs: shared round-robin
    assert resolve_device("cuda") == torch.device("cuda:1") and current[-1] == "cuda:1"
    monkeypatch.delenv("LOCAL_RANK")
    assert resolve_device("cuda") == torch.device("cuda") and len(current) == 3  # one process: left alone


@pytest.mark.parametrize("method", ["full", "lora"])
def test_out_of_memory_in_a_step_is_one_error_that_says_what_to_lower(tiny_recipe, tiny_model, tmp_path, method):
    from langadapt.models.loading import doc_separator_id, load_model, load_tokenizer
    from langadapt.train.data import TokenStream
    from langadapt.train.trainable import apply_method

    recipe = tiny_recipe(train={"method": method, "max_steps": 1, "micro_batch_size": 2})
    tok = load_tokenizer(str(tiny_model))
    model = apply_method(method, load_model(str(tiny_model)), recipe.train, [])
    body = model.get_base_model().get_decoder() if method == "lora" else model.get_decoder()
    real_forward = body.forward

    def out_of_memory(*args, **kwargs):  # the training pass runs out; the loss's probe (eval mode) does not
        if body.training:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_forward(*args, **kwargs)

    body.forward = out_of_memory
    streams = {"nya": TokenStream(["ndi ku mwa zi tha"] * 50, tok, doc_separator_id(tok), 32, 0)}
    with pytest.raises(OutOfDeviceMemoryError) as e:
        loop.train_loop(model, streams, "nya", None, recipe, tmp_path, device=CPU)
    assert isinstance(e.value, LangAdaptError)  # the CLI prints it without a traceback
    precision = loop.resolve_precision("auto", CPU)
    assert e.value.message == (
        f"out of memory on cpu in a training step: micro-batch of 2 sequences x 32 tokens, precision {precision}, "
        f"train.method {method}"
    )
    hint = (
        "lower train.micro_batch_size (now 2; the step accumulates gradients over micro-batches, so the batch "
        "stays the same); or train.seq_len (now 32); or set train.gradient_checkpointing: true "
        "(activations recomputed: less memory, more compute)"
    )
    assert e.value.hint == hint + (
        "; or train a LoRA method (train.method: lora) instead of full" if method == "full" else ""
    )
