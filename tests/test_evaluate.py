"""Bits per byte: every token scored once, sliding windows agree with full context."""

from __future__ import annotations

import math

import pytest
import torch

from langadapt.evaluate import flow as evaluate
from langadapt.recipe import EvalConfig
from langadapt.scoring import bpb


@pytest.mark.parametrize(
    "n,context,stride", [(2, 8, 4), (10, 8, 4), (100, 16, 8), (17, 16, 16), (40, 16, 16), (50, 64, 32), (90, 16, 3)]
)
def test_windows_score_each_token_once_with_the_promised_context(n, context, stride):
    scored = []
    for begin, end, k in bpb.windows(n, context, stride):
        assert end - begin <= context
        for p in range(end - k, end):  # token p is predicted from ids[begin:p]
            assert p - begin >= min(p, max(context - stride, 1)), (begin, end, k, p)
        scored.extend(range(end - k, end))
    assert scored == list(range(1, n))


def test_bits_per_byte_matches_a_direct_computation(tiny_model):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    texts = ["the man went to the city", "a small river and a great king said good day"]
    got = bpb.bits_per_byte(model, tok, texts, EvalConfig(context_length=256, stride=128))
    nats = 0.0
    with torch.no_grad():
        for t in texts:
            ids = torch.tensor([[tok.eos_token_id] + tok(t, add_special_tokens=False)["input_ids"]])  # the separator
            out = model(input_ids=ids, labels=ids)
            nats += out.loss.item() * (ids.shape[1] - 1)
    n_bytes = sum(len(t.encode()) for t in texts)
    assert got["bits_per_byte"] == pytest.approx(nats / math.log(2) / n_bytes, rel=1e-5)
    assert got["bytes"] == n_bytes


def _short_sighted_model(tok):  # type: ignore[no-untyped-def]
    """A 2-layer Mistral whose attention sees 4 tokens, with weights large enough that it reads them.

    A prediction then depends on exactly the 7 tokens before it: with at least 7 tokens of
    context every window scores each token as full context does, to float precision.
    """
    from transformers import MistralConfig, MistralForCausalLM

    torch.manual_seed(0)
    config = MistralConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        sliding_window=4,
        initializer_range=0.3,  # the default 0.02 leaves attention nearly uniform: context would barely matter
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
    )
    return MistralForCausalLM(config).eval()


def test_sliding_window_scores_every_token_as_full_context_does(tiny_model):
    from conftest import english_lines
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    model = _short_sighted_model(tok)
    text = [" ".join(english_lines(12, seed=4)), " ".join(english_lines(5, seed=6))]
    full = bpb.bits_per_byte(model, tok, text, EvalConfig(context_length=512, stride=256))
    assert full["tokens"] > 3 * 32  # several windows per document below
    for context, stride in ((16, 8), (32, 16), (24, 17), (12, 4)):  # at least 7 tokens of context
        windowed = bpb.bits_per_byte(model, tok, text, EvalConfig(context_length=context, stride=stride))
        assert windowed["tokens"] == full["tokens"]
        assert windowed["bits_per_byte"] == pytest.approx(full["bits_per_byte"], rel=1e-6), (context, stride)
    # the model reads its context: windows that give some tokens less than 7 score differently
    for context, stride in ((16, 14), (8, 8)):
        short = bpb.bits_per_byte(model, tok, text, EvalConfig(context_length=context, stride=stride))
        assert abs(short["bits_per_byte"] / full["bits_per_byte"] - 1) > 2e-3, (context, stride)


def test_cap_keeps_whole_documents_and_counts_the_rest():
    s = evaluate._cap("x", "nya", "target-heldout", ["a" * 50, "b" * 40, "c" * 30], max_chars=100)
    assert s.texts == ["a" * 50, "b" * 40] and (s.skipped_documents, s.skipped_characters) == (1, 30)
    s = evaluate._cap("x", "nya", "target-heldout", ["a" * 500], max_chars=100)
    assert len(s.texts) == 1  # always at least one document


def _texts() -> list[str]:
    from conftest import english_lines, target_docs

    return [" ".join(english_lines(6, seed=4)), target_docs()[0]["text"], "a short one"]


def _largest_head_output(model, score):  # type: ignore[no-untyped-def]
    """(score's result, elements of the largest tensor the output head returned while it ran)."""
    sizes = []
    handle = model.get_output_embeddings().register_forward_hook(lambda m, a, out: sizes.append(out.numel()))
    try:
        return score(), max(sizes)
    finally:
        handle.remove()


