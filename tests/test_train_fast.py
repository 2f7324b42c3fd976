"""Fast training pieces: the fused chunked loss equals the plain one, packed documents do not
see each other, precision and device choices fail early and clearly."""

from __future__ import annotations

import pytest
import torch

from langadapt.recipe import TrainConfig
from langadapt.train import flow as train
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
    assert objectives.prepare_loss("clm", model) == "fused"  # the fused path is the one under test
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


def test_packed_documents_do_not_attend_to_each_other(tiny_model):
    from transformers import AutoModelForCausalLM

    from langadapt.train.data import document_positions

    model = AutoModelForCausalLM.from_pretrained(tiny_model, attn_implementation="sdpa").eval()
    sep = 0
    doc_a, doc_b = [sep, 5, 17, 33, 8, 41, 9], [sep, 12, 7, 99, 23, 64, 3, 11]
    packed = torch.tensor([doc_a + doc_b])
    alone = torch.tensor([doc_b])
    positions = document_positions(packed, sep)
    assert positions.tolist() == [list(range(7)) + list(range(8))]
    with torch.no_grad():
        ref = objectives.clm_loss(model, alone)[0]
        got = objectives.clm_loss(model, packed, position_ids=positions)[0, len(doc_a) :]
        crossing = objectives.clm_loss(model, packed)[0, len(doc_a) :]
    assert torch.allclose(got, ref, atol=1e-5)
    assert not torch.allclose(crossing, ref, atol=1e-3)  # without the positions, attention does cross


def test_document_positions_restart_at_each_row():
    from langadapt.train.data import document_positions

    ids = torch.tensor([[4, 4, 0, 4], [4, 0, 0, 4]])
    assert document_positions(ids, 0).tolist() == [[0, 1, 0, 1], [0, 0, 0, 1]]


def test_micro_batches_accumulate_to_the_same_step(tiny_recipe):
    from test_train import _final_state, _prepare

    states = []
    for micro in (0, 2):  # same run directory: corpus, tokenizer and init are reused, training re-runs
        recipe = tiny_recipe(train={"micro_batch_size": micro, "max_steps": 2})
        rd = _prepare(recipe)
        train.run(recipe, rd)
        states.append(_final_state(rd))
    for key in states[0]:
        assert torch.allclose(states[0][key], states[1][key], atol=1e-5), key


@pytest.mark.parametrize(
    ("train_section", "message"),
    [
        ({"device": "cuda"}, "train.device: cuda asked for, but torch sees no CUDA GPU"),
        ({"device": "tpu"}, "train.device: 'tpu' is not one of auto, cpu, cuda, mps"),
        ({"device": "cpu", "precision": "fp16"}, "train.precision: fp16 is not supported on cpu"),
        ({"precision": "fp8"}, "train.precision: 'fp8' is not one of auto, fp32, bf16, fp16"),
        ({"packed_attention": "none"}, "train.packed_attention: 'none' is not one of document, row"),
        ({"micro_batch_size": 3}, "train.micro_batch_size: 3 must divide the batch of 4 sequences"),
    ],
)
def test_device_and_precision_errors_before_any_work(tiny_recipe, train_section, message):
    from langadapt.errors import ConfigError

    if train_section.get("device") == "cuda" and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(ConfigError, match=message):
        tiny_recipe(train=train_section)


def test_bf16_on_a_cpu_without_bf16_instructions_is_an_error(tiny_recipe):
    from langadapt.errors import ConfigError
    from langadapt.train.precision import cpu_has_bf16

    section = {"device": "cpu", "precision": "bf16"}
    if cpu_has_bf16():
        assert tiny_recipe(train=section).train.precision == "bf16"  # accepted where the CPU has the instructions
    else:
        with pytest.raises(ConfigError, match="train.precision: bf16 is not supported on cpu: this CPU has no bf16"):
            tiny_recipe(train=section)


