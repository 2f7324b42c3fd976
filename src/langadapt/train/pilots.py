"""`train.replay_ratio: auto`: short pilot runs at several replay ratios, a fit of their held-out curves, the choice.

The question is the one the CMR paper (Gu et al. 2024, "CMR Scaling Law: Predicting Critical
Mixture Ratios for Continual Pre-training of Language Models") asks: the largest share of new
(target-language) data whose loss on the old (source) language stays within a tolerance.
Like the paper, the choice comes from short runs and a power law in the mixture ratio and the
training tokens; the law fitted here is a simpler one of our own, not the paper's
parametrisation:

    source drift(T, rho) = bpb(T) - bpb(0) = (u + v * rho) * (T / T_full)^c
    target gain(T, rho)  = bpb(0) - bpb(T) = (u' + v' * rho) * (T / T_full)^c'

with rho the target share (1 - replay ratio), T the tokens trained and T_full the full schedule's:
the rate at which a mixture's tokens move a language's loss is the mixture of the rates of its
target and replay tokens (linear in rho), and the change grows as a power of the tokens. bpb(0)
is measured: each pilot evaluates the held-out text before its first step. A fitted starting
point and a product rho^b * T^c were tried first and fail on real curves, which move most in the
first steps: the starting point absorbs the early change, and a source language that replay
improves (a negative drift) cannot be written as a positive power. Each pilot trains
`train.pilots.steps` steps at one replay ratio and measures the held-out curves (`heldout.py`)
before its first step and 4 times after. The chosen replay ratio is the smallest
(so the target share the largest), on a 0.01 grid within the pilots' range, whose predicted drift
at T_full is within `train.forgetting_tolerance`; none within the range is an error, not a guess.

Each pilot is an ordinary training (`loop.train_loop`) in `train/pilots/ratio-<r>/`, with
checkpoints: an interrupted pilot resumes, a finished one (its `summary.json`) is skipped, and the
fit and choice are written to `train/pilots/choice.json`. A finished pilot's checkpoints are removed (its
metrics and summary stay).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from langadapt.errors import ConfigError
from langadapt.rundir import read_json, write_json
from langadapt.train.config import effective_batch_size, pilot_steps
from langadapt.train.heldout import heldout_metric
from langadapt.train.loop import train_loop

if TYPE_CHECKING:
    from langadapt.recipe import Recipe
    from langadapt.train.data import TokenStream

log = logging.getLogger(__name__)

EVALUATIONS = 4  # held-out measurements per pilot
GRID = 0.01  # the replay ratios the choice considers


# -- the fit ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PowerLaw:
    """change(T, rho) = (base + per_share * rho) * (T / tokens_scale)^exponent, in bits per byte.

    The change is a language's held-out figure after T tokens minus (source: drift) or from (target:
    gain) its value before training; rho is the target share. A pilot's tokens each move the loss as
    its mixture does: the rate is linear in the share (`base` alone when rho = 0, all replay; `base +
    per_share` when rho = 1, all target), and the change grows as a power of the tokens.
    """

    base: float
    per_share: float
    exponent: float
    tokens_scale: float
    rmse: float = 0.0

    def change(self, tokens: float, rho: float) -> float:
        return (self.base + self.per_share * rho) * (tokens / self.tokens_scale) ** self.exponent

    def record(self) -> dict[str, Any]:
        return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in dataclasses.asdict(self).items()}


def fit_power_law(points: list[tuple[float, float, float]], tokens_scale: float) -> PowerLaw:
    """Least squares of the law above to (tokens, rho, change) points: for each exponent the two rates are a
    linear least-squares solution, and the exponent is the best of a 0.01 grid over 0.02-2, refined."""
    import numpy as np
    from scipy.optimize import minimize_scalar

    t = np.array([p[0] for p in points], dtype=float) / tokens_scale
    rho = np.array([p[1] for p in points], dtype=float)
    y = np.array([p[2] for p in points], dtype=float)

    def solve(c: float) -> tuple[float, Any]:
        design = np.stack([t**c, rho * t**c], axis=1)
        coef, *_ = np.linalg.lstsq(design, y, rcond=None)
        return float(np.sum((design @ coef - y) ** 2)), coef

    grid = [round(0.02 + 0.01 * i, 4) for i in range(199)]
    c0 = min(grid, key=lambda c: solve(c)[0])
    refined = minimize_scalar(
        lambda c: solve(c)[0], bounds=(max(0.02, c0 - 0.01), min(2.0, c0 + 0.01)), method="bounded"
    )
    c = float(refined.x) if solve(float(refined.x))[0] <= solve(c0)[0] else c0
    sse, (u, v) = solve(c)
    return PowerLaw(float(u), float(v), c, tokens_scale, math.sqrt(sse / len(y)))


def predictions(drift: PowerLaw, tokens: float, ratios: list[float]) -> list[dict[str, Any]]:
    """The predicted drift after `tokens` at each replay ratio of a 0.01 grid over the range of `ratios`."""
    lo, hi = min(ratios), max(ratios)
    grid = sorted({round(lo + i * GRID, 4) for i in range(int(round((hi - lo) / GRID)) + 1)} | {lo, hi})
    return [{"replay_ratio": r, "predicted_drift": round(drift.change(tokens, 1.0 - r), 5)} for r in grid]


def choose_ratio(
    drift: PowerLaw, tokens: float, tolerance: float, ratios: list[float], where: str = "train/pilots/choice.json"
) -> tuple[float, list[dict[str, Any]]]:
    """The smallest replay ratio (on a 0.01 grid within the range of `ratios`) whose predicted drift after
    `tokens` is within `tolerance`, and the predictions it chose among; ConfigError when none is."""
    table = predictions(drift, tokens, ratios)
    within = [row["replay_ratio"] for row in table if row["predicted_drift"] <= tolerance]
    if not within:
        least = min(table, key=lambda row: row["predicted_drift"])
        raise ConfigError(
            [
                f"train.forgetting_tolerance: {tolerance} bits per byte is met by no replay ratio the pilots cover "
                f"({min(ratios)}-{max(ratios)}): the fit predicts a drift of {least['predicted_drift']:.4f} even at "
                f"replay ratio {least['replay_ratio']} (the pilots, the fit and the predictions: {where}); raise the "
                "tolerance, add larger ratios to train.pilots.ratios, or train fewer steps"
            ]
        )
    return min(within), table


# -- the pilots ------------------------------------------------------------------------------------


def pilot_recipe(recipe: "Recipe", ratio: float) -> "Recipe":
    """The recipe one pilot trains under: its replay ratio, its steps, its own evaluations, no early stop."""
    cfg = recipe.train
    steps = pilot_steps(cfg)
    train = dataclasses.replace(
        cfg,
        replay_ratio=ratio,
        max_steps=steps,
        warmup_steps=min(cfg.warmup_steps, steps // 4),
        eval_every=max(1, steps // EVALUATIONS),
        early_stopping_patience=0,
        save_every=max(1, steps // EVALUATIONS),
        log_to=(),
        phases=(),
    )
    return dataclasses.replace(recipe, train=train)


def pilot_dir(out: Path, ratio: float) -> Path:
    return out / "pilots" / f"ratio-{ratio:.3f}"


def run_pilots(
    recipe: "Recipe",
    out: Path,
    make_model: Callable[[], Any],
    make_streams: Callable[[], dict[str, "TokenStream"]],
    target: str,
    replay: str,
    objective: Any = None,
) -> list[dict[str, Any]]:
    """Train every pilot not finished yet (resuming an interrupted one); returns each one's summary.

    `make_model` builds the initialised model with the train method applied; `make_streams` fresh data
    streams (every pilot reads its data from the start).
    """
    done = []
    for ratio in recipe.train.pilots.ratios:
        folder = pilot_dir(out, ratio)
        if (folder / "summary.json").is_file():
            log.info("pilot at replay ratio %g: finished earlier, read from %s", ratio, folder)
            done.append(read_json(folder / "summary.json"))
            continue
        folder.mkdir(parents=True, exist_ok=True)
        sub = pilot_recipe(recipe, ratio)
        log.info("pilot at replay ratio %g: %d steps", ratio, sub.train.max_steps)
        summary = train_loop(
            make_model(), make_streams(), target, replay, sub, folder, objective=objective, evaluate_first=True
        )
        summary.update(replay_ratio=ratio, flops=pilot_flops(summary, sub))
        write_json(folder / "summary.json", summary)
        shutil.rmtree(folder / "checkpoints", ignore_errors=True)  # finished: its curves are all the choice needs
        done.append(summary)
    return done


def pilot_flops(summary: dict[str, Any], recipe: "Recipe") -> float:
    """Model FLOPs a pilot's training steps cost (its held-out evaluations not counted, as in the main run)."""
    cfg = recipe.train
    return float(summary.get("model_flops_per_token", 0)) * summary["steps"] * effective_batch_size(cfg) * cfg.seq_len


