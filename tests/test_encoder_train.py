"""Encoder adaptation end to end on tiny models: mlm, adapter methods, phases, saving and reloading."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import tiny_recipe_dict

from langadapt.evaluate.samples import ENCODER_REASON

ENCODER_TRAIN = {
    "objective": "mlm",
    "method": "seq-bn-inv",
    "max_steps": 4,
    "seq_len": 32,
    "batch_size": 4,
    "warmup_steps": 1,
    "save_every": 2,
    "lr": 5e-3,
    "adapter_reduction_factor": 4,
}


def encoder_recipe(corpus_files, model_dir: Path, run_dir: Path, **train):  # type: ignore[no-untyped-def]
    from langadapt.recipe import Recipe

    data = tiny_recipe_dict(
        corpus_files, model_dir, run_dir, tokenizer={"method": "keep"}, train={**ENCODER_TRAIN, **train}
    )
    return Recipe.from_dict(data)


def _outputs(model, ids):  # type: ignore[no-untyped-def]
    import torch

    with torch.no_grad():
        return model.eval()(input_ids=ids).logits


@pytest.fixture(scope="module")
def prepared(corpus_files, tiny_encoder, tmp_path_factory):  # type: ignore[no-untyped-def]
    """corpus, tokenizer and init stages once; each test trains in a copy."""
    from langadapt.pipeline import run

    folder = tmp_path_factory.mktemp("encoder-run") / "run"
    run(encoder_recipe(corpus_files, tiny_encoder, folder), stages=("corpus", "tokenizer", "init"))
    return folder


def _train_in_copy(prepared, corpus_files, tiny_encoder, folder, **train):  # type: ignore[no-untyped-def]
    import shutil

    from langadapt.pipeline import run

    shutil.copytree(prepared, folder)
    recipe = encoder_recipe(corpus_files, tiny_encoder, folder, **train)
    run(recipe, stages=("train",))
    return recipe


@pytest.mark.parametrize("method", ["seq-bn", "seq-bn-inv", "double-seq-bn", "lora", "head"])
def test_each_method_trains_saves_and_reloads_with_identical_outputs(
    method, prepared, corpus_files, tiny_encoder, tmp_path
):
    import torch

    from langadapt.models.loading import load_model
    from langadapt.rundir import read_json

    _train_in_copy(prepared, corpus_files, tiny_encoder, tmp_path / "run", method=method, max_steps=2)
    out = tmp_path / "run" / "train"
    summary = read_json(out / "summary.json")
    assert 0 < summary["trainable_parameters"] < summary["total_parameters"]
    final = load_model(str(out / "final"))
    base = load_model(str(tmp_path / "run" / "model-init"))
    ids = torch.tensor([[0, 5, 17, 33, 60, 61, 2]])
    assert not torch.allclose(_outputs(final, ids), _outputs(base, ids))  # training changed something
    if method == "head":
        return
    # the standard AdapterHub folder, loaded with the adapters library onto the initialised model
    import adapters

    assert (out / "adapters" / "langadapt" / "adapter_config.json").is_file()
    adapters.init(base)
    name = base.load_adapter(str(out / "adapters" / "langadapt"))
    base.set_active_adapters(name)
    if method == "lora":  # merged into final/
        assert not (out / "final" / "adapters").exists()
    else:  # cannot be merged: travels with final/ and load_model reattaches it
        assert (out / "final" / "adapters" / "langadapt" / "adapter_config.json").is_file()
    head = {k: v for k, v in final.state_dict().items() if k.startswith("lm_head.") and "decoder.weight" not in k}
    base.load_state_dict(head, strict=False)  # the head trained beside the adapter (train.train_head)
    torch.testing.assert_close(_outputs(base, ids), _outputs(final, ids), rtol=1e-5, atol=1e-5)


def test_two_phases_resume_across_the_boundary_exactly(prepared, corpus_files, tiny_encoder, tmp_path):
    """Interrupted right after phase 1, the re-run skips it and ends where an uninterrupted run ends."""
    import shutil

    import torch

    import langadapt.train.phases as phases_module
    from langadapt.models.loading import load_model
    from langadapt.pipeline import run
    from langadapt.rundir import read_json

    phases = [
        {"name": "warmup", "method": "head", "max_steps": 2, "lr": 1e-2},
        {"method": "seq-bn-inv", "max_steps": 2},
    ]
    straight = _train_in_copy(prepared, corpus_files, tiny_encoder, tmp_path / "a", phases=phases)

    shutil.copytree(prepared, tmp_path / "b")
    interrupted = encoder_recipe(corpus_files, tiny_encoder, tmp_path / "b", phases=phases)
    real_loop, calls = phases_module.train_loop, []

    def stop_in_phase_two(model, streams, target, replay, recipe, out, **kw):  # type: ignore[no-untyped-def]
        calls.append(out.name)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_loop(model, streams, target, replay, recipe, out, **kw)

    phases_module.train_loop = stop_in_phase_two
    try:
        with pytest.raises(KeyboardInterrupt):
            run(interrupted, stages=("train",))
    finally:
        phases_module.train_loop = real_loop
    assert calls == ["1-warmup", "2-seq-bn-inv"]
    run(interrupted, stages=("train",))

    a, b = (tmp_path / r / "train" for r in ("a", "b"))

    def losses(folder: Path) -> list[tuple]:
        rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
        return [(r["step"], r["phase"], r["loss"]) for r in rows]

    assert [(step, phase) for step, phase, _ in losses(b)] == [
        (1, "warmup"),
        (2, "warmup"),
        (3, "seq-bn-inv"),
        (4, "seq-bn-inv"),
    ]
    assert losses(a) == losses(b)
    summary = read_json(b / "summary.json")
    assert [p["phase"] for p in summary["phases"]] == ["warmup", "seq-bn-inv"] and summary["steps"] == 4
    ids = torch.tensor([[0, 5, 17, 33, 60, 61, 2]])
    torch.testing.assert_close(_outputs(load_model(str(a / "final")), ids), _outputs(load_model(str(b / "final")), ids))

    # evaluation picks pseudo bits per byte for an encoder
    run(straight, stages=("eval",))
    results = read_json(tmp_path / "a" / "eval" / "results.json")
    assert {r["metric"] for r in results["bits_per_byte"].values()} == {"pseudo_bits_per_byte"}
    assert "base_head_created" not in results  # this base ships its MLM head: no caveat in the summary
    # a masked LM continues no text: no generation samples, and the results (then the report) say why
    assert results["samples"] == {"none": ENCODER_REASON} and "base: samples" not in results["seconds"]


def test_all_embeddings_train_beside_adapters_in_a_later_phase(prepared, corpus_files, tiny_encoder, tmp_path):
    """MAFT-style: head warm-up on a frozen body, then adapters with the whole (tied) embedding matrix."""
    from safetensors.torch import load_file

    from langadapt.rundir import read_json

    phases = [
        {"name": "warmup", "method": "head", "max_steps": 2, "lr": 1e-2},
        {"method": "seq-bn-inv", "max_steps": 2, "embeddings": "all"},
    ]
    _train_in_copy(prepared, corpus_files, tiny_encoder, tmp_path / "run", phases=phases)
    out = tmp_path / "run" / "train"
    before = load_file(tmp_path / "run" / "model-init" / "model.safetensors")
    after = load_file(out / "final" / "model.safetensors")
    key = next(k for k in after if k.endswith("word_embeddings.weight"))
    summary = read_json(out / "summary.json")
    warmup, adapters = summary["phases"]
    assert warmup["trainable_parameters"] < after[key].numel() < adapters["trainable_parameters"]
    rows = after[key].shape[0]
    assert (warmup["embedding_rows_trained"], adapters["embedding_rows_trained"]) == (0, rows)
    assert warmup["embedding_rows"] == adapters["embedding_rows"] == rows and warmup["lr"] == 1e-2
    moved = (before[key] != after[key]).any(dim=1)
    assert moved.float().mean() > 0.5  # rows of old tokens too, not only new ones


def test_encoder_problems_are_reported_at_validation(corpus_files, tiny_encoder, tiny_model, tmp_path):
    from langadapt.errors import ConfigError

    with pytest.raises(ConfigError) as e:
        encoder_recipe(corpus_files, tiny_encoder, tmp_path / "r", objective="clm", seq_len=4096)
    text = str(e.value)
    assert "train.objective: clm does not train an encoder" in text and "train.seq_len: 4096 is beyond" in text
    with pytest.raises(ConfigError) as e:
        encoder_recipe(corpus_files, tiny_model, tmp_path / "r")
    assert "mlm needs an encoder" in str(e.value)
    with pytest.raises(ConfigError) as e:
        encoder_recipe(
            corpus_files,
            tiny_encoder,
            tmp_path / "r",
            phases=[{"method": "seq-bn", "max_steps": 1}, {"method": "head", "max_steps": 1}],
        )
    assert "only the last phase may add them" in str(e.value)


def test_objective_follows_the_model_when_the_recipe_does_not_name_it(
    corpus_files, tiny_encoder, tiny_model, tmp_path, monkeypatch
):
    """`train.objective: auto` (the default): mlm for an encoder, clm for a decoder, GGUF always clm; a hub model
    whose config is not cached is resolved by the preflight; the run's recipe.yaml records the result."""
    import yaml

    from langadapt import pipeline
    from langadapt.recipe import Recipe, field_help

    def recipe(model, **model_keys):  # type: ignore[no-untyped-def]
        data = tiny_recipe_dict(corpus_files, model, tmp_path / "run", tokenizer={"method": "keep"})
        data["model"].update(model_keys)
        assert "objective" not in data["train"]
        return Recipe.from_dict(data)

    encoder = recipe(tiny_encoder)
    assert encoder.train.objective == "mlm" and yaml.safe_load(encoder.to_yaml())["train"]["objective"] == "mlm"
    assert recipe(tiny_model).train.objective == "clm"
    gguf = tmp_path / "gguf"
    gguf.mkdir()
    (gguf / "model.gguf").write_bytes(b"GGUF")
    assert recipe(gguf, gguf_file="model.gguf").train.objective == "clm"
    helps = {key: text for key, _default, text in field_help(Recipe)}
    assert "auto: mlm for an encoder, clm for a decoder" in helps["train.objective"]

    # a hub id offline and not in the cache: validation cannot tell, the preflight reads the config and decides
    hub = recipe("some-org/some-encoder")
    assert hub.train.objective == "auto"
    from transformers import AutoConfig

    monkeypatch.setattr(pipeline, "load_tokenizer", lambda *a: None)
    monkeypatch.setattr(pipeline, "load_config", lambda *a: AutoConfig.from_pretrained(tiny_encoder))
    assert pipeline.preflight(hub).train.objective == "mlm"


