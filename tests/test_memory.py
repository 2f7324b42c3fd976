"""The memory estimate at validation: a run that clearly cannot fit is refused with the figures and what to
change; one that fits is logged; the activation figure is what autograd saves."""

from __future__ import annotations

import logging
import re

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from langadapt.errors import ConfigError
from langadapt.train import memory

GIB = 1 << 30
# Llama-2-7B's shape: 6,738,415,616 parameters
LLAMA_7B = dict(
    hidden_size=4096,
    intermediate_size=11008,
    num_attention_heads=32,
    num_key_value_heads=32,
    num_hidden_layers=32,
    vocab_size=32000,
    tie_word_embeddings=False,
)


@pytest.fixture
def gpu_24gb(monkeypatch):
    """A 24 GiB GPU with 23.5 GiB free, on a host with 256 GiB available (fabricated: no GPU is needed)."""
    monkeypatch.setattr(memory, "gpu_free", lambda device: int(23.5 * GIB))
    monkeypatch.setattr(memory, "host_available", lambda: 256 * GIB)


def _on_gpu(recipe, config):
    return memory.memory_problems(recipe, torch.device("cuda"), "bf16", config=LlamaConfig(**config))


def _gib(text, what):
    return float(re.search(rf"([\d.]+) GiB {what}", text).group(1))


def test_the_parameters_are_counted_from_the_config():
    assert memory.model_shape(LlamaConfig(**LLAMA_7B)).parameters == 6_738_415_616


def test_a_7b_full_fine_tune_is_refused_on_a_24gb_gpu_with_the_numbers(tiny_recipe, gpu_24gb):
    recipe = tiny_recipe(train={"method": "full", "seq_len": 256, "batch_size": 8}, model={"dtype": "bfloat16"})
    problems = _on_gpu(recipe, LLAMA_7B)
    assert len(problems) == 1
    text = problems[0]
    assert text.startswith("train: the run needs about ") and "of GPU memory per process; 23.5 GiB free on cuda" in text
    needed = float(re.search(r"needs about ([\d.]+) GiB", text).group(1))
    assert needed > 100  # 16 bytes of weight, gradient and moments for each of 6.7 billion parameters alone
    trainable = 6_738_415_616 + 2 * 4096 * recipe.tokenizer.new_tokens  # with the new rows, input and output
    assert f"training state of {trainable / 1e6:,.1f}M trainable parameters" in text
    assert _gib(text, "training state") == pytest.approx(16 * trainable / GIB, abs=0.1)
    assert "2,048-token micro-batches" in text and "refused above 120%" in text
    assert text.index("train fewer weights (train.method: lora)") < text.index("lower train.micro_batch_size")


def test_lora_on_the_same_gpu_fits(tiny_recipe, gpu_24gb, caplog):
    recipe = tiny_recipe(train={"seq_len": 256, "batch_size": 8, "micro_batch_size": 4}, model={"dtype": "bfloat16"})
    with caplog.at_level(logging.INFO, logger="langadapt.train.memory"):
        assert _on_gpu(recipe, LLAMA_7B) == []
    line = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("train: the run"))
    assert line.startswith("train: the run needs about") and "of GPU memory per process; 23.5 GiB free" in line
    needed = float(re.search(r"needs about ([\d.]+) GiB", line).group(1))
    assert 12.6 < needed < 0.9 * 23.5  # 12.6 GiB of bfloat16 frozen weights, and room to spare
    # the same with float32 frozen weights (twice the bytes, and their autocast copies) is refused
    f32 = tiny_recipe(train={"seq_len": 256, "batch_size": 8, "micro_batch_size": 4}, model={"dtype": "float32"})
    assert _estimate(f32, "lora", micro=4).weights == 2 * _estimate(recipe, "lora", micro=4).weights
    refused = _on_gpu(f32, LLAMA_7B)
    assert len(refused) == 1 and refused[0].index("model.dtype: bfloat16") < refused[0].index("train fewer weights")


def _estimate(recipe, method, **kw):
    kw = {"micro": 1, **kw}
    return memory.estimate(memory.model_shape(LlamaConfig(**LLAMA_7B)), recipe, "cuda", "bf16", method, "new", **kw)


