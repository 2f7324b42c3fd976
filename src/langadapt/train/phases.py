"""Two-phase (or n-phase) schedules: each phase its own method, steps and learning rate.

"Embeddings first, then everything" (MAFT, "Small Models, Big Impact"): phase 1 trains the
new rows and the head, phase 2 adapters or the whole model. Each phase is one call of the
ordinary training loop with its own train config, in its own folder
(`train/phases/<n>-<name>/checkpoints`, `metrics.jsonl`); the data streams continue where
the previous phase left them; a finished phase is folded into the weights (merged) before
the next one wraps the model.

On resume, a finished phase is not trained again: its method is applied, its final
trainable weights are loaded from its last checkpoint and merged, and the streams and RNG
are restored from that checkpoint, so the next phase continues exactly as it would have.
A phase that stopped early (`train.early_stopping_patience`) is finished at its stop: its
checkpoint there is its last, and the summary counts the steps it trained, not its schedule.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import langadapt.train.methods  # noqa: F401  (registers every train method a phase may name)
from langadapt.rundir import read_json
from langadapt.train import factorised, flops
from langadapt.train.adapters import finalize, merge
from langadapt.train.checkpoints import latest_checkpoint, stopped_early
from langadapt.train.config import PhaseConfig, TrainConfig
from langadapt.train.data import TokenStream
from langadapt.train.loop import train_loop
from langadapt.train.trainable import apply_method, trained_embedding_rows, weight_dtypes

if TYPE_CHECKING:
    from collections.abc import Callable

    from langadapt.recipe import Recipe
    from langadapt.train.mixing import MixPlan
    from langadapt.train.objectives import Objective

log = logging.getLogger(__name__)


class ObjectiveFactory:
    """Builds each phase's objective from its name (the flow binds what objectives need: tokenizer, pairs)."""

    def __init__(self, build: "Callable[[str], Objective]") -> None:
        self._build = build
        self._made: dict[str, Objective] = {}

    def __call__(self, name: str) -> "Objective":
        if name not in self._made:
            self._made[name] = self._build(name)
        return self._made[name]


def schedule(cfg: TrainConfig) -> list[PhaseConfig]:
    """The recipe's phases; without any, one phase from train.method / max_steps / lr."""
    if cfg.phases:
        return list(cfg.phases)
    return [PhaseConfig(name="", method=cfg.method, max_steps=cfg.max_steps, lr=cfg.lr, warmup_steps=cfg.warmup_steps)]


def phase_dir(out: Path, index: int, phase: PhaseConfig) -> Path:
    return out / "phases" / f"{index + 1}-{phase.name or phase.method}"


def phase_recipe(recipe: "Recipe", phase: PhaseConfig) -> "Recipe":
    """The recipe one phase trains under: the phase's method, steps, learning rate and warmup."""
    cfg = recipe.train
    warmup = min(cfg.warmup_steps, phase.max_steps) if phase.warmup_steps < 0 else phase.warmup_steps
    train = dataclasses.replace(
        cfg,
        method=phase.method,
        max_steps=phase.max_steps,
        lr=phase.lr or cfg.lr,
        warmup_steps=warmup,
        embeddings=phase.embeddings or cfg.embeddings,
        objective=phase.objective or cfg.objective,
        phases=(),
    )
    return dataclasses.replace(recipe, train=train)