def test_precision_auto_picks_what_the_device_computes_natively():
    from langadapt.train.precision import cpu_has_bf16, resolve_precision

    assert resolve_precision("auto", torch.device("cpu")) == ("bf16" if cpu_has_bf16() else "fp32")
    assert resolve_precision("fp32", torch.device("cpu")) == "fp32"


def test_bf16_autocast_trains_close_to_fp32(tiny_model):
    """The bf16 path computes the same loss as fp32 to bf16 accuracy (runs on any CPU, fast or not)."""
    from transformers import AutoModelForCausalLM

    from langadapt.devices import autocast

    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    ids = torch.randint(0, 300, (2, 16), generator=torch.Generator().manual_seed(0))
    ref = objectives.clm_loss(model, ids).mean()
    with autocast(torch.device("cpu"), "bf16"):
        got = objectives.clm_loss(model, ids).mean()
    got.backward()
    assert got.dtype == torch.float32 and abs(got.item() - ref.item()) < 0.05
    assert all(p.grad.dtype == torch.float32 for p in model.parameters() if p.grad is not None)


def test_heldout_bits_per_byte_during_training_and_early_stopping(tiny_recipe, tmp_path):
    import json

    from test_train import _prepare

    from langadapt.rundir import read_json

    recipe = tiny_recipe(train={"eval_every": 1, "eval_tokens": 256, "max_steps": 3})
    rd = _prepare(recipe)
    train.run(recipe, rd)
    rows = [json.loads(line) for line in (rd.path("train") / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]
    for r in rows:
        assert 0 < r["bpb_nya"] < 20 and 0 < r["bpb_eng"] < 20
    assert rows[-1]["bpb_nya"] < rows[0]["bpb_nya"]  # the target improves on text it never saw

    # a learning rate far too high makes held-out text worse: training stops after `patience` evaluations
    diverging = tiny_recipe(
        run_dir=str(tmp_path / "diverging"),
        train={"eval_every": 1, "eval_tokens": 256, "max_steps": 6, "lr": 3.0, "early_stopping_patience": 1},
    )
    rd = _prepare(diverging)
    train.run(diverging, rd)
    summary = read_json(rd.path("train") / "summary.json")
    stop = summary["stopped_early_at_step"]
    assert 2 <= stop < 6
    assert len((rd.path("train") / "metrics.jsonl").read_text().splitlines()) == stop


def test_device_resolution_and_record():
    from langadapt.devices import describe_device, device_problems, resolve_device

    auto = resolve_device("auto")
    expected = "cuda" if torch.cuda.is_available() else ("mps" if torch.backends.mps.is_available() else "cpu")
    assert auto.type == expected
    assert resolve_device("cpu") == torch.device("cpu") and device_problems("cpu", "eval.device") == []
    assert device_problems("cuda:x", "eval.device") == [
        "eval.device: 'cuda:x' is not one of auto, cpu, cuda, mps (or cuda:N)"
    ]
    record = describe_device(torch.device("cpu"))
    assert record["device"] == "cpu" and record["threads"] >= 1 and record["cpu_capability"]


def test_trackers_are_checked_before_any_work(tiny_recipe, monkeypatch):
    import importlib.util

    from langadapt.errors import ConfigError

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    with pytest.raises(ConfigError, match=r"train.log_to: wandb is not installed: pip install 'langadapt\[wandb\]'"):
        tiny_recipe(train={"log_to": ["wandb"]})
    with pytest.raises(ConfigError, match="train.log_to: 'mlflow' is not one of tensorboard, wandb"):
        tiny_recipe(train={"log_to": ["mlflow"]})


def test_metrics_go_to_tensorboard_too(tmp_path):
    pytest.importorskip("tensorboard")
    from langadapt.train.tracking import MetricsLog

    log = MetricsLog(tmp_path / "metrics.jsonl", ("tensorboard",), "tiny", {})
    log.write({"step": 1, "loss": 2.5, "lr": 0.001})
    log.close()
    assert (tmp_path / "metrics.jsonl").read_text().startswith('{"step": 1')
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))