def test_the_head_on_scored_positions_gives_the_full_logits_figure_with_smaller_logits(tiny_model, monkeypatch):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    cfg = EvalConfig(context_length=24, stride=8)  # several windows per document, most positions context only
    monkeypatch.setattr(bpb, "HEAD_CHUNK", 16)
    texts = _texts()
    ref, ref_peak = _largest_head_output(model, lambda: bpb.bits_per_byte_reference(model, tok, texts, cfg))
    got, peak = _largest_head_output(model, lambda: bpb.bits_per_byte(model, tok, texts, cfg))
    assert bpb.scored_head_path(model) == "chunked"
    assert got["bits_per_byte"] == pytest.approx(ref["bits_per_byte"], rel=1e-5)
    assert got["tokens"] == ref["tokens"] and got["bytes"] == ref["bytes"]
    vocab = model.config.vocab_size
    assert ref_peak == bpb.BATCH * 24 * vocab  # the plain computation: every position of a full batch
    assert peak <= 16 * vocab < ref_peak


def test_logits_changed_after_the_head_are_followed_or_left_to_the_model(tiny_model):
    """Gemma 2's soft-capping is applied to the gathered head's output; a transform the probe does not
    reproduce makes the model's own forward compute the scored positions' logits."""
    from transformers import AutoTokenizer, Gemma2Config, Gemma2ForCausalLM, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(tiny_model)
    cfg, texts = EvalConfig(context_length=24, stride=8), _texts()
    torch.manual_seed(0)
    gemma = Gemma2ForCausalLM(
        Gemma2Config(
            vocab_size=len(tok),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=8,
            final_logit_softcapping=0.5,  # small enough that leaving it out would change every figure
            initializer_range=0.5,
        )
    )
    assert bpb.scored_head_path(gemma) == "chunked"
    ref = bpb.bits_per_byte_reference(gemma, tok, texts, cfg)["bits_per_byte"]
    assert bpb.bits_per_byte(gemma, tok, texts, cfg)["bits_per_byte"] == pytest.approx(ref, rel=1e-5)

    class Tempered(LlamaForCausalLM):  # logits divided by 3 in the forward pass, which `after_head` does not know
        def forward(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            out = super().forward(*args, **kwargs)
            out.logits = out.logits / 3
            return out

    tempered = Tempered.from_pretrained(tiny_model)
    assert bpb.scored_head_path(tempered).startswith("gathered")
    ref = bpb.bits_per_byte_reference(tempered, tok, texts, cfg)["bits_per_byte"]
    assert bpb.bits_per_byte(tempered, tok, texts, cfg)["bits_per_byte"] == pytest.approx(ref, rel=1e-5)


def test_eval_precision_auto_is_bf16_on_a_bf16_gpu_and_fp32_on_any_cpu(monkeypatch):
    from langadapt import devices

    monkeypatch.setattr(devices, "computes_bf16", lambda device: True)
    assert devices.resolve_eval_precision("auto", torch.device("cpu")) == "fp32"  # comparable CPU figures
    assert devices.resolve_eval_precision("auto", torch.device("cuda")) == "bf16"
    assert devices.resolve_eval_precision("bf16", torch.device("cpu")) == "bf16"
    monkeypatch.setattr(devices, "computes_bf16", lambda device: False)
    assert devices.resolve_eval_precision("auto", torch.device("cuda")) == "fp32"  # e.g. a V100
    problems = devices.eval_precision_problems("bf16", "cpu", "eval.precision")
    assert len(problems) == 1 and "does not compute in bf16" in problems[0] and "auto or fp32" in problems[0]
    assert devices.eval_precision_problems("fp16", "cpu", "eval.precision") == [
        "eval.precision: 'fp16' is not one of auto, fp32, bf16"
    ]
    assert devices.eval_precision_problems("auto", "cpu", "eval.precision") == []


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_bits_per_byte_on_a_gpu_in_bf16_autocast_is_the_cpus_fp32_figure_to_bf16_precision(tiny_model):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from langadapt.devices import autocast, resolve_eval_precision

    tok = AutoTokenizer.from_pretrained(tiny_model)
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    cfg, texts = EvalConfig(context_length=24, stride=8), _texts()
    cpu = bpb.bits_per_byte(model, tok, texts, cfg)["bits_per_byte"]
    gpu = torch.device("cuda")
    precision = resolve_eval_precision("auto", gpu)
    model.to(gpu)
    with autocast(gpu, precision):
        got = bpb.bits_per_byte(model, tok, texts, cfg)["bits_per_byte"]
    assert precision == ("bf16" if torch.cuda.is_bf16_supported() else "fp32")
    assert got == pytest.approx(cpu, rel=1e-2)
