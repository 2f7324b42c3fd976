"""Tokenizer extension: old ids fixed, new tokens reachable and used, text round-trips."""

from __future__ import annotations

import json

import pytest
from conftest import english_lines, target_docs

from langadapt.corpus import flow as corpus
from langadapt.rundir import RunDir, read_json
from langadapt.tokenizer import bpe
from langadapt.tokenizer import flow as tokenizer


@pytest.fixture
def extended(tiny_recipe):
    recipe = tiny_recipe()
    rd = RunDir(recipe.resolved_run_dir)
    corpus.run(recipe, rd)
    tokenizer.run(recipe, rd)
    from transformers import AutoTokenizer

    base = AutoTokenizer.from_pretrained(recipe.model.base)
    new = AutoTokenizer.from_pretrained(rd.path("tokenizer"))
    return recipe, rd, base, new


def test_reference_bpe_matches_the_library(tiny_model):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    state = json.loads(tok.backend_tokenizer.to_str())
    ranks = {bpe._merge_pair(m): i for i, m in enumerate(state["model"]["merges"])}
    for word in {w for line in english_lines(20) + [d["text"] for d in target_docs()[:5]] for w in line.split()}:
        pretoken = "Ġ" + word
        expected = tok.convert_ids_to_tokens(tok(" " + word, add_special_tokens=False)["input_ids"])
        assert bpe.bpe_pieces(pretoken, ranks) == expected


def test_extension_keeps_old_ids_and_adds_used_tokens(extended):
    recipe, rd, base, new = extended
    metrics = read_json(rd.path("tokenizer") / "metrics.json")
    assert 0 < metrics["added_tokens"] == len(new) - len(base) <= 40
    old_vocab = base.get_vocab()
    assert all(new.get_vocab()[t] == i for t, i in old_vocab.items())
    assert metrics["new_token_ids"] == list(range(len(base), len(new)))
    text = target_docs()[0]["text"]
    ids = new(text, add_special_tokens=False)["input_ids"]
    assert any(i >= len(base) for i in ids)
    assert new.decode(ids) == text
    nya = metrics["heldout"]["nya"]
    assert nya["adapted"]["fertility"] < nya["base"]["fertility"]
    assert nya["adapted"]["bytes_per_token"] > nya["base"]["bytes_per_token"]
    lines = (rd.path("tokenizer") / "new_tokens.tsv").read_text().splitlines()
    assert lines[0].startswith("id\ttoken") and len(lines) == metrics["added_tokens"] + 1


def test_text_the_base_handles_is_not_retokenised(extended):
    _, _, base, new = extended
    for line in english_lines(30, seed=5):
        assert new(line)["input_ids"] == base(line)["input_ids"]


def test_select_keeps_the_parts_a_token_is_built_from():
    from collections import Counter

    from langadapt.tokenizer.extend import Candidate, select, without

    cands = [Candidate("ab", ("a", "b"), None), Candidate("abc", ("ab", "c"), None), Candidate("xy", ("x", "y"), None)]
    usage = Counter({"abc": 10, "xy": 5, "ab": 0})
    assert [c.token for c in select(cands, usage, 2)] == ["ab", "abc"]
    assert [c.token for c in select(cands, usage, 1)] == ["xy"]
    assert [c.token for c in without(cands, {"ab"})] == ["xy"]  # dropping a part drops what is built from it


def test_keep_method_is_the_identity(tiny_recipe):
    recipe = tiny_recipe(tokenizer={"method": "keep"})
    rd = RunDir(recipe.resolved_run_dir)
    corpus.run(recipe, rd)
    tokenizer.run(recipe, rd)
    metrics = read_json(rd.path("tokenizer") / "metrics.json")
    assert metrics["added_tokens"] == 0 and metrics["vocab_size"] == metrics["base_vocab_size"]