def _without_package(monkeypatch, name):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == name else real(n, *a))


def _with_package(monkeypatch, name):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: real("json") if n == name else real(n, *a))


def test_qlora_without_bitsandbytes_names_the_install_command(tiny_recipe, monkeypatch):
    from langadapt.errors import ConfigError

    _without_package(monkeypatch, "bitsandbytes")
    with pytest.raises(ConfigError, match=r"qlora: needs the package bitsandbytes: pip install 'langadapt\[qlora\]'"):
        tiny_recipe(train={"method": "qlora"})


def test_qlora_without_a_gpu_says_so(tiny_recipe, monkeypatch):
    from langadapt.errors import ConfigError

    _with_package(monkeypatch, "bitsandbytes")
    with pytest.raises(ConfigError) as cpu:
        tiny_recipe(train={"method": "qlora", "device": "cpu"})
    assert cpu.value.problems == [
        "train.method qlora: needs a CUDA GPU (bitsandbytes' 4-bit NF4 kernels) and train.device is not cuda; "
        "use train.method: lora"
    ]
    if torch.cuda.is_available():
        assert tiny_recipe(train={"method": "qlora"}).train.method == "qlora"
    else:
        with pytest.raises(
            ConfigError, match="qlora: needs a CUDA GPU .* torch sees none here; use train.method: lora"
        ):
            tiny_recipe(train={"method": "qlora"})


def test_qlora_is_refused_inside_phases_and_on_an_unquantised_model(tiny_recipe, tiny_model, monkeypatch):
    from transformers import AutoModelForCausalLM

    from langadapt.errors import ConfigError

    _with_package(monkeypatch, "bitsandbytes")
    phases = [{"method": "new-rows", "max_steps": 1}, {"method": "qlora", "max_steps": 1}]
    with pytest.raises(ConfigError, match=r"train.phases\[1\].method: qlora loads the base in 4 bits"):
        tiny_recipe(train={"phases": phases})
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    with pytest.raises(ConfigError, match="qlora: the base model is not loaded in 4 bits"):
        train.TRAIN_METHODS.get("qlora")(model, TrainConfig(), [])


def test_micro_batch_left_at_zero_bounds_the_tokens_of_a_cpu_pass():
    from langadapt.train.loop import CPU_MICRO_TOKENS, auto_micro_batch

    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    for precision, budget in CPU_MICRO_TOKENS.items():  # the largest pass that divides the rows and fits the budget
        for rows in range(1, 17):
            for seq_len in (16, 48, 100, 128, 256, 512, 1024, 4096):
                micro = auto_micro_batch(rows, seq_len, cpu, precision)
                fits = [d for d in range(1, rows + 1) if rows % d == 0 and d * seq_len <= budget]
                assert micro == max(fits, default=1), (precision, rows, seq_len, micro)
    assert auto_micro_batch(8, 256, cpu) == 2  # the demo: 8 x 256 tokens per step, passes of 2 sequences
    assert auto_micro_batch(6, 256, cpu) == 2 and auto_micro_batch(5, 256, cpu) == 1  # always divides the rows
    assert auto_micro_batch(8, 2048, cpu) == 1  # a sequence longer than the budget goes alone
    assert auto_micro_batch(4, 32, cpu) == 4  # a small batch runs whole
    assert auto_micro_batch(8, 256, gpu) == 8  # a GPU takes the whole batch
    assert auto_micro_batch(8, 256, cpu, "bf16") == 4  # bf16 activations are half the size: passes twice as long
    assert auto_micro_batch(8, 256, gpu, "bf16") == 8


