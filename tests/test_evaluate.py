"""Bits per byte: every token scored once, sliding windows agree with full context."""

from __future__ import annotations

import math

import pytest
import torch

from langadapt.evaluate import flow as evaluate
from langadapt.recipe import EvalConfig
from langadapt.scoring import bpb


@pytest.mark.parametrize("n,context,stride", [(2, 8, 4), (10, 8, 4), (100, 16, 8), (17, 16, 16), (50, 64, 32)])
def test_windows_score_each_token_once(n, context, stride):
    scored = []
    for begin, end, k in bpb.windows(n, context, stride):
        assert end - begin <= context and k <= end - begin - (1 if begin == 0 else 0)
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
            ids = torch.tensor([[tok.bos_token_id] + tok(t, add_special_tokens=False)["input_ids"]])
            out = model(input_ids=ids, labels=ids)
            nats += out.loss.item() * (ids.shape[1] - 1)
    n_bytes = sum(len(t.encode()) for t in texts)
    assert got["bits_per_byte"] == pytest.approx(nats / math.log(2) / n_bytes, rel=1e-5)
    assert got["bytes"] == n_bytes


def test_sliding_window_is_close_to_full_context(tiny_model):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    text = ["the king said " * 30]
    full = bpb.bits_per_byte(model, tok, text, EvalConfig(context_length=512, stride=256))
    windowed = bpb.bits_per_byte(model, tok, text, EvalConfig(context_length=32, stride=16))
    assert windowed["tokens"] == full["tokens"]
    assert windowed["bits_per_byte"] == pytest.approx(full["bits_per_byte"], rel=0.05)


def test_cap_keeps_whole_documents_and_counts_the_rest():
    s = evaluate._cap("x", "nya", "target-heldout", ["a" * 50, "b" * 40, "c" * 30], max_chars=100)
    assert s.texts == ["a" * 50, "b" * 40] and (s.skipped_documents, s.skipped_characters) == (1, 30)
    s = evaluate._cap("x", "nya", "target-heldout", ["a" * 500], max_chars=100)
    assert len(s.texts) == 1  # always at least one document
