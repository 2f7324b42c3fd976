"""Corpus stage: normalisation, filters, dedup, group split, full accounting."""

from __future__ import annotations

import json

import pytest

from langadapt import corpus
from langadapt.documents import read_docs
from langadapt.errors import InputError
from langadapt.recipe import CorpusConfig, SourceConfig
from langadapt.rundir import RunDir, read_json
from langadapt.sources import Doc


def test_normalize():
    assert corpus.normalize("  cafe\u0301\u200b  au\tlait \n\n x ", "NFC") == "café au lait\n\nx"
    assert corpus.normalize("ﬁ", "NFKC") == "fi" and corpus.normalize("ﬁ", "none") == "ﬁ"


def test_clean_filters_and_dedups():
    cfg = CorpusConfig(target=SourceConfig(path="x", language="nya"), min_chars=5, max_chars=20)
    docs = [
        Doc("1", "hello world", "a"),
        Doc("2", "hello  world", "a"),
        Doc("3", "hi", "a"),
        Doc("4", "x" * 30, "b"),
        Doc("5", "   ", "b"),
    ]
    kept, dropped = corpus.clean(docs, cfg)
    assert [d.id for d in kept] == ["1"]
    assert sorted(r for _, r in dropped) == ["duplicate", "empty", "too_long", "too_short"]


def test_heldout_by_fraction_is_stable():
    cfg = CorpusConfig(target=SourceConfig(path="x", language="nya"), heldout_fraction=0.3)
    picks = [g for g in (f"g{i}" for i in range(200)) if corpus.is_heldout(g, cfg)]
    assert 30 < len(picks) < 90 and picks == [g for g in (f"g{i}" for i in range(200)) if corpus.is_heldout(g, cfg)]


def test_stage_accounts_for_every_record(tiny_recipe, corpus_files, tmp_path):
    # add a duplicate and a too-short document to the target
    extra = corpus_files["target"].parent / "target-extra.jsonl"
    lines = corpus_files["target"].read_text().splitlines()
    extra.write_text("\n".join(lines + [lines[0], json.dumps({"text": "tiny", "book": "G01"}), "{broken"]) + "\n")
    recipe = tiny_recipe(corpus={"target": {"path": str(extra), "language": "nya", "group_field": "book"}})
    rd = RunDir(recipe.resolved_run_dir)
    corpus.run(recipe, rd)
    stats = read_json(rd.path("corpus") / "stats.json")
    nya = stats["languages"]["nya"]
    assert nya["records_read"] == len(lines) + 3
    assert nya["dropped"] == {"duplicate": 1, "too_short": 1} and nya["skipped_while_reading"] == {"unparseable": 1}
    assert nya["heldout"]["groups"] == ["G03", "G07"]
    train_groups = {d.group for d in read_docs(rd.path("corpus") / "nya" / "train.parquet")}
    assert not train_groups & {"G03", "G07"}
    dropped = read_docs(rd.path("corpus") / "dropped" / "nya.parquet")
    assert len(dropped) == 2
    assert stats["languages"]["eng"]["heldout"]["groups"] == ["english.txt#0"]


def test_empty_corpus_is_one_clear_error(tiny_recipe, tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n  \nab\n")
    recipe = tiny_recipe(corpus={"target": {"path": str(empty), "language": "nya"}})
    with pytest.raises(InputError, match="no nya documents left") as e:
        corpus.run(recipe, RunDir(recipe.resolved_run_dir))
    assert "too_short" in str(e.value) and "blank" in str(e.value)
    assert not RunDir(recipe.resolved_run_dir).path("corpus").exists()


def test_no_heldout_group_is_an_error(tiny_recipe):
    recipe = tiny_recipe(corpus={"heldout_groups": ["NOPE"]})
    with pytest.raises(InputError, match="no nya documents are held out"):
        corpus.run(recipe, RunDir(recipe.resolved_run_dir))
