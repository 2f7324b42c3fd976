"""On a CUDA GPU: a bf16 LoRA step computes in bf16 and trains float32 weights; a run reports MFU.

`pytest -m gpu` collects these (the default suite deselects them, and they skip without
CUDA); `bench/gpu_check.sh` runs them before its table.
"""

from __future__ import annotations

import json

import pytest
import torch

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def _tiny_lora(model_dir):
    from transformers import AutoModelForCausalLM

    from langadapt.recipe import TrainConfig
    from langadapt.train.methods import TRAIN_METHODS

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    n = model.get_input_embeddings().weight.shape[0]
    model.resize_token_embeddings(n + 8, mean_resizing=False)
    return TRAIN_METHODS.get("lora")(model, TrainConfig(lora_rank=4), list(range(n, n + 8))), n + 8


def test_bf16_lora_step_on_cuda_computes_in_bf16_and_trains_float32_weights(tiny_model):
    from langadapt.train.objectives import clm_loss
    from langadapt.train.precision import autocast

    device = torch.device("cuda")
    model, vocab = _tiny_lora(tiny_model)
    model.to(device)
    seen = {}
    q = next(m for n, m in model.named_modules() if n.endswith("layers.0.self_attn.q_proj.base_layer"))
    q.register_forward_hook(lambda m, i, o: seen.update(q=o.dtype))  # returns None: the output stays
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    before = {n: p.detach().clone() for n, p in trainable.items()}
    opt = torch.optim.AdamW(trainable.values(), lr=1e-2)
    ids = torch.randint(0, vocab, (2, 32), device=device, generator=torch.Generator(device).manual_seed(0))
    with autocast(device, "bf16"):
        losses = clm_loss(model, ids)
    losses.float().mean().backward()
    opt.step()
    assert seen["q"] == torch.bfloat16  # the frozen product ran in bf16 under autocast
    assert losses.shape == (2, 31) and torch.isfinite(losses).all()
    assert trainable and all(p.dtype == torch.float32 for p in trainable.values())  # master weights
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in trainable.values())
    moved = [n for n, p in trainable.items() if not torch.equal(p.detach(), before[n])]
    assert any("lora_B" in n for n in moved)


def test_a_cuda_run_logs_model_tflops_and_mfu_against_the_gpus_peak(tiny_recipe):
    from test_train import _prepare

    from langadapt.rundir import read_json
    from langadapt.train import flow as train
    from langadapt.train.flops import gpu_peak_tflops

    recipe = tiny_recipe(train={"max_steps": 2, "device": "cuda", "precision": "bf16"})
    rd = _prepare(recipe)
    train.run(recipe, rd)
    rows = [json.loads(line) for line in (rd.path("train") / "metrics.jsonl").read_text().splitlines()]
    summary = read_json(rd.path("train") / "summary.json")
    assert summary["precision"] == "bf16" and summary["device"].startswith("cuda")
    assert all(r["model_tflops"] > 0 for r in rows)
    known = gpu_peak_tflops(torch.cuda.get_device_name(0), "bf16")
    if known is None:  # a GPU missing from the table: no MFU, never a guess
        assert all("mfu" not in r for r in rows) and "mfu" not in summary
    else:
        label, tflops = known
        assert all(
            0 < r["mfu"] < 1 and f"the {label}'s dense bf16 peak, {tflops:g} TFLOP/s" in r["mfu_against"] for r in rows
        )
        assert "measured" not in rows[0]["mfu_against"] and summary["peak_tflops"] == tflops


def test_peak_tflops_overrides_the_table_on_cuda(tiny_recipe):
    from langadapt.train.flops import device_peak

    peak, line = device_peak(torch.device("cuda"), "bf16", override_tflops=123.0)
    assert peak.flops == 123e12 and not peak.measured and "train.peak_tflops 123" in line
