"""train.replay_ratio auto: the fit recovers known curves, the choice rule, and a tiny run that resumes its pilots."""

from __future__ import annotations

import json

import pytest

from langadapt.errors import ConfigError
from langadapt.train.pilots import PowerLaw, choose_ratio, fit_power_law

FULL = 40_000.0


def _curves(law: PowerLaw, ratios=(0.0, 0.1, 0.25, 0.5), steps=(1, 2, 3, 4)):  # type: ignore[no-untyped-def]
    return [(k * 1000.0, 1.0 - r, law.change(k * 1000.0, 1.0 - r)) for r in ratios for k in steps]


@pytest.mark.parametrize("base, per_share, exponent", [(-0.02, 0.1, 0.5), (0.01, 0.3, 0.2), (0.05, 0.0, 1.3)])
def test_the_fit_recovers_a_known_law(base, per_share, exponent):
    truth = PowerLaw(base, per_share, exponent, FULL)
    fit = fit_power_law(_curves(truth), FULL)
    assert fit.base == pytest.approx(base, abs=1e-4)
    assert fit.per_share == pytest.approx(per_share, abs=1e-4)
    assert fit.exponent == pytest.approx(exponent, abs=1e-3)
    assert fit.rmse < 1e-6
    # and its prediction at the full schedule, ten times the pilots' tokens
    assert fit.change(FULL, 0.8) == pytest.approx(truth.change(FULL, 0.8), rel=1e-3, abs=1e-6)


def test_the_fit_tolerates_noise():
    import random

    truth = PowerLaw(-0.01, 0.2, 0.5, FULL)
    rng = random.Random(0)
    noisy = [(t, rho, v + rng.gauss(0, 0.002)) for t, rho, v in _curves(truth, steps=(1, 2, 3, 4, 5, 6))]
    fit = fit_power_law(noisy, FULL)
    assert fit.change(FULL, 0.75) == pytest.approx(truth.change(FULL, 0.75), rel=0.25)


def test_the_choice_is_the_smallest_ratio_whose_drift_is_within_the_tolerance():
    drift = PowerLaw(-0.05, 0.2, 0.5, 1.0)  # drift at the full schedule: -0.05 + 0.2 (1 - r)
    # -0.05 + 0.2 (1 - r) <= 0.1  <=>  r >= 0.25
    ratio, table = choose_ratio(drift, 1.0, 0.1, [0.0, 0.1, 0.25, 0.5])
    assert ratio == pytest.approx(0.25)
    assert table[0]["replay_ratio"] == 0.0 and table[-1]["replay_ratio"] == 0.5 and len(table) == 51
    assert choose_ratio(drift, 1.0, 0.2, [0.0, 0.5])[0] == 0.0  # no replay needed
    assert choose_ratio(drift, 1.0, 0.1, [0.3, 0.5])[0] == 0.3  # never below the pilots' range
    # -0.05 + 0.2 (1 - r) <= 0.01 needs r >= 0.7, beyond the pilots' range
    with pytest.raises(ConfigError, match="forgetting_tolerance: 0.01 .* no replay ratio the pilots cover"):
        choose_ratio(drift, 1.0, 0.01, [0.0, 0.5])


def test_auto_is_validated(tiny_recipe):
    with pytest.raises(ConfigError) as e:
        tiny_recipe(
            train={
                "replay_ratio": "auto",
                "forgetting_tolerance": 0,
                "pilots": {"ratios": [0.2, 1.0], "steps": 2},
            }
        )
    msg = str(e.value)
    assert "train.pilots.ratios: give at least 2 distinct replay ratios, each in [0, 1)" in msg
    assert "train.pilots.steps: 0 (a tenth of the schedule) or at least 4" in msg
    assert "train.forgetting_tolerance: must be > 0" in msg
    with pytest.raises(ConfigError, match="'often' is neither a fraction"):
        tiny_recipe(train={"replay_ratio": "often"})


