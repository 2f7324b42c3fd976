"""Model FLOPs per token against hand counts, the frozen/trainable rule, the peak table, MFU in a run.

The tiny Llama of these tests (built here from a config): vocabulary 100, hidden 32, 2 layers,
4 query heads of 8 (d_attn = 32), 2 key/value heads (k and v project to 16), MLP 64, tied head.
Matrix products per layer, in weights (multiply-adds per token):
    q 32x32 = 1024, k 32x16 = 512, v 512, o 1024, gate 32x64 = 2048, up 2048, down 64x32 = 2048
    = 9,216 per layer, 18,432 for both; the head 32x100 = 3,200; in all 21,632.
Attention per layer and token, forward: QK^T 2 x 16 x 32 + AV 2 x 16 x 32 = 2,048 at seq_len 16;
4,096 for both layers.
"""

from __future__ import annotations

import json

import pytest
import torch

from langadapt.train import flops
from langadapt.train.flops import flops_per_token, gpu_peak_tflops

SEQ = 16
LAYER = 1024 + 512 + 512 + 1024 + 3 * 2048  # 9,216
BODY = 2 * LAYER  # 18,432
HEAD = 32 * 100  # 3,200
ATTN = 2 * (2 * SEQ * 32 + 2 * SEQ * 32)  # 4,096: both layers
FORWARD = 2 * (BODY + HEAD) + ATTN  # 47,360


def _llama(tie: bool = True):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=100,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        tie_word_embeddings=tie,
    )
    return LlamaForCausalLM(config)


def _method(name: str, model, **train):
    from langadapt.recipe import TrainConfig
    from langadapt.train.methods import TRAIN_METHODS

    return TRAIN_METHODS.get(name)(model, TrainConfig(lora_rank=4, **train), list(range(90, 100)))


def test_forward_of_a_tiny_llama_is_the_hand_count():
    f = flops_per_token(_method("full", _llama()), SEQ)
    assert f.products_forward == 2 * (BODY + HEAD) == 43_264  # embeddings are a lookup: nothing
    assert f.attention_forward == ATTN == 4_096
    assert f.forward == FORWARD == 47_360
    assert (f.layers, f.attention_width) == (2, 32)


def test_full_fine_tuning_is_three_forwards():
    f = flops_per_token(_method("full", _llama()), SEQ)
    # every weight trains (weight gradients) and the embeddings train (input gradients everywhere)
    assert f.products_backward == 2 * 2 * (BODY + HEAD)
    assert f.attention_backward == 2 * ATTN
    assert f.total == 3 * FORWARD == 142_080


def test_lora_in_every_layer_with_new_rows():
    f = flops_per_token(_method("lora", _llama()), SEQ)
    # LoRA r=4 per layer: q 4x32+32x4 = 256, k 128+16x4 = 192, v 192, o 256, gate 128+64x4 = 384,
    # up 384, down 4x64+32x4 = 384: 2,048 per layer, 4,096 for both
    adapters = 2 * (256 + 192 + 192 + 256 + 384 + 384 + 384)
    assert adapters == 4_096
    assert f.forward == 2 * (BODY + HEAD + adapters) + ATTN
    # new rows train in the embeddings, so gradients flow through everything: frozen products 1 x
    # their forward (input gradients), adapters 2 x (input and weight), the tied head's 10 trained
    # rows their weight gradient (2 x 10 x 32), attention 2 x
    assert f.products_backward == 2 * (BODY + HEAD) + 2 * 2 * adapters + 2 * 10 * 32
    assert f.attention_backward == 2 * ATTN
    # in all: frozen products 2 x their forward, adapters and attention 3 x, and the head's rows
    assert f.total == 2 * 2 * (BODY + HEAD) + 3 * 2 * adapters + 3 * ATTN + 640 == 124_032


def test_only_embedding_rows_trainable_still_backpropagates_through_the_whole_stack():
    f = flops_per_token(_method("new-rows", _llama()), SEQ)
    assert f.forward == FORWARD
    # no weight gradient but the head's 10 rows; every product and attention needs its input gradient
    assert f.products_backward == 2 * (BODY + HEAD) + 2 * 10 * 32
    assert f.attention_backward == 2 * ATTN
    assert f.total == 2 * 2 * (BODY + HEAD) + 3 * ATTN + 640 == 99_456  # products 2 x, attention 3 x


