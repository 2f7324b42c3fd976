"""Fast training pieces: the fused chunked loss equals the plain one, packed documents do not
see each other, precision and device choices fail early and clearly."""

from __future__ import annotations

import pytest
import torch

from langadapt import train
from langadapt.recipe import TrainConfig
from langadapt.train import objectives


def _wrapped(model_dir, method, tie=True):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    n = model.get_input_embeddings().weight.shape[0]
    model.resize_token_embeddings(n + 10, mean_resizing=False)
    wrapped = train.TRAIN_METHODS.get(method)(model, TrainConfig(lora_rank=4), list(range(n, n + 10)))
    with torch.no_grad():  # move every trainable weight off its initial value, so each gradient path matters
        for p in wrapped.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.1)
    return wrapped, n + 10


def _loss_and_grads(model, fn, ids):
    model.zero_grad(set_to_none=True)
    per_token = fn(model, ids)
    (per_token * torch.linspace(0.5, 1.5, per_token.numel()).view_as(per_token)).sum().backward()
    return per_token.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("method", ["lora", "new-rows", "full"])
@pytest.mark.parametrize("tie", [True, False])
def test_chunked_loss_equals_plain_loss(request, method, tie, monkeypatch):
    model_dir = request.getfixturevalue("tiny_model" if tie else "tiny_untied_model")
    model, vocab = _wrapped(model_dir, method)
    assert objectives.output_head(model) is not None  # the fused path is the one under test
    monkeypatch.setattr(objectives, "CHUNK_TOKENS", 7)  # several chunks, the last one partial
    ids = torch.randint(0, vocab, (3, 17), generator=torch.Generator().manual_seed(1))
    ids[0, 3:6] = torch.arange(vocab - 10, vocab - 7)  # new tokens as inputs and as targets
    ref_loss, ref_grads = _loss_and_grads(model, objectives.plain_clm_loss, ids)
    got_loss, got_grads = _loss_and_grads(model, objectives.clm_loss, ids)
    assert got_loss.shape == (3, 16)
    assert torch.allclose(got_loss, ref_loss, atol=1e-5, rtol=1e-5)
    assert ref_grads.keys() == got_grads.keys() and ref_grads
    for name, ref in ref_grads.items():
        assert torch.allclose(got_grads[name], ref, atol=1e-5, rtol=1e-4), name


def test_chunked_loss_ignores_masked_targets():
    torch.manual_seed(0)
    hidden = torch.randn(9, 8, requires_grad=True)
    weight = torch.randn(20, 8)
    targets = torch.tensor([1, 2, -100, 4, 5, -100, 7, 8, 9])
    loss = objectives.linear_cross_entropy(hidden, weight, targets, chunk=4)
    ref = torch.nn.functional.cross_entropy(hidden @ weight.T, targets, reduction="none")
    assert torch.allclose(loss, ref, atol=1e-6)
    loss.sum().backward()
    assert torch.all(hidden.grad[[2, 5]] == 0)
