"""Run a recipe: every stage in order, skipping finished ones, resuming interrupted ones."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from langadapt.corpus import flow as corpus
from langadapt.distill import flow as distill
from langadapt.errors import ConfigError
from langadapt.evaluate import flow as evaluate
from langadapt.init import flow as init
from langadapt.models.loading import load_config, load_tokenizer, resolve_base
from langadapt.recipe import Recipe
from langadapt.report import flow as report
from langadapt.rundir import STAGES, RunDir, read_json
from langadapt.tokenizer import flow as tokenizer
from langadapt.tokenizer import scratch as scratch_tokenizer
from langadapt.train import flow as train
from langadapt.train import reference
from langadapt.train.checks import memory_problems_here, resolve_objective

log = logging.getLogger(__name__)

STAGE_MODULES = {
    "corpus": corpus,
    "tokenizer": tokenizer,
    "scratch-tokenizer": scratch_tokenizer,  # with a from-scratch model only (train.method or eval.reference scratch)
    "init": init,
    "train": train,
    "reference": reference,  # with eval.reference scratch only
    "eval": evaluate,
    "distill": distill,
    "report": report,
}
assert tuple(STAGE_MODULES) == STAGES


@dataclass(frozen=True)
class RunResult:
    run_dir: Path
    results: dict[str, Any]  # eval/results.json, when the eval stage has run

    @property
    def report(self) -> Path:
        return self.run_dir / "report" / "index.html"


def preflight(recipe: Recipe) -> Recipe:
    """Fail fast on a base model that cannot be found, before any corpus work; returns the recipe with
    `train.objective: auto` resolved from the model's config when validation could not read it offline.

    Hub ids and folders are checked by loading their tokenizer (seconds). Bundled and
    GGUF models were checked by validation (package and file present); importing them
    here would put the one-off dequantisation before the corpus is known to be usable.
    """
    if recipe.model.base.startswith("builtin:") or recipe.model.gguf_file:
        return recipe
    tok = load_tokenizer(resolve_base(recipe.model), recipe.model.revision)
    config = load_config(resolve_base(recipe.model), recipe.model.revision)
    recipe = resolve_objective(recipe, config)
    # what validation could not read offline: objective, adapters and positions against the model's config
    problems = train.config_problems(recipe, config)
    if problems:
        raise ConfigError(problems)
    if recipe.tokenizer.method != "keep":
        tokenizer.check_extendable(tok, recipe.tokenizer)
    return recipe


def run(recipe: Recipe, stages: tuple[str, ...] = STAGES, force: bool = False) -> RunResult:
    """Run `stages` of a recipe in its run directory; `force` recomputes them and all later ones."""
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        raise ConfigError([f"unknown stage {', '.join(unknown)}; stages: {', '.join(STAGES)}"])
    rd = RunDir(recipe.resolved_run_dir)
    if any(s != "corpus" for s in stages):
        recipe = preflight(recipe)
    if "train" in stages:  # before any stage works: a run this machine cannot hold is refused with the figures
        problems = memory_problems_here(recipe)
        if problems:
            raise ConfigError(problems)
    rd.root.mkdir(parents=True, exist_ok=True)
    tmp = rd.root / "recipe.yaml.tmp"
    tmp.write_text(recipe.to_yaml(), encoding="utf-8")  # as resolved: train.objective auto is mlm or clm here
    tmp.replace(rd.root / "recipe.yaml")
    if force:
        rd.invalidate_from(stages[0])
    for stage in STAGES:
        if stage in stages:
            STAGE_MODULES[stage].run(recipe, rd)
    results_file = rd.path("eval") / "results.json"
    return RunResult(rd.root, read_json(results_file) if rd.is_complete("eval") and results_file.exists() else {})