def test_adapters_on_an_unsupported_architecture_or_without_the_library_are_refused(
    corpus_files, tmp_path, monkeypatch
):
    """Validation names both problems before any corpus work; training without the library names the install."""
    import sys

    import torch
    from conftest import _encoder_tokenizer
    from transformers import ConvBertConfig, ConvBertForMaskedLM

    import langadapt.train.adapters as adapters_module
    from langadapt.errors import ConfigError, MissingDependencyError
    from langadapt.train.config import TrainConfig

    tok = _encoder_tokenizer("wordpiece")
    torch.manual_seed(0)
    sizes = dict(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4)
    folder = tmp_path / "convbert"
    ConvBertForMaskedLM(ConvBertConfig(**sizes, embedding_size=32, pad_token_id=0)).save_pretrained(folder)
    tok.save_pretrained(folder)
    with pytest.raises(ConfigError) as e:
        encoder_recipe(corpus_files, folder, tmp_path / "r", method="seq-bn")
    assert "the adapters library does not support convbert; use lora or full" in str(e.value)

    monkeypatch.setattr(adapters_module, "adapters_installed", lambda: False)
    with pytest.raises(ConfigError) as e:
        encoder_recipe(corpus_files, folder, tmp_path / "r", method="seq-bn-inv")
    assert "needs the adapters library: pip install 'langadapt[adapters]'" in str(e.value)

    monkeypatch.setitem(sys.modules, "adapters", None)  # import adapters now fails as if it were not installed
    with pytest.raises(MissingDependencyError, match=r"langadapt\[adapters\]"):
        adapters_module.add_adapter(ConvBertForMaskedLM(ConvBertConfig(**sizes)), "seq-bn", TrainConfig(), [])


