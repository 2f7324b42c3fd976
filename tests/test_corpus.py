"""Corpus stage end to end: datatrove passes, full accounting, group split, thresholds.json, resume."""

from __future__ import annotations

import json

import pytest

from langadapt import corpus
from langadapt.documents import read_docs
from langadapt.errors import ConfigError, InputError
from langadapt.recipe import CorpusConfig, Recipe, SourceConfig
from langadapt.rundir import RunDir, read_json


def test_normalize():
    assert corpus.normalize("  cafe\u0301\u200b  au\tlait \n\n x ", "NFC") == "café au lait\n\nx"
    assert corpus.normalize("ﬁ", "NFKC") == "fi" and corpus.normalize("ﬁ", "none") == "ﬁ"


def test_heldout_by_fraction_is_stable_and_never_empty():
    cfg = CorpusConfig(target=SourceConfig(path="x", language="nya"), heldout_fraction=0.3)
    groups = {f"g{i}" for i in range(200)}
    picks = corpus.heldout_groups(groups, cfg)
    assert 30 < len(picks) < 90 and picks == corpus.heldout_groups(groups, cfg)
    assert all(corpus.is_heldout(g, cfg) for g in picks)
    # about a hundred groups and a small fraction: the hash may pick none; one is held out anyway
    small = CorpusConfig(target=SourceConfig(path="x", language="nya"), heldout_fraction=0.001)
    hundred = {f"site{i}.org" for i in range(100)}
    assert len(corpus.heldout_groups(hundred, small)) == 1
    assert corpus.heldout_groups({"only"}, small) == set()


def test_stage_accounts_for_every_record(tiny_recipe, corpus_files):
    # add a duplicate, a too-short document, a broken line and an invalid UTF-8 byte to the target
    extra = corpus_files["target"].parent / "target-extra.jsonl"
    lines = corpus_files["target"].read_text().splitlines()
    bad = json.dumps({"text": lines[5][20:], "book": "G01"}).encode().replace(b"a", b"\xff", 1)
    body = "\n".join(lines + [lines[0], json.dumps({"text": "tiny", "book": "G01"}), "{broken"]).encode()
    extra.write_bytes(body + b"\n" + bad + b"\n")
    recipe = tiny_recipe(corpus={"target": {"path": str(extra), "language": "nya", "group_field": "book"}})
    rd = RunDir(recipe.resolved_run_dir)
    corpus.run(recipe, rd)
    out = rd.path("corpus")
    stats = read_json(out / "stats.json")
    nya = stats["languages"]["nya"]
    assert nya["records_read"] == len(lines) + 4
    assert nya["dropped"]["exact-dedup:duplicate"] == 1 and nya["dropped"]["length:too_short"] == 1
    assert nya["dropped"]["read:unparseable"] == 1
    assert nya["repaired"] == {"invalid_utf8": 1}
    assert nya["kept"] + sum(nya["dropped"].values()) == nya["records_read"]
    for source in stats["sources"].values():  # balances per source too
        assert source["records"] == source["kept"] + sum(sum(r.values()) for r in source["dropped"].values())
    assert nya["heldout"]["groups"] == ["G03", "G07"]
    train_groups = {d.group for d in read_docs(out / "nya" / "train.parquet")}
    assert not train_groups & {"G03", "G07"}
    dropped = read_docs(out / "dropped" / "nya.parquet")
    assert len(dropped) == sum(nya["dropped"].values())
    steps = nya["steps"]
    assert steps[0]["documents_in"] == nya["records_read"] and steps[-1]["documents_out"] == nya["kept"]
    thresholds = read_json(out / "thresholds.json")["languages"]["nya"]
    assert thresholds["language_id"]["supported"] and thresholds["script"] == "Latn"
    entry = thresholds["thresholds"]["min_mean_word_length"]
    assert {"value", "statistic", "english", "how", "reference"} <= set(entry)
    assert not (out / "work").exists()  # intermediate files are removed once the stage is done


def test_thresholds_can_be_set_and_steps_switched_off(tiny_recipe):
    recipe = tiny_recipe(
        corpus={
            "disable": ["lid", "near-dedup", "pii", "line-dedup"],
            "quality": {"thresholds": {"min_words": 1000}},
            "heldout_groups": ["G03"],
        }
    )
    with pytest.raises(InputError, match="no nya documents left") as e:
        corpus.run(recipe, RunDir(recipe.resolved_run_dir))
    assert "words:min_words" in str(e.value)


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


def test_bad_recipes_fail_at_validation(corpus_files, tiny_model, tmp_path):
    from conftest import tiny_recipe_dict

    not_fasttext = tmp_path / "lid.bin"
    not_fasttext.write_bytes(b"\x00" * 64)
    cases = {
        "lid.model_file: no such file": {"lid": {"model_file": str(tmp_path / "missing.bin")}},
        "is not a fastText model": {"lid": {"model_file": str(not_fasttext)}},
        "unknown filters 'gopher'": {"disable": ["gopher"]},
        "min_words: expected float": {"quality": {"thresholds": {"min_words": "fifty"}}},
        "executor: slurm needs Slurm": {"executor": "slurm"},
        "not an ISO 15924 script": {"lid": {"script": "Latin"}},
    }
    for message, section in cases.items():
        data = tiny_recipe_dict(corpus_files, tiny_model, tmp_path / "run", corpus=section)
        with pytest.raises(ConfigError, match=message):
            Recipe.from_dict(data)
    assert not (tmp_path / "run").exists()  # no work before a valid recipe