def run_phases(
    model: Any,
    new_ids: list[int],
    streams: dict[str, TokenStream],
    target: str,
    replay: str | None,
    recipe: "Recipe",
    out: Path,
    objective: "Objective | ObjectiveFactory | None" = None,
    mix: "MixPlan | None" = None,
) -> tuple[Any, dict[str, Any]]:
    """Train every phase in order (skipping finished ones); returns the model with saved adapters and a summary.

    `objective`: what every phase trains on, or a function from an objective's name (each phase's own,
    `PhaseConfig.objective`, else train.objective) to what the loop calls; default: the registry's.
    `mix`: how rows are drawn among several sources of a side (default: one source per side, keyed by language).
    """
    phases = schedule(recipe.train)
    single = not recipe.train.phases  # one phase keeps the plain layout: train/checkpoints, train/metrics.jsonl
    summaries = []
    for i, phase in enumerate(phases):
        sub = recipe if single else phase_recipe(recipe, phase)
        folder = out if single else phase_dir(out, i, phase)
        model = apply_method(phase.method, model, sub.train, new_ids)  # what trains is float32 from here
        n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
        n_all = sum(p.numel() for p in model.parameters())
        embeddings = factorised.trainable_record(model)  # OFA's factors: what trains, against the same at full size
        label = phase.name or phase.method
        finished = _final_checkpoint(folder, phase.max_steps)  # its last step, or where it stopped early
        if finished is not None and not single and (folder / "summary.json").is_file():
            log.info("phase %d/%d (%s): finished earlier, restored from %s", i + 1, len(phases), label, finished)
            _restore_finished(finished, model, streams)
            summary = read_json(folder / "summary.json")
        else:
            folder.mkdir(parents=True, exist_ok=True)
            log.info(
                "phase %d/%d (%s): method %s, %d steps, %.2fM of %.1fM parameters trainable",
                i + 1,
                len(phases),
                label,
                phase.method,
                phase.max_steps,
                n_train / 1e6,
                n_all / 1e6,
            )
            chosen = objective(sub.train.objective) if isinstance(objective, ObjectiveFactory) else objective
            summary = train_loop(model, streams, target, replay, sub, folder, objective=chosen, mix=mix)
            summary.update(
                phase=label,
                method=phase.method,
                objective=sub.train.objective,
                lr=sub.train.lr,
                trainable_parameters=n_train,
                total_parameters=n_all,
                weights_dtype=weight_dtypes(model),
            )
            summary["embedding_rows_trained"], summary["embedding_rows"] = trained_embedding_rows(model)
            if embeddings is not None:
                summary["trainable_embedding_parameters"] = embeddings
            if not single:
                (folder / "summary.json").write_text(json.dumps(summary, indent=2))
        summaries.append(summary)
        if i < len(phases) - 1:
            model = merge(model)
    model = finalize(model, out)
    if not single:
        _join_metrics(out, phases, [s["steps"] for s in summaries])
    return model, _combine(summaries, single)


def _final_checkpoint(folder: Path, steps: int) -> Path | None:
    """The checkpoint a finished phase ended at: its scheduled last step, or the step it stopped early at."""
    ck = folder / "checkpoints" / f"step-{steps:06d}"
    if (ck / "state.json").is_file():
        return ck
    last = latest_checkpoint(folder)
    return last if last is not None and (last / "state.json").is_file() and stopped_early(last) else None


def _restore_finished(ck: Path, model: Any, streams: dict[str, TokenStream]) -> None:
    """Weights, data position and RNG at the end of a finished phase (tensors only; no pickled objects)."""
    import torch
    from safetensors.torch import load_file

    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in load_file(ck / "trainable.safetensors").items():
            params[name].copy_(value)
    state = read_json(ck / "state.json")
    for k, s in streams.items():
        s.restore(state["streams"][k])
    blob = torch.load(ck / "optimizer.pt", map_location="cpu", weights_only=True)
    torch.set_rng_state(blob["torch_rng"])


def _join_metrics(out: Path, phases: list[PhaseConfig], trained: list[int]) -> None:
    """One metrics.jsonl for the whole run: steps counted across phases (as trained), each line naming its phase."""
    lines, offset = [], 0
    for i, phase in enumerate(phases):
        path = phase_dir(out, i, phase) / "metrics.jsonl"
        for line in path.read_text().splitlines() if path.exists() else []:
            row = json.loads(line)
            row["phase_step"], row["step"] = row["step"], row["step"] + offset
            row["phase"] = phase.name or phase.method
            lines.append(json.dumps(row))
        offset += trained[i]
    (out / "metrics.jsonl").write_text("".join(line + "\n" for line in lines))


def _combine(summaries: list[dict[str, Any]], single: bool) -> dict[str, Any]:
    if single:
        return summaries[0]
    tokens: dict[str, int] = {}
    for s in summaries:
        for lang, n in s.get("tokens", {}).items():
            tokens[lang] = tokens.get(lang, 0) + n
    last = summaries[-1]
    losses = {s.get("loss") for s in summaries}
    return {
        "steps": sum(s["steps"] for s in summaries),
        "scheduled_steps": sum(s.get("scheduled_steps", s["steps"]) for s in summaries),
        **({"loss": losses.pop()} if len(losses) == 1 else {"loss": "per phase"}),
        "tokens": tokens,
        "seconds_this_session": round(sum(s.get("seconds_this_session", 0.0) for s in summaries), 1),
        **flops.combine(summaries),  # model TFLOP/s and MFU over every phase's steps
        "trainable_parameters": last["trainable_parameters"],
        "weights_dtype": last["weights_dtype"],
        "total_parameters": last["total_parameters"],
        "method": last["method"],
        "phases": summaries,
    }