@pytest.mark.slow
def test_a_tiny_auto_run_resumes_its_pilots_and_counts_their_compute(tiny_recipe, tmp_path, monkeypatch):
    from langadapt.pipeline import run
    from langadapt.train import pilots

    recipe = tiny_recipe(
        train={
            "replay_ratio": "auto",
            "forgetting_tolerance": 100.0,  # any ratio is within it: the choice is the smallest pilot ratio
            "pilots": {"ratios": [0.1, 0.5], "steps": 4},
            "max_steps": 8,
        }
    )
    calls = []
    real = pilots.train_loop

    def interrupted(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(args[4].train.replay_ratio)
        if len(calls) == 2:
            raise KeyboardInterrupt  # the second pilot is interrupted
        return real(*args, **kwargs)

    monkeypatch.setattr(pilots, "train_loop", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run(recipe, stages=("corpus", "tokenizer", "init", "train"))
    monkeypatch.setattr(pilots, "train_loop", lambda *a, **k: (calls.append(a[4].train.replay_ratio), real(*a, **k))[1])
    run(recipe, stages=("corpus", "tokenizer", "init", "train"))
    assert calls == [0.1, 0.5, 0.5]  # the finished pilot was not trained again

    train_dir = tmp_path / "run" / "train"
    choice = json.loads((train_dir / "pilots" / "choice.json").read_text())
    summary = json.loads((train_dir / "summary.json").read_text())
    assert choice["chosen_replay_ratio"] == 0.1 == summary["replay_ratio"]
    assert len(choice["points"]["replay"]) == 8  # 4 measurements after the start in each of 2 pilots
    rows = [json.loads(x) for x in (train_dir / "pilots" / "ratio-0.100" / "metrics.jsonl").read_text().splitlines()]
    assert rows[0]["step"] == 0 and "bpb_eng" in rows[0] and "loss" not in rows[0]  # measured before training
    assert not list((train_dir / "pilots").glob("ratio-*/checkpoints"))  # a finished pilot keeps only its curves
    assert summary["pilot_flops"] == pytest.approx(sum(p["flops"] for p in choice["pilots"]))
    assert summary["pilot_flops"] > 0 and summary["total_flops"] == pytest.approx(
        summary["training_flops"] + summary["pilot_flops"]
    )
    # each pilot trains 4 steps of 4 x 32 tokens, half the run's 8 steps: both together cost what the run does
    assert summary["pilot_flops"] == pytest.approx(summary["training_flops"], rel=1e-6)


def test_the_report_shows_the_pilots_the_choice_and_their_compute():
    from langadapt.report.flow import pilots_html

    drift = PowerLaw(-0.05, 0.2, 0.5, FULL)
    gain = PowerLaw(0.0, 0.5, 0.5, FULL)
    ratio, table = choose_ratio(drift, FULL, 0.1, [0.0, 0.5])
    for row in table:
        row["predicted_target_gain"] = gain.change(FULL, 1 - row["replay_ratio"])
    choice = {
        "chosen_replay_ratio": ratio,
        "forgetting_tolerance": 0.1,
        "metric": "bpb",
        "target": "nya",
        "replay": "eng",
        "schedule_tokens": FULL,
        "pilot_steps": 4,
        "pilots": [{"replay_ratio": 0.0, "steps": 4, "flops": 1e9}, {"replay_ratio": 0.5, "steps": 4, "flops": 1e9}],
        "points": {"replay": _curves(drift, ratios=(0.0, 0.5)), "target": _curves(gain, ratios=(0.0, 0.5))},
        "fit": {"replay_drift": drift.record(), "target_gain": gain.record()},
        "predictions": table,
    }
    page = pilots_html({"training_flops": 4e9, "pilot_flops": 2e9, "total_flops": 6e9, "pilots": choice})
    assert "2e+09 in the replay-ratio pilots, 6e+09 in all" in page
    assert "Chosen: replay ratio 0.25, the smallest" in page and "<img" in page
    assert pilots_html({"training_flops": 4e9, "total_flops": 4e9}).count("<img") == 0
