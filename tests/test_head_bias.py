"""A head tied to the input embeddings keeps its bias while new-token rows train through peft.

peft's trainable-token layer on a tied output head (a masked-LM decoder, a tied decoder head
with a bias) computes the logits without the head's bias; `trainable.keep_head_bias` gives it
back. The logits training sees must be the model's own (compared without dropout), the bias must
learn where the method trains it, and the merged, saved model must compute what training computed.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import build_tiny_encoder

from langadapt.models.encoder import mlm_logits_at
from langadapt.models.loading import load_model
from langadapt.train import (
    methods,  # noqa: F401  (registers every train method)
    objectives,
)
from langadapt.train.adapters import finalize, save_final
from langadapt.train.config import TrainConfig
from langadapt.train.trainable import apply_method, keep_head_bias

NEW = 6  # new tokens added to the vocabulary
IDS = [[0, 5, 17, 33, -1, 60, -3, 2], [0, -2, 9, 41, 12, -6, 7, 2]]  # negative: the new tokens, from the end
AT = (torch.tensor(IDS) < 0) | (torch.arange(8) % 3 == 1)  # positions the MLM head scores: new tokens, others


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_encoder(tmp_path_factory.mktemp("models") / "tiny-bert", kind="wordpiece")


@pytest.fixture(scope="module")
def tiny_phi(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer Phi whose head, tied to its input embeddings, has a bias (Phi's lm_head has one)."""
    from transformers import AutoTokenizer, PhiConfig, PhiForCausalLM

    folder = tmp_path_factory.mktemp("models") / "tiny-phi"
    tok = AutoTokenizer.from_pretrained(tiny_model)
    torch.manual_seed(0)
    sizes = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4)
    PhiForCausalLM(PhiConfig(vocab_size=len(tok), tie_word_embeddings=True, **sizes)).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def _model_with_new_rows(folder: Path):  # type: ignore[no-untyped-def]
    """The model with NEW tokens added (random rows, as init leaves them) and a non-zero head bias."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    n = len(tok)
    tok.add_tokens([f"newtok{i}" for i in range(NEW)])
    model = load_model(str(folder))
    torch.manual_seed(1)
    model.resize_token_embeddings(len(tok), mean_resizing=False)
    head = model.get_output_embeddings()
    assert head.weight is model.get_input_embeddings().weight and head.bias is not None  # tied, with a bias
    with torch.no_grad():
        head.bias.copy_(torch.randn_like(head.bias))
    return model.eval(), tok, list(range(n, n + NEW))


def _ids(vocab: int) -> torch.Tensor:
    ids = torch.tensor(IDS)
    return torch.where(ids < 0, vocab + ids, ids)


def _logits(model, ids: torch.Tensor) -> torch.Tensor:  # type: ignore[no-untyped-def]
    """What a step's loss sees: MLM logits at the chosen positions (encoders), every position's (decoders)."""
    if model.config.model_type == "phi":
        return model(input_ids=ids).logits
    return mlm_logits_at(model, ids, torch.ones_like(ids), AT)


def _loss(logits: torch.Tensor, target: int) -> torch.Tensor:
    flat = logits.flatten(0, -2)
    return torch.nn.functional.cross_entropy(flat, torch.full(flat.shape[:1], target))


CASES = [  # model, method, train section
    ("xlmr", "new-rows", {}),
    ("xlmr", "lora", {}),
    ("xlmr", "head", {}),
    ("xlmr", "lora", {"embeddings": "all"}),
    ("bert", "new-rows", {}),
    ("bert", "lora", {}),
    ("phi", "new-rows", {}),
    ("phi", "lora", {"lora_targets": ("q_proj", "v_proj")}),
]


def _folder(request, name: str) -> Path:  # type: ignore[no-untyped-def]
    return request.getfixturevalue({"xlmr": "tiny_encoder", "bert": "tiny_bert", "phi": "tiny_phi"}[name])


@pytest.mark.parametrize(("name", "method", "train"), CASES)
def test_training_logits_are_the_models_own_head_bias_included(request, name, method, train):
    model, tok, new_ids = _model_with_new_rows(_folder(request, name))
    ids = _ids(len(tok))
    with torch.no_grad():
        own = _logits(model, ids)
    wrapped = apply_method(method, model, TrainConfig(lora_rank=4, **train), new_ids).eval()
    with torch.no_grad():
        seen = _logits(wrapped, ids)
    torch.testing.assert_close(seen, own, atol=1e-6, rtol=1e-6)
    assert keep_head_bias(wrapped) == 0  # asked again, every head already has its bias
    if name == "phi":  # the fused causal loss adds the head's bias itself; it now agrees with the model's logits
        assert objectives.prepare_loss("clm", wrapped) == "fused"


@pytest.mark.parametrize(("name", "method", "train"), CASES)
def test_the_head_bias_learns_exactly_where_the_method_trains_it(request, name, method, train):
    model, tok, new_ids = _model_with_new_rows(_folder(request, name))
    bias = model.get_output_embeddings().bias  # the same parameter once wrapped
    wrapped = apply_method(method, model, TrainConfig(lora_rank=4, **train), new_ids)
    # an encoder's MLM head trains beside lora (train.train_head) and is what `head` trains; new-rows freezes it
    assert bias.requires_grad == (name != "phi" and method != "new-rows")
    _loss(_logits(wrapped, _ids(len(tok))), new_ids[0]).backward()
    if bias.requires_grad:
        assert bias.grad is not None and bias.grad.abs().max() > 0


@pytest.mark.parametrize(("name", "method", "train"), CASES)
def test_the_saved_model_computes_what_training_computed_after_a_step(request, tmp_path, name, method, train):
    model, tok, new_ids = _model_with_new_rows(_folder(request, name))
    ids = _ids(len(tok))
    bias = model.get_output_embeddings().bias
    before = bias.detach().clone()
    wrapped = apply_method(method, model, TrainConfig(lora_rank=4, **train), new_ids).eval()
    optimizer = torch.optim.AdamW([p for p in wrapped.parameters() if p.requires_grad], lr=1e-2)
    _loss(_logits(wrapped, ids), new_ids[0]).backward()
    optimizer.step()
    with torch.no_grad():
        seen = _logits(wrapped, ids)
    trained = bias.detach().clone()
    assert torch.equal(trained, before) != bias.requires_grad  # a step moved the bias if it trains
    save_final(finalize(wrapped, tmp_path), tok, tmp_path / "final")
    saved = load_model(str(tmp_path / "final")).eval()
    torch.testing.assert_close(saved.get_output_embeddings().bias.detach(), trained, atol=0, rtol=0)
    with torch.no_grad():
        torch.testing.assert_close(_logits(saved, ids), seen, atol=1e-5, rtol=1e-5)