def test_head_with_all_embeddings_trains_the_matrix_and_the_head_alone(prepared, corpus_files, tiny_encoder, tmp_path):
    """bench/encoder.py's second baseline: the body frozen, the MLM head and every embedding row trained."""
    import torch
    from safetensors.torch import load_file

    _train_in_copy(prepared, corpus_files, tiny_encoder, tmp_path / "run", method="head", embeddings="all")
    before = load_file(tmp_path / "run" / "model-init" / "model.safetensors")
    after = load_file(tmp_path / "run" / "train" / "final" / "model.safetensors")
    assert before.keys() == after.keys()
    moved = {k for k in after if not torch.equal(before[k], after[k])}
    embeddings = next(k for k in after if k.endswith("word_embeddings.weight"))
    assert embeddings in moved and (before[embeddings] != after[embeddings]).any(dim=1).float().mean() > 0.5
    assert any(k.startswith("lm_head.") for k in moved)  # the head's own transform and bias
    body = {k for k in after if ".encoder.layer." in k}
    assert body and not body & moved  # the body stays as it was


def test_heldout_figure_during_mlm_training_is_pseudo_bits_per_byte(prepared, corpus_files, tiny_encoder, tmp_path):
    """With objective mlm, train.eval_every logs the eval stage's metric under its name, and stops on it."""
    from langadapt.documents import read_texts
    from langadapt.models.loading import load_model, load_tokenizer
    from langadapt.rundir import RunDir, read_json
    from langadapt.scoring.pppl import score

    evals = {"eval_every": 1, "eval_tokens": 96}
    recipe = _train_in_copy(prepared, corpus_files, tiny_encoder, tmp_path / "run", method="head", max_steps=3, **evals)
    out = tmp_path / "run" / "train"
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert not any(k.startswith("bpb_") for r in rows for k in r)  # no figure under a name it does not have
    assert all({"pseudo_bpb_nya", "pseudo_bpb_eng"} <= r.keys() for r in rows)
    # the last figure is what the eval stage's scorer gives the trained model on the same documents
    from langadapt.train.data import heldout_documents

    final, tok = load_model(str(out / "final")), load_tokenizer(str(out / "final"))
    heldout = heldout_documents(read_texts(RunDir(tmp_path / "run"), "nya", "heldout"), tok, 96)
    expected = score(final, tok, heldout, recipe.eval)["bits_per_byte"]
    assert rows[-1]["pseudo_bpb_nya"] == pytest.approx(expected, abs=2e-4)

    # early stopping decides on that figure: a learning rate far too high stops at the first evaluation without gain
    diverging = _train_in_copy(
        prepared,
        corpus_files,
        tiny_encoder,
        tmp_path / "diverging",
        method="full",
        max_steps=8,
        lr=1.0,
        early_stopping_patience=1,
        **evals,
    )
    rows = [json.loads(line) for line in (tmp_path / "diverging" / "train" / "metrics.jsonl").read_text().splitlines()]
    stop = read_json(tmp_path / "diverging" / "train" / "summary.json")["stopped_early_at_step"]
    figures = [r["pseudo_bpb_nya"] for r in rows]
    assert diverging.train.objective == "mlm" and len(rows) == stop < 8
    assert figures[-1] >= min(figures[:-1]) and all(f < min(figures[:i]) for i, f in enumerate(figures[:-1]) if i)


def test_init_comparison_of_an_encoder_is_headed_pseudo_bits_per_byte(corpus_files, tiny_encoder, tmp_path):
    from langadapt.init.compare import compare
    from langadapt.models.loading import load_model, load_tokenizer

    recipe = encoder_recipe(corpus_files, tiny_encoder, tmp_path / "run")
    model, tok = load_model(str(tiny_encoder)), load_tokenizer(str(tiny_encoder))
    rows = compare(recipe, model, tok, ["the king said good words to the river"], lambda m: (model, {}), 0.0)
    assert "nya held-out pseudo bits/byte" in rows[0] and not any(k.endswith(" held-out bits/byte") for k in rows[0])