def test_nothing_below_the_lowest_trainable_parameter_costs_a_backward():
    model = _llama(tie=False)  # an untied head trained alone: one weight gradient, no input gradient anywhere
    for name, p in model.named_parameters():
        p.requires_grad_(name == "lm_head.weight")
    f = flops_per_token(model, SEQ)
    assert f.products_backward == 2 * HEAD
    assert f.attention_backward == 0

    from peft import LoraConfig, get_peft_model

    # LoRA on layer 1 only, nothing trainable below it: layer 0 costs no backward at all. In layer 1,
    # q's frozen product comes before any trainable parameter (no input gradient); k, v, o, gate,
    # up and down come after q's adapter in module order and count their input gradient (k and v
    # read the layer's input, so autograd skips theirs: the documented excess, 512 + 512 weights)
    lora = get_peft_model(
        _llama(), LoraConfig(r=4, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"], layers_to_transform=[1])
    )
    f = flops_per_token(lora, SEQ)
    adapters = 256 + 192 + 192 + 256  # layer 1's q, k, v, o adapters
    input_grads = (LAYER - 1024) + HEAD + (adapters - 128)  # q's lora_A reads the layer's input: none
    assert f.products_backward == 2 * input_grads + 2 * adapters
    assert f.attention_backward == 2 * ATTN / 2  # one layer of two


def test_masked_lm_head_counts_at_the_masked_fraction():
    from transformers import BertConfig, BertForMaskedLM

    config = BertConfig(
        vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64
    )
    model = BertForMaskedLM(config)
    full, masked = flops_per_token(model, SEQ), flops_per_token(model, SEQ, head_tokens=0.25)
    head = 32 * 32 + 32 * 100  # the head's transform and its vocabulary projection
    assert full.products_forward - masked.products_forward == pytest.approx(2 * head * 0.75)
    assert full.attention_forward == masked.attention_forward == 2 * 2 * 2 * SEQ * 32


@pytest.mark.parametrize(
    ("name", "kind", "expected"),
    [
        ("NVIDIA H100 80GB HBM3", "bf16", ("H100 SXM", 989.5)),
        ("NVIDIA H100 PCIe", "bf16", ("H100 PCIe", 756.5)),
        ("NVIDIA H100 NVL", "fp16", ("H100 NVL", 835.5)),
        ("NVIDIA H200", "bf16", ("H200 SXM", 989.5)),
        ("NVIDIA A100-SXM4-80GB", "bf16", ("A100", 312.0)),
        ("NVIDIA A100 80GB PCIe", "tf32", ("A100", 156.0)),
        ("NVIDIA A10", "bf16", ("A10", 125.0)),
        ("NVIDIA L40S", "bf16", ("L40S", 362.05)),
        ("NVIDIA L40", "bf16", ("L40", 181.05)),
        ("NVIDIA L4", "bf16", ("L4", 121.0)),
        ("NVIDIA GeForce RTX 4090", "bf16", ("GeForce RTX 4090", 165.2)),
        ("NVIDIA GeForce RTX 3090", "fp32", ("GeForce RTX 3090", 35.6)),
        ("Tesla V100-SXM2-16GB", "fp16", ("V100 SXM2", 125.0)),
        ("Tesla V100-SXM2-16GB", "bf16", None),  # Volta has no bf16: no figure, not the fp16 one
        ("NVIDIA GeForce RTX 4090 Laptop GPU", "bf16", None),  # other clocks: not the desktop card
        ("NVIDIA A10G", "bf16", None),  # no vendor data sheet: left to train.peak_tflops
        ("NVIDIA B200", "bf16", None),
    ],
)
def test_gpu_peak_table(name, kind, expected):
    assert gpu_peak_tflops(name, kind) == expected


def test_peak_lookup_override_and_unknown_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H100 80GB HBM3")
    peak, line = flops.device_peak(torch.device("cuda"), "bf16")
    assert peak.flops == 989.5e12 and not peak.measured
    assert "H100 SXM's dense bf16 peak, 989.5 TFLOP/s" in line

    peak, line = flops.device_peak(torch.device("cuda"), "bf16", override_tflops=500)
    assert peak.flops == 500e12 and "train.peak_tflops 500" in line

    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA A10G")
    peak, line = flops.device_peak(torch.device("cuda"), "bf16")
    assert peak is None
    assert line.startswith("MFU not reported: no dense bf16 peak known for 'NVIDIA A10G'; set train.peak_tflops")


def test_cpu_peak_is_measured_once_per_process_and_labelled(monkeypatch):
    monkeypatch.setattr(flops, "BENCH_SIZES", (64,))
    monkeypatch.setattr(flops, "BENCH_SECONDS", 0.01)
    monkeypatch.setattr(flops, "_MEASURED", {})
    peak, line = flops.device_peak(torch.device("cpu"), "fp32")
    assert peak.measured and peak.flops > 1e6
    assert line.startswith("MFU against this CPU's measured matmul peak: ")
    assert peak.label.startswith("against this CPU's measured matmul peak (")
    calls = []
    monkeypatch.setattr(torch, "mm", lambda *a, **k: calls.append(1))
    assert flops.device_peak(torch.device("cpu"), "fp32")[0].flops == peak.flops and not calls  # cached


def test_utilisation_figures():
    f = flops_per_token(_method("full", _llama()), SEQ)
    peak = flops.Peak(1e9, "a test peak", measured=True)
    u = flops.Utilisation(f, peak, processes=2)
    row = u.step(tokens=1000, seconds=2.0)  # 1000 x 142,080 FLOPs in 2 s on 2 processes
    assert row["model_tflops"] == round(1000 * 142_080 / 2.0 / 2 / 1e12, 4)
    assert row["mfu"] == round(1000 * 142_080 / 2.0 / 2 / 1e9, 4)
    assert row["mfu_against"] == "against this CPU's measured matmul peak (a test peak)"
    u.step(tokens=3000, seconds=2.0)
    s = u.summary()  # time-weighted: 4000 tokens in 4 s
    assert s["mfu"] == round(4000 * 142_080 / 4.0 / 2 / 1e9, 4) and s["model_flops_per_token"] == 142_080
    assert "against this CPU's measured matmul peak" in u.phrase(1000, 2.0)
    assert "mfu" not in flops.Utilisation(f, None).step(1000, 1.0)  # no peak: no MFU, never a guess


def test_mfu_in_every_metrics_row_and_the_summary_of_a_cpu_run(tiny_recipe, monkeypatch, caplog):
    import logging

    from test_train import _prepare

    from langadapt.rundir import read_json
    from langadapt.train import flow as train

    monkeypatch.setattr(flops, "BENCH_SIZES", (128,))
    monkeypatch.setattr(flops, "BENCH_SECONDS", 0.02)
    recipe = tiny_recipe(train={"max_steps": 2, "device": "cpu"})
    rd = _prepare(recipe)
    with caplog.at_level(logging.INFO, logger="langadapt.train.loop"):
        train.run(recipe, rd)
    rows = [json.loads(line) for line in (rd.path("train") / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 2
    for r in rows:
        assert 0 < r["mfu"] and r["model_tflops"] > 0
        assert r["mfu_against"].startswith("against this CPU's measured matmul peak (")
    summary = read_json(rd.path("train") / "summary.json")
    assert summary["mfu"] > 0 and summary["peak_tflops"] > 0
    # the model the run trained: lora with new rows on a tied tiny Llama, seq_len 32
    assert (
        summary["model_flops_per_token"]
        == summary["model_flops_per_token_forward"] + summary["model_flops_per_token_backward"]
    )
    assert 2 * summary["model_flops_per_token_forward"] < summary["model_flops_per_token"]
    steps = [m for m in caplog.messages if m.startswith("step ")]
    assert steps and all("MFU" in m and "against this CPU's measured matmul peak" in m for m in steps)


def test_peak_tflops_must_not_be_negative(tiny_recipe):
    from langadapt.errors import ConfigError

    with pytest.raises(ConfigError, match="train.peak_tflops: must be >= 0"):
        tiny_recipe(train={"peak_tflops": -1})


def test_the_report_states_throughput_and_what_mfu_is_against():
    from langadapt.report.training import throughput_sentence
    from langadapt.train.config import PhaseConfig, TrainConfig

    label = "against this CPU's measured matmul peak (0.159 TFLOP/s, fp32, 2 threads)"
    s = {
        "tokens_this_session": 4000,
        "train_step_seconds": 2.0,
        "model_flops_per_token": 2.5e8,
        "model_tflops": 0.5,
        "mfu": 0.231,
        "mfu_against": label,
    }
    assert throughput_sentence(TrainConfig(), s) == (
        f"Training steps ran at 2,000 tokens/s (0.25 GFLOP each), 0.5 model TFLOP/s per device, MFU 23.1% {label}."
    )
    unknown = {k: v for k, v in s.items() if k not in ("mfu", "mfu_against")}
    assert "MFU not reported: no peak FLOP/s is known for this device; set train.peak_tflops" in throughput_sentence(
        TrainConfig(), unknown
    )
    two = TrainConfig(
        phases=(PhaseConfig(name="warm", method="head", max_steps=2), PhaseConfig(method="lora", max_steps=2))
    )
    text = throughput_sentence(two, {"phases": [s, {**s, "mfu": 0.3}]})
    assert "warm: 2,000 tokens/s" in text and "MFU 30.0%" in text and f"(each MFU {label})" in text
    assert throughput_sentence(TrainConfig(), {"steps": 3}) == ""  # a summary from before these figures


def test_phases_combine_time_weighted():
    a = {"train_step_seconds": 1.0, "model_tflops": 1.0, "mfu": 0.1, "mfu_against": "x"}
    b = {"train_step_seconds": 3.0, "model_tflops": 2.0, "mfu": 0.2, "mfu_against": "x"}
    assert flops.combine([a, b]) == {"train_step_seconds": 4.0, "model_tflops": 1.75, "mfu": 0.175, "mfu_against": "x"}
    assert "mfu" not in flops.combine([a, {**b, "mfu_against": "y"}])  # different peaks: no one MFU
    assert flops.combine([{"steps": 2}]) == {}
