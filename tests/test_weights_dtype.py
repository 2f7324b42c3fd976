"""What the weights are held in: frozen ones in model.dtype (bf16 on a GPU by default), trained ones in float32.

Runs on a CPU: a tiny model loaded in bf16 stands for a GPU's default. Every method keeps
its trained weights float32 and the frozen ones bf16, trains a step under autocast, and the
optimizer refuses bf16 weights unless the recipe names train.low_precision_master_weights.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

import langadapt.catalog  # noqa: F401  (every registry whole)
from langadapt.devices import resolve_dtype
from langadapt.errors import ConfigError
from langadapt.models.loading import doc_separator_id, load_model, load_tokenizer
from langadapt.recipe import TrainConfig
from langadapt.rundir import read_json
from langadapt.train import loop
from langadapt.train.adapters import adapters_installed
from langadapt.train.data import TokenStream
from langadapt.train.precision import frozen_dtype, resolve_precision
from langadapt.train.trainable import apply_method, hold_master_weights, weight_dtypes

CUDA = torch.device("cuda")
CPU = torch.device("cpu")


def test_auto_is_bf16_on_a_gpu_fp16_without_bf16_and_float32_on_a_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert resolve_dtype("auto", CUDA) == "bfloat16"
    assert resolve_dtype("auto", torch.device("cuda:1")) == "bfloat16"
    assert resolve_dtype("auto", CUDA, "fp32") == "float32"  # an explicit float32 computation keeps float32 weights
    assert resolve_dtype("auto", CUDA, "fp16") == "float16"
    assert resolve_dtype("auto", CPU) == "float32" and resolve_dtype("auto", torch.device("mps")) == "float32"
    assert resolve_dtype("bfloat16", CPU) == "bfloat16" and resolve_dtype("float32", CUDA) == "float32"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)  # e.g. a V100 or T4
    assert resolve_dtype("auto", CUDA) == "float16"
    # precision auto follows frozen half-precision weights, else the device's rule
    assert resolve_precision("auto", CUDA, "float16") == "fp16"
    assert resolve_precision("auto", CPU, "bfloat16") == "bf16"
    assert resolve_precision("fp32", CPU, "bfloat16") == "fp32"


def test_load_model_auto_loads_bf16_for_a_gpu_and_float32_for_a_cpu(tiny_model, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    # from_pretrained places nothing on the (mocked) GPU: the weights load on the CPU in the dtype chosen for it
    gpu = load_model(str(tiny_model), "auto", device=CUDA)
    assert {p.dtype for p in gpu.parameters()} == {torch.bfloat16}
    cpu = load_model(str(tiny_model), "auto", device=CPU)
    assert {p.dtype for p in cpu.parameters()} == {torch.float32}


def _texts():
    from conftest import english_lines

    return english_lines(40, seed=5)


# (label, model fixture, method, train section): every method the tests can run
METHODS = [
    ("lora+new-rows", "tiny_model", "lora", {}),
    ("lora+all-embeddings", "tiny_model", "lora", {"embeddings": "all"}),
    ("new-rows", "tiny_model", "new-rows", {}),
    ("full", "tiny_model", "full", {}),
    ("head", "tiny_untied_model", "head", {}),
    ("seq-bn", "tiny_model", "seq-bn", {}),
    ("encoder-lora+head", "tiny_encoder", "lora", {"objective": "mlm", "packed_attention": "row"}),
]


@pytest.mark.parametrize("label,fixture,method,section", METHODS, ids=[m[0] for m in METHODS])
def test_trained_weights_are_float32_frozen_ones_bf16_and_a_step_trains(
    request, corpus_files, tmp_path, label, fixture, method, section
):
    from conftest import tiny_recipe_dict

    from langadapt.recipe import Recipe
    from langadapt.train.mlm import MaskingPlan, masked_lm

    if (method == "seq-bn" or fixture == "tiny_encoder") and not adapters_installed():
        pytest.skip("the adapters extra is not installed")
    path = str(request.getfixturevalue(fixture))
    tok = load_tokenizer(path)
    texts = _texts()
    new_ids = sorted({i for t in texts[:5] for i in tok(t)["input_ids"]})[:12]  # rows the text uses: they get gradients
    if fixture == "tiny_encoder":  # peft's trainable rows on a tied MLM head drop the head's bias: not under test here
        new_ids = []
    train = {"method": method, "max_steps": 2, "lr": 1e-2, **section}
    recipe = Recipe.from_dict(
        tiny_recipe_dict(corpus_files, path, tmp_path / "run", model={"dtype": "bfloat16"}, train=train)
    )
    objective = masked_lm(MaskingPlan.from_tokenizer(tok, recipe.train, 0)) if fixture == "tiny_encoder" else None
    model = load_model(path, recipe.model.dtype, device=CPU)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    model = apply_method(method, model, recipe.train, new_ids)
    trained = {n: p for n, p in model.named_parameters() if p.requires_grad}
    frozen = {n: p for n, p in model.named_parameters() if not p.requires_grad}
    assert trained and all(p.dtype == torch.float32 for p in trained.values()), label
    if method == "full":
        assert not frozen and frozen_dtype(model) == "float32"
    else:
        assert frozen and all(p.dtype == torch.bfloat16 for p in frozen.values()), label
        assert frozen_dtype(model) == "bfloat16"
        assert weight_dtypes(model) == {"trained": "float32", "frozen": "bfloat16"}
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    streams = {"nya": TokenStream(texts, tok, doc_separator_id(tok), recipe.train.seq_len, 0)}
    (tmp_path / "out").mkdir()
    summary = loop.train_loop(model, streams, "nya", None, recipe, tmp_path / "out", device=CPU, objective=objective)
    # frozen bf16 weights: the forward pass computes in bf16, and autocast is what lets the float32 weights meet them
    assert summary["precision"] == (resolve_precision("auto", CPU) if method == "full" else "bf16")
    after = dict(model.named_parameters())
    for n in trained:
        assert after[n].dtype == torch.float32 and not torch.equal(after[n], before[n]), f"{label}: {n} did not train"
    for n in frozen:
        assert after[n].dtype == torch.bfloat16 and torch.equal(after[n], before[n]), f"{label}: {n} moved"


def test_the_optimizer_refuses_bf16_weights_unless_the_recipe_names_the_option(tiny_model):
    model = load_model(str(tiny_model), "bfloat16", device=CPU)
    for p in model.parameters():
        p.requires_grad_(True)  # a model that bypassed apply_method: its trainable weights are bf16
    with pytest.raises(ConfigError, match="trainable weights are not float32 .* train.low_precision_master_weights"):
        loop._optimizer(model, TrainConfig())
    opt = loop._optimizer(model, TrainConfig(low_precision_master_weights=True))
    assert {p.dtype for g in opt.param_groups for p in g["params"]} == {torch.bfloat16}
    # with the option the cast is skipped; without it every trainable weight becomes float32, tied ones still tied
    assert hold_master_weights(model, low_precision=True) == 0
    assert hold_master_weights(model) == len(list(model.parameters()))
    assert model.get_input_embeddings().weight is model.get_output_embeddings().weight
    assert {p.dtype for p in model.parameters()} == {torch.float32}


def test_precision_and_dtype_that_cannot_meet_are_refused(tiny_recipe):
    with pytest.raises(ConfigError) as e:
        tiny_recipe(model={"dtype": "bfloat16"}, train={"precision": "fp32"})
    assert "train.precision: fp32, but model.dtype bfloat16 holds the frozen weights in bfloat16" in str(e.value)
    # a method that trains every weight holds none frozen: no conflict
    assert tiny_recipe(model={"dtype": "bfloat16"}, train={"precision": "fp32", "method": "full"})
    with pytest.raises(ConfigError, match="model.dtype: float16 weights compute in fp16, which cpu does not train in"):
        tiny_recipe(model={"dtype": "float16"}, train={"device": "cpu"})
    with pytest.raises(ConfigError, match="train.low_precision_master_weights: float16 weights cannot be trained"):
        tiny_recipe(model={"dtype": "float16"}, train={"device": "cpu", "low_precision_master_weights": True})
    with pytest.raises(ConfigError, match="model.dtype: 'bf16' is not one of auto, float32, bfloat16, float16"):
        tiny_recipe(model={"dtype": "bf16"})


def test_the_run_records_the_resolved_dtype_saves_in_it_and_the_attention_that_ran(tiny_recipe):
    from test_train import _final_state, _prepare

    from langadapt.train import flow as train

    auto = tiny_recipe(train={"max_steps": 1})
    rd = _prepare(auto)
    assert train.inputs(auto, rd)["dtype"] == "float32"  # auto on a CPU
    train.run(auto, rd)
    summary = read_json(rd.path("train") / "summary.json")
    assert summary["model_dtype"] == "float32" and summary["attn_implementation"] == "sdpa"
    assert summary["weights_dtype"] == {"trained": "float32", "frozen": "float32"}
    # the attention kernel is not in the fingerprint (same attention to rounding): the finished stage is kept
    eager = dataclasses.replace(auto, model=dataclasses.replace(auto.model, attn_implementation="eager"))
    assert train.inputs(eager, rd) == train.inputs(auto, rd)
    # the dtype is: bf16 frozen weights retrain, and the final model is saved in bf16, one dtype throughout
    bf16 = dataclasses.replace(eager, model=dataclasses.replace(eager.model, dtype="bfloat16"))
    assert train.inputs(bf16, rd)["dtype"] == "bfloat16"
    train.run(bf16, rd)
    summary = read_json(rd.path("train") / "summary.json")
    assert summary["model_dtype"] == "bfloat16" and summary["attn_implementation"] == "eager"
    assert summary["weights_dtype"] == {"trained": "float32", "frozen": "bfloat16"} and summary["precision"] == "bf16"
    assert {t.dtype for t in _final_state(rd).values()} == {torch.bfloat16}
    assert read_json(rd.path("train") / "final" / "config.json")["dtype"] == "bfloat16"