def curve_points(
    folder: Path, key: str, tokens_per_step: int, rho: float, sign: int
) -> list[tuple[float, float, float]]:
    """(tokens, rho, change since step 0) of every held-out measurement `key` in a pilot's metrics.jsonl after
    its first step; `sign` +1: the rise (drift), -1: the fall (gain)."""
    rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines() if line.strip()]
    start = next(r[key] for r in rows if r["step"] == 0 and key in r)
    return [(r["step"] * tokens_per_step, rho, sign * (r[key] - start)) for r in rows if key in r and r["step"] > 0]


def choose_from_pilots(
    recipe: "Recipe", out: Path, pilots: list[dict[str, Any]], target: str, replay: str
) -> tuple[float, dict[str, Any]]:
    """Fit both languages' curves over every pilot, choose the replay ratio, write `pilots/choice.json`."""
    cfg = recipe.train
    metric = heldout_metric(cfg.objective)
    sub = pilot_recipe(recipe, 0.0)
    per_step = effective_batch_size(sub.train) * cfg.seq_len
    steps = sum(p.max_steps for p in cfg.phases) if cfg.phases else cfg.max_steps
    full = float(steps * effective_batch_size(cfg) * cfg.seq_len)
    src, tgt = [], []
    for p in pilots:
        folder, rho = pilot_dir(out, p["replay_ratio"]), 1.0 - p["replay_ratio"]
        src += curve_points(folder, f"{metric}_{replay}", per_step, rho, +1)
        tgt += curve_points(folder, f"{metric}_{target}", per_step, rho, -1)
    drift = fit_power_law(src, full)
    gain = fit_power_law(tgt, full)
    table = predictions(drift, full, list(cfg.pilots.ratios))
    for row in table:
        row["predicted_target_gain"] = round(gain.change(full, 1.0 - row["replay_ratio"]), 5)
    record = {
        "chosen_replay_ratio": None,
        "forgetting_tolerance": cfg.forgetting_tolerance,
        "metric": metric,
        "target": target,
        "replay": replay,
        "schedule_tokens": full,
        "pilot_steps": sub.train.max_steps,
        "pilot_flops": sum(p.get("flops", 0.0) for p in pilots),
        "pilots": [
            {"replay_ratio": p["replay_ratio"], "steps": p["steps"], "flops": p.get("flops", 0.0)} for p in pilots
        ],
        "points": {"replay": src, "target": tgt},
        "fit": {"replay_drift": drift.record(), "target_gain": gain.record()},
        "law": "change = (base + per_share * (1 - replay_ratio)) * (tokens / tokens_scale)^exponent; drift: bpb(T) - "
        "bpb(0) of the replay language, gain: bpb(0) - bpb(T) of the target",
        "predictions": table,
    }
    path = out / "pilots" / "choice.json"
    write_json(path, record)  # before choosing: when no ratio is within the tolerance, the error points here
    ratio, _ = choose_ratio(drift, full, cfg.forgetting_tolerance, list(cfg.pilots.ratios), str(path))
    record["chosen_replay_ratio"] = ratio
    write_json(path, record)
    log.info(
        "replay_ratio auto: %g (predicted %s drift %.4f, target gain %.4f bits per byte at %d tokens; tolerance %g)",
        ratio,
        replay,
        drift.change(full, 1.0 - ratio),
        gain.change(full, 1.0 - ratio),
        full,
        cfg.forgetting_tolerance,
    )
    return ratio, record
