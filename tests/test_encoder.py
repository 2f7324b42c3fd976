"""Encoders as masked-LM models: loading, the created head, and what decides encoder vs decoder."""

from __future__ import annotations

import pytest

from conftest import ENCODER_KINDS, build_tiny_encoder


@pytest.mark.parametrize("kind", ENCODER_KINDS)
def test_encoder_loads_as_masked_lm_and_missing_head_is_created_tied(kind, tmp_path):
    from langadapt.models import is_encoder, load_model

    with_head = load_model(str(build_tiny_encoder(tmp_path / "head", kind)))
    assert type(with_head).__name__.endswith("ForMaskedLM")
    assert not getattr(with_head.config, "mlm_head_created", False)

    body_only = build_tiny_encoder(tmp_path / "body", kind, head=False)
    assert is_encoder(str(body_only))
    model = load_model(str(body_only))
    assert type(model).__name__.endswith("ForMaskedLM") and model.config.mlm_head_created
    assert model.get_output_embeddings().weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()
    model.save_pretrained(tmp_path / "saved")  # the flag travels with the saved model
    assert load_model(str(tmp_path / "saved")).config.mlm_head_created


def test_decoders_are_not_encoders(tiny_model):
    from transformers import BertConfig, LlamaConfig

    from langadapt.models import is_encoder, load_model

    assert not is_encoder(str(tiny_model))
    assert type(load_model(str(tiny_model))).__name__ == "LlamaForCausalLM"
    assert not is_encoder(BertConfig(is_decoder=True))
    assert not is_encoder(LlamaConfig())
    assert is_encoder(BertConfig(architectures=["BertModel"]))
