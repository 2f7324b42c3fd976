"""Tokenizer extension: old ids fixed, new tokens reachable and used, text round-trips."""

from __future__ import annotations

import json

import pytest
from conftest import english_lines, target_docs

from langadapt import corpus, tokenizer
from langadapt.rundir import RunDir, read_json
from langadapt.tokenizer import bpe


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
    assert metrics["added_tokens"] == 40 == len(new) - len(base)
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
    assert lines[0].startswith("id\ttoken") and len(lines) == 41


def test_text_the_base_handles_is_not_retokenised(extended):
    _, _, base, new = extended
    for line in english_lines(30, seed=5):
        assert new(line)["input_ids"] == base(line)["input_ids"]


def test_select_merges_keeps_intermediates():
    from collections import Counter

    cands = [("a", "b", "ab"), ("ab", "c", "abc"), ("x", "y", "xy")]
    usage = Counter({"abc": 10, "xy": 5, "ab": 0})
    assert bpe.select_merges(cands, usage, 2) == [("a", "b", "ab"), ("ab", "c", "abc")]
    assert bpe.select_merges(cands, usage, 1) == [("x", "y", "xy")]


def test_keep_method_is_the_identity(tiny_recipe):
    recipe = tiny_recipe(tokenizer={"method": "keep"})
    rd = RunDir(recipe.resolved_run_dir)
    corpus.run(recipe, rd)
    tokenizer.run(recipe, rd)
    metrics = read_json(rd.path("tokenizer") / "metrics.json")
    assert metrics["added_tokens"] == 0 and metrics["vocab_size"] == metrics["base_vocab_size"]
