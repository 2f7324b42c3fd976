"""Several sources per side: the mixing rules against hand-computed shares, the draw, epochs seen, validation."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from langadapt.train.config import MixingConfig
from langadapt.train.mixing import (
    MixPlan,
    Source,
    plan_mix,
    repeat_warnings,
    temperature_shares,
    unimax_shares,
    weight_shares,
)


def test_temperature_shares_are_xlmr_sampling():
    # q = (0.9, 0.1); q^0.5 = (0.9487, 0.3162): p = (0.75, 0.25)
    assert temperature_shares([900, 100], 0.5) == pytest.approx([0.75, 0.25])
    assert temperature_shares([900, 100], 1.0) == pytest.approx([0.9, 0.1])  # by size
    assert temperature_shares([900, 100], 0.0) == pytest.approx([0.5, 0.5])  # uniform
    # a weight multiplies a source's term: 0.9487 x 1 against 0.3162 x 3 = 0.9487
    assert temperature_shares([900, 100], 0.5, [1.0, 3.0]) == pytest.approx([0.5, 0.5])


def test_unimax_caps_small_sources_and_shares_the_rest_uniformly():
    # budget 600 over 3 sources, at most 4 epochs each: 10 tokens -> 200 asked, capped at 40; the 560
    # left is shared by the other two: 280 each, under their caps (400 and 4000)
    assert unimax_shares([10, 100, 1000], 600, 4) == pytest.approx([40 / 600, 280 / 600, 280 / 600])
    # the order of the input does not matter
    assert unimax_shares([1000, 10, 100], 600, 4) == pytest.approx([280 / 600, 40 / 600, 280 / 600])
    # a cap on the second source too: 10 -> 40, then 1,560 / 2 = 780 > 4 x 100 -> 400, the last takes 1,160
    assert unimax_shares([10, 100, 1000], 1600, 4) == pytest.approx([40 / 1600, 400 / 1600, 1160 / 1600])


def test_unimax_with_every_source_capped_shares_the_remainder_by_size():
    # budget 200, 2 epochs at most: 20 and 40 tokens allocated, the 140 left goes 1:2 by size
    assert unimax_shares([10, 20], 200, 2) == pytest.approx([(20 + 140 / 3) / 200, (40 + 280 / 3) / 200])


def test_unimax_weights_share_the_uniform_budget():
    assert unimax_shares([1000, 1000], 400, 4, [3.0, 1.0]) == pytest.approx([0.75, 0.25])
    assert weight_shares([3.0, 1.0]) == pytest.approx([0.75, 0.25])


def _plan(method: str = "weights", replay_ratio: float = 0.25) -> MixPlan:
    sources = [
        Source("a", "nya", "target", 1000, 3.0),
        Source("b", "swh", "target", 1000, 1.0),
        Source("eng", "eng", "replay", 5000),
    ]
    return plan_mix(sources, MixingConfig(method=method), replay_ratio, schedule_tokens=8000)


def test_the_draw_follows_the_shares_and_is_a_function_of_the_step():
    from langadapt.train.data import batch_languages

    plan = _plan()
    counts: Counter[str] = Counter()
    for step in range(2000):
        is_replay = batch_languages(step, 8, 0.25, seed=0)
        rows = plan.row_sources(is_replay, step, seed=0)
        assert all((name == "eng") == r for name, r in zip(rows, is_replay))  # each side draws its own sources
        counts.update(rows)
    n = sum(counts.values())
    assert counts["a"] / n == pytest.approx(0.75 * 0.75, abs=0.015)
    assert counts["b"] / n == pytest.approx(0.75 * 0.25, abs=0.015)
    assert counts["eng"] / n == pytest.approx(0.25, abs=0.015)
    assert plan.row_sources([False] * 8, 17, 3) == plan.row_sources([False] * 8, 17, 3)


def test_the_plan_counts_each_sides_budget():
    plan = _plan()
    # 8,000 tokens: 6,000 for the target side (0.75 / 0.25 of it), 2,000 for the replay side
    assert plan.planned_tokens == pytest.approx({"a": 4500, "b": 1500, "eng": 2000})
    assert plan.planned_epochs() == pytest.approx({"a": 4.5, "b": 1.5, "eng": 0.4})
    rec = plan.record()
    assert rec["method"] == "weights" and [s["name"] for s in rec["sources"]] == ["a", "b", "eng"]


def test_one_source_per_side_makes_no_draw():
    sources = [Source("nya", "nya", "target", 100), Source("eng", "eng", "replay", 100)]
    plan = plan_mix(sources, MixingConfig(), 0.5, 1000)
    assert not plan.mixed and plan.shares == {"nya": 1.0, "eng": 1.0}
    assert plan.record()["method"] == "single source per side"


def test_epochs_seen_count_the_tokens_handed_out():
    import numpy as np

    from langadapt.train.data import TokenStream
    from langadapt.train.tokenised import TokenisedDocuments

    lengths = [5, 9, 3, 7]  # 24 tokens + 4 separators = 28 per epoch
    docs = TokenisedDocuments(np.arange(sum(lengths), dtype=np.int64) + 10, np.cumsum([0, *lengths]))
    stream = TokenStream(docs, tok=None, sep_id=0, seq_len=8, seed=1)
    assert stream.epoch_tokens == 28
    for blocks in range(1, 12):
        stream.next_block()
        assert stream.epochs_seen() == pytest.approx(8 * blocks / 28)
    assert repeat_warnings({"s": stream.epochs_seen()}, 3.0, "seen")  # 88 / 28 = 3.14 epochs
    assert not repeat_warnings({"s": stream.epochs_seen()}, 4.0, "seen")
    assert "train.mixing.warn_epochs (3)" in repeat_warnings({"s": 3.5}, 3.0, "seen")[0]


def _recipe(corpus_files: dict[str, Path], tiny_model: Path, tmp_path: Path, **corpus):  # type: ignore[no-untyped-def]
    from conftest import tiny_recipe_dict

    from langadapt.recipe import Recipe

    data = tiny_recipe_dict(corpus_files, tiny_model, tmp_path / "run")
    data["corpus"].update(corpus)
    return Recipe.from_dict(data)


def test_source_lists_are_validated(corpus_files, tiny_model, tmp_path):
    from langadapt.errors import ConfigError

    nya = {"path": str(corpus_files["target"]), "group_field": "book"}
    with pytest.raises(ConfigError) as e:
        _recipe(
            corpus_files,
            tiny_model,
            tmp_path,
            target=[{**nya, "language": "nya", "weight": 0}, {**nya, "language": "nya"}],
            replay=[{"path": str(corpus_files["replay"]), "language": "nya", "name": "other"}],
        )
    msg = str(e.value)
    assert "corpus.target[0].weight: must be > 0" in msg
    assert "corpus.target[1].name: 'nya' already names corpus.target[0]" in msg
    assert "corpus.replay[0].language: 'nya' is a target language" in msg
    with pytest.raises(ConfigError, match=r"corpus.target\[1\].language: required"):
        _recipe(corpus_files, tiny_model, tmp_path, target=[{**nya, "language": "nya"}, {"path": nya["path"]}])


def test_one_source_keeps_the_fingerprints_and_weights_stay_out_of_the_corpus(corpus_files, tiny_model, tmp_path):
    from langadapt.corpus.flow import corpus_section

    single = _recipe(corpus_files, tiny_model, tmp_path)
    assert corpus_section(single) == single.to_dict()["corpus"]
    assert "weight" not in single.to_dict()["corpus"]["target"]  # one source is a plain source, as before lists
    nya = {"path": str(corpus_files["target"]), "group_field": "book"}
    listed = _recipe(
        corpus_files,
        tiny_model,
        tmp_path,
        target=[{**nya, "language": "nya", "name": "a", "weight": 2}, {**nya, "language": "nya", "name": "b"}],
    )
    assert all("weight" not in s for s in corpus_section(listed)["target"])
    assert listed.corpus.target[0].weight == 2.0 and listed.train.mixing.method == "temperature"


def test_the_report_lists_each_sources_epochs_and_warns():
    from langadapt.report.flow import mix_html

    plan = _plan()
    record = plan.record()
    for row in record["sources"]:
        row["epochs_seen"] = {"a": 30.0, "b": 1.5, "eng": 0.4}[row["name"]]
    record["warnings"] = repeat_warnings({"a": 30.0}, 20.0, "seen")
    page = mix_html({"mix": record})
    assert (
        "<td>a</td><td>target</td><td>nya</td><td>3</td><td>75.0%</td><td>1,000</td><td>4.50</td><td>30.00</td>" in page
    )
    assert "Warning:</b> source &#x27;a&#x27; is seen for 30.0 epochs" in page
    assert mix_html({}) == ""
    from langadapt.report.flow import _languages

    assert _languages("nya", {"mix": record}, "target") == "nya (training also on swh)"
    assert _languages("eng", {"mix": record}, "replay") == "eng" and _languages("eng", {}, "replay") == "eng"


@pytest.mark.slow
def test_a_corpus_of_listed_sources_trains_each_by_its_share(corpus_files, tiny_model, tmp_path):
    import json

    from conftest import target_docs, tiny_recipe_dict

    from langadapt.pipeline import run
    from langadapt.recipe import Recipe

    small = tmp_path / "small.jsonl"
    small.write_text("".join(json.dumps(d) + "\n" for d in target_docs(n_groups=4, seed=5)), encoding="utf-8")
    data = tiny_recipe_dict(corpus_files, tiny_model, tmp_path / "run")
    nya = {"language": "nya", "group_field": "book"}
    data["corpus"]["target"] = [
        {**nya, "path": str(corpus_files["target"]), "name": "big"},
        {**nya, "path": str(small), "name": "small", "weight": 3},
    ]
    data["train"].update(max_steps=6, mixing={"method": "weights", "warn_epochs": 0.1})
    run(Recipe.from_dict(data), stages=("corpus", "tokenizer", "init", "train"))
    summary = json.loads((tmp_path / "run" / "train" / "summary.json").read_text())
    rows = {s["name"]: s for s in summary["mix"]["sources"]}
    assert rows["big"]["share_of_side"] == pytest.approx(0.25) and rows["small"]["share_of_side"] == pytest.approx(0.75)
    assert rows["small"]["tokens"] < rows["big"]["tokens"] and rows["small"]["epochs_seen"] > rows["big"]["epochs_seen"]
    assert set(summary["streams"]) == {"big", "small", "eng"}
    # every training token is some source's: the tokens handed out add up to the steps' rows
    assert sum(summary["tokens"].values()) == 6 * 4 * 32
    assert any("'small' is seen for" in w for w in summary["mix"]["warnings"])