def test_a_base_no_method_can_rewrite_is_refused_before_any_work(corpus_files, tmp_path):
    from conftest import save_tiny_llama, tiny_recipe_dict
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from langadapt.errors import ConfigError
    from langadapt.pipeline import run
    from langadapt.recipe import Recipe

    tk = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tk.train_from_iterator(english_lines(50), trainers.WordLevelTrainer(special_tokens=["<s>", "</s>", "<unk>"]))
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    folder = save_tiny_llama(tmp_path / "wordlevel", tok)
    for method in ("extend", "replace", "trim", "translit"):
        recipe = Recipe.from_dict(
            tiny_recipe_dict(corpus_files, folder, tmp_path / "run", tokenizer={"method": method})
        )
        with pytest.raises(ConfigError, match="model is WordLevel; extend, replace, trim and translit support"):
            run(recipe)
        assert not (tmp_path / "run" / "corpus").exists()


def test_tokenizer_options_are_all_reported_at_once(corpus_files, tiny_model, tmp_path):
    from conftest import tiny_recipe_dict

    from langadapt.errors import ConfigError
    from langadapt.recipe import Recipe

    bad = {
        "method": "extnd",
        "min_frequency": 0,
        "trim_min_count": 0,
        "translit_init": "median",
        "parity_target": {"path": str(corpus_files["target"]), "language": "nya"},
        "parity_max_pairs": 0,
    }
    with pytest.raises(ConfigError) as e:
        Recipe.from_dict(tiny_recipe_dict(corpus_files, tiny_model, tmp_path / "run", tokenizer=bad))
    problems = "\n".join(e.value.problems)
    for expected in (
        "unknown tokenizer-methods 'extnd' (did you mean 'extend'?)",
        "tokenizer.min_frequency",
        "tokenizer.trim_min_count",
        "tokenizer.translit_init: 'median'",
        "give both sides of the parallel text",
        "tokenizer.parity_max_pairs",
    ):
        assert expected in problems


def test_parity_and_byte_fallback_before_and_after_with_the_report_section(tiny_recipe, tmp_path):
    from conftest import ENGLISH

    from langadapt.report import tokenizer_section

    docs = target_docs()
    nya, eng = tmp_path / "par-nya.jsonl", tmp_path / "par-eng.jsonl"
    nya.write_text("".join(json.dumps({"id": d["id"], "text": d["text"]}) + "\n" for d in docs), encoding="utf-8")
    eng.write_text(
        "".join(json.dumps({"id": d["id"], "text": " ".join(ENGLISH[: len(d["text"].split())])}) + "\n" for d in docs),
        encoding="utf-8",
    )
    recipe = tiny_recipe(
        tokenizer={
            "parity_target": {"path": str(nya), "language": "nya"},
            "parity_reference": {"path": str(eng), "language": "eng"},
        }
    )
    rd = RunDir(recipe.resolved_run_dir)
    corpus.run(recipe, rd)
    tokenizer.run(recipe, rd)
    p = read_json(rd.path("tokenizer") / "metrics.json")["parity"]
    from langadapt.documents import read_texts

    heldout = len(read_texts(rd, "nya", "heldout"))  # groups G03 and G07, less what the corpus filters drop
    assert p["pairs_from"] == "heldout" and p["base"]["pairs"] == heldout > 0
    assert p["adapted"]["parity"] < p["base"]["parity"]
    assert p["reference_language"] == "eng" and p["aligned_documents"] == len(docs)
    page = tokenizer_section.render(rd)
    assert "Parity against eng" in page and "byte-fallback rate" in page and "data:image/png" in page


def test_byte_fallback_rate_counts_bytes_standing_for_characters(tiny_model):
    from transformers import AutoTokenizer

    from langadapt.tokenizer.metrics import tokenizer_metrics

    tok = AutoTokenizer.from_pretrained(tiny_model)  # byte-level BPE trained on ASCII text
    assert tokenizer_metrics(tok, ["the man went to the city"])["byte_fallback_rate"] == 0
    text = "the ŵ city 日本"  # the vocabulary has no piece for ŵ (2 UTF-8 bytes) nor for 日 and 本 (3 each)
    n_tokens = len(tok(text, add_special_tokens=False)["input_ids"])
    assert tokenizer_metrics(tok, [text])["byte_fallback_rate"] == pytest.approx(8 / n_tokens)
