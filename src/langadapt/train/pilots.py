"""`train.replay_ratio: auto`: short pilot runs at several replay ratios, a fit of their held-out curves, the choice.

The question is the one the CMR paper (Gu et al. 2024, "CMR Scaling Law: Predicting Critical
Mixture Ratios for Continual Pre-training of Language Models") asks: the largest share of new
(target-language) data whose loss on the old (source) language stays within a tolerance.
Like the paper, the choice comes from short runs and a power law in the mixture ratio and the
training tokens; the law fitted here is a simpler one of our own, not the paper's
parametrisation:

    source held-out bpb(T, rho) = L0 + A * rho^b * (T / T_full)^c        (drift: the second term)
    target held-out bpb(T, rho) = L0' - B * rho^d * (T / T_full)^e       (gain: the second term)

with rho the target share (1 - replay ratio), T the tokens trained, T_full the full schedule's
tokens, and L0 the shared starting point (every pilot starts from the same initialised model,
so it is fitted, not measured). Each pilot trains `train.pilots.steps` steps at one replay ratio
and measures the held-out curves (`heldout.py`) 4 times. The chosen replay ratio is the smallest
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
    """bpb(T, rho) = start + sign * scale * rho^rho_exponent * (T / tokens_scale)^tokens_exponent."""

    start: float
    scale: float
    rho_exponent: float
    tokens_exponent: float
    sign: int  # +1: the loss rises with training (source drift); -1: it falls (target gain)
    tokens_scale: float
    rmse: float = 0.0

    def change(self, tokens: float, rho: float) -> float:
        """The drift (sign +1) or gain (sign -1) after `tokens` at target share `rho`, in bits per byte."""
        return self.scale * rho**self.rho_exponent * (tokens / self.tokens_scale) ** self.tokens_exponent

    def __call__(self, tokens: float, rho: float) -> float:
        return self.start + self.sign * self.change(tokens, rho)

    def record(self) -> dict[str, Any]:
        return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in dataclasses.asdict(self).items()}


def fit_power_law(points: list[tuple[float, float, float]], sign: int, tokens_scale: float) -> PowerLaw:
    """Least squares of the law above to (tokens, rho, bpb) points, from several starts (the best kept).

    The exponents are bounded (rho: 0-6, tokens: 0-3) so that a flat or noisy curve fits a small
    change rather than a wild one.
    """
    import numpy as np
    from scipy.optimize import least_squares

    t = np.array([p[0] for p in points], dtype=float) / tokens_scale
    rho = np.array([p[1] for p in points], dtype=float)
    y = np.array([p[2] for p in points], dtype=float)

    def residuals(x: Any) -> Any:
        start, log_scale, b, c = x
        return start + sign * np.exp(log_scale) * rho**b * t**c - y

    spread = max(float(y.max() - y.min()), 1e-6)
    best = None
    for b0 in (0.5, 1.5, 3.0):
        for c0 in (0.3, 0.7, 1.2):
            x0 = [float(y.max() if sign < 0 else y.min()), math.log(spread), b0, c0]
            r = least_squares(
                residuals, x0, bounds=([-np.inf, -30.0, 0.0, 0.0], [np.inf, 10.0, 6.0, 3.0]), method="trf"
            )
            if best is None or r.cost < best.cost:
                best = r
    assert best is not None
    start, log_scale, b, c = (float(v) for v in best.x)
    rmse = float(np.sqrt(np.mean(best.fun**2)))
    return PowerLaw(start, math.exp(log_scale), b, c, sign, tokens_scale, rmse)


def choose_ratio(drift: PowerLaw, tokens: float, tolerance: float, ratios: list[float]) -> tuple[float, list[dict]]:
    """The smallest replay ratio (on a 0.01 grid within the range of `ratios`) whose predicted drift after
    `tokens` is within `tolerance`, and the predictions it chose among; ConfigError when none is."""
    lo, hi = min(ratios), max(ratios)
    grid = sorted({round(lo + i * GRID, 4) for i in range(int(round((hi - lo) / GRID)) + 1)} | {lo, hi})
    table = [{"replay_ratio": r, "predicted_drift": round(drift.change(tokens, 1.0 - r), 5)} for r in grid]
    within = [row["replay_ratio"] for row in table if row["predicted_drift"] <= tolerance]
    if not within:
        worst = min(table, key=lambda row: row["predicted_drift"])
        raise ConfigError(
            [
                f"train.forgetting_tolerance: {tolerance} bits per byte is met by no replay ratio the pilots cover "
                f"({lo}-{hi}): the fit predicts a drift of {worst['predicted_drift']:.4f} even at replay ratio "
                f"{worst['replay_ratio']} (see train/pilots/choice.json); raise the tolerance, add larger ratios to "
                "train.pilots.ratios, or train fewer steps"
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
        summary = train_loop(make_model(), make_streams(), target, replay, sub, folder, objective=objective)
        summary.update(replay_ratio=ratio, flops=pilot_flops(summary, sub))
        write_json(folder / "summary.json", summary)
        shutil.rmtree(folder / "checkpoints", ignore_errors=True)  # finished: its curves are all the choice needs
        done.append(summary)
    return done


def pilot_flops(summary: dict[str, Any], recipe: "Recipe") -> float:
    """Model FLOPs a pilot's training steps cost (its held-out evaluations not counted, as in the main run)."""
    cfg = recipe.train
    return float(summary.get("model_flops_per_token", 0)) * summary["steps"] * effective_batch_size(cfg) * cfg.seq_len


def curve_points(folder: Path, key: str, tokens_per_step: int, rho: float) -> list[tuple[float, float, float]]:
    """(tokens, rho, value) of every held-out measurement `key` in a pilot's metrics.jsonl."""
    rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return [(r["step"] * tokens_per_step, rho, r[key]) for r in rows if key in r]


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
        src += curve_points(folder, f"{metric}_{replay}", per_step, rho)
        tgt += curve_points(folder, f"{metric}_{target}", per_step, rho)
    drift = fit_power_law(src, +1, full)
    gain = fit_power_law(tgt, -1, full)
    ratio, table = choose_ratio(drift, full, cfg.forgetting_tolerance, list(cfg.pilots.ratios))
    for row in table:
        row["predicted_target_gain"] = round(gain.change(full, 1.0 - row["replay_ratio"]), 5)
    record = {
        "chosen_replay_ratio": ratio,
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
        "law": "bpb = start + sign * scale * (1 - replay_ratio)^rho_exponent * (tokens / tokens_scale)^tokens_exponent",
        "predictions": table,
    }
    write_json(out / "pilots" / "choice.json", record)
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