def test_sharding_and_checkpointing_divide_what_they_divide(tiny_recipe):
    recipe = tiny_recipe(train={"method": "full", "seq_len": 256})
    one = _estimate(recipe, "full")
    fsdp = _estimate(recipe, "full", processes=8, per_node=8, sharding="full")
    assert fsdp.training_state == pytest.approx(one.training_state / 8)
    zero = [_estimate(recipe, "full", processes=8, per_node=8, sharding=f"zero{i}") for i in (1, 2, 3)]
    assert one.training_state > zero[0].training_state > zero[1].training_state > zero[2].training_state
    assert zero[2].weights + zero[2].autocast_copies < zero[1].weights + zero[1].autocast_copies
    ddp = _estimate(recipe, "full", processes=8, per_node=8)
    assert ddp.training_state > one.training_state  # DDP's gradient buckets
    ckpt = _estimate(tiny_recipe(train={"method": "full", "seq_len": 256, "gradient_checkpointing": True}), "full")
    assert ckpt.activations < one.activations / 4 and ckpt.weights == one.weights


def test_the_tiny_test_model_passes_and_its_estimate_is_logged(tiny_recipe, caplog):
    from langadapt.train.checks import memory_problems_here

    recipe = tiny_recipe()
    with caplog.at_level(logging.INFO, logger="langadapt.train.memory"):
        assert memory_problems_here(recipe) == []
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("train: the run needs about")]
    assert lines and "available on this machine" in lines[-1]
    assert float(re.search(r"about ([\d.]+) GiB", lines[-1]).group(1)) < 0.5


def test_validation_refuses_what_this_machine_cannot_hold(tiny_recipe, monkeypatch):
    """A 7B full fine-tune on this CPU with 32 GiB available: one ConfigError with the figures, before the first stage."""
    monkeypatch.setattr(memory, "readable_config", lambda recipe: LlamaConfig(**LLAMA_7B))
    monkeypatch.setattr(memory, "host_available", lambda: 32 * GIB)
    from langadapt.pipeline import run
    from langadapt.train.checks import memory_problems_here

    recipe = tiny_recipe(train={"method": "full"})  # loading the recipe does not estimate: its corpus stage may run
    with pytest.raises(ConfigError, match=r"train: the run needs about [\d.]+ GiB .* of memory; 32.0 GiB available"):
        run(recipe, ("corpus", "tokenizer", "init", "train"))
    assert not (recipe.resolved_run_dir / "corpus").exists()  # refused before any stage worked
    fits = tiny_recipe(train={"method": "new-rows"}, model={"dtype": "bfloat16"})  # 12.6 GiB of frozen rows fit
    assert memory_problems_here(fits) == []


def _saved_bytes_per_token_per_layer(config, trainable, seq):
    """What autograd saves per token and layer, weights (and the per-layer casts of them) excluded: the slope over
    two sequence lengths of the difference between one and two layers."""

    def saved(layers, length):
        torch.manual_seed(0)
        model = LlamaForCausalLM(LlamaConfig(**{**config, "num_hidden_layers": layers}))
        for name, p in model.named_parameters():
            p.requires_grad_(trainable(name))
        params = {p.untyped_storage().data_ptr() for p in model.parameters()}
        seen = {}

        def pack(t):
            if t.untyped_storage().data_ptr() not in params:
                seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            model.model(input_ids=torch.randint(0, 100, (1, length)))
        return sum(seen.values())

    per_layer = [saved(2, length) - saved(1, length) for length in (seq, 2 * seq)]
    return (per_layer[1] - per_layer[0]) / seq


@pytest.mark.parametrize("method", ["full", "new-rows"])
def test_the_activation_figure_is_what_autograd_saves(method):
    config = dict(
        hidden_size=128,
        intermediate_size=352,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=100,
        attn_implementation="sdpa",
    )
    trainable = (lambda name: True) if method == "full" else (lambda name: "embed" in name)
    measured = _saved_bytes_per_token_per_layer(config, trainable, 64)
    kind = "whole" if method == "full" else "frozen"
    a, b, c = memory.ACTIVATIONS[("fp32", kind)]
    figure = a * 128 + b * 352 + c * 64
    assert figure == pytest.approx(measured, rel=0.05)