def test_chunked_loss_is_exact_where_the_target_probability_underflows():
    hidden = torch.eye(4, 8, requires_grad=True)
    weight = torch.zeros(20, 8)
    weight[:4, :4] = torch.eye(4) * 120.0  # each token predicts itself with logit 120, all others 0
    targets = torch.tensor([0, 5, 2, 7])  # tokens 1 and 3 target a logit 120 below the top: p = e^-120
    loss = objectives.linear_cross_entropy(hidden, weight, targets, chunk=3)
    ref = torch.nn.functional.cross_entropy(hidden @ weight.T, targets, reduction="none")
    assert torch.isfinite(loss).all() and loss[1].item() == pytest.approx(120.0, abs=1e-3)
    assert torch.allclose(loss, ref, atol=1e-4)


@pytest.mark.parametrize("attention", ["eager", "sdpa"])
def test_dropout_off_makes_training_mode_deterministic(tiny_encoder, tmp_path, attention):
    """train.dropout 0 reaches dropout modules and the rates fused attention kernels read; the config keeps its own."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from langadapt.models.loading import load_model
    from langadapt.train.loop import set_dropout

    torch.manual_seed(0)
    llama = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=64,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            attention_dropout=0.5,
            attn_implementation=attention,
        )
    )
    encoder = load_model(str(tiny_encoder))
    encoder.set_attn_implementation(attention)
    ids = torch.tensor([[1, 5, 17, 33, 60, 61, 2]])
    for model in (encoder, llama):
        rates = {k: v for k, v in model.config.to_dict().items() if "dropout" in k}
        with torch.no_grad():
            model.train()
            assert not torch.equal(model(input_ids=ids).logits, model(input_ids=ids).logits)  # dropout is on
            assert set_dropout(model, 0.0) > 0
            noisy = [model(input_ids=ids).logits for _ in range(2)]
            model.eval()
            torch.testing.assert_close(noisy[0], model(input_ids=ids).logits)
            torch.testing.assert_close(noisy[1], noisy[0])
        assert {k: v for k, v in model.config.to_dict().items() if "dropout" in k} == rates


def _tiny_granite(logits_scaling: float):
    from transformers import GraniteConfig, GraniteForCausalLM

    torch.manual_seed(0)
    config = GraniteConfig(
        vocab_size=300,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        logits_scaling=logits_scaling,
        embedding_multiplier=12.0,  # as Granite's configs: logits large enough that the scaling matters
    )
    return GraniteForCausalLM(config)


def test_the_loss_is_the_models_own_granite_logits_scaling_included():
    """Granite divides its logits by config.logits_scaling after the head: the fused head alone would not."""
    ids = torch.randint(0, 300, (2, 12), generator=torch.Generator().manual_seed(3))
    # a model nobody prepared is checked on its first loss
    fresh = _tiny_granite(logits_scaling=4.0)
    torch.testing.assert_close(objectives.clm_loss(fresh, ids), objectives.plain_clm_loss(fresh, ids))
    model = _tiny_granite(logits_scaling=4.0)
    plain = objectives.plain_clm_loss(model, ids)
    assert objectives.prepare_loss("clm", model).startswith("plain (on a probe batch the fused head's losses differ")
    torch.testing.assert_close(objectives.clm_loss(model, ids), plain)
    unscaled = objectives.fused_clm_loss(model, ids)  # what the head alone computes: a different loss
    assert (unscaled - plain).abs().max() > 0.05
    # without scaling the same architecture is eligible for the fused loss
    assert objectives.prepare_loss("clm", _tiny_granite(logits_scaling=1.0)) == "fused"


def test_a_plain_llama_trains_with_the_fused_loss_and_the_summary_says_which(tiny_recipe):
    from test_train import _prepare

    from langadapt.rundir import read_json

    recipe = tiny_recipe(train={"max_steps": 1})
    rd = _prepare(recipe)
    train.run(recipe, rd)
    assert read_json(rd.path("train") / "summary.json")["loss"] == "fused"
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(rd.path("train") / "final")
    wrapped = train.TRAIN_METHODS.get("lora")(model, TrainConfig(lora_rank=4, lora_targets=("q_proj", "lm_head")), [])
    assert objectives.prepare_loss("clm", wrapped).startswith("plain (the output head is a ")  # LoRA on the head
