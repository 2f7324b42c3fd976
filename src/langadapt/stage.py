"""The one place that decides whether a stage runs, is skipped, or resumes."""

from __future__ import annotations

import logging
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from langadapt.rundir import RunDir, StageContext, fingerprint

if TYPE_CHECKING:
    from langadapt.recipe import Recipe

log = logging.getLogger(__name__)

Build = Callable[["Recipe", RunDir, StageContext], None]


def run_stage(
    name: str, recipe: "Recipe", rd: RunDir, inputs: dict[str, Any], build: Build, force: bool = False
) -> Path:
    """Run `build` unless the stage finished with the same inputs; publish atomically."""
    fp = fingerprint(name, inputs, metadata.version("langadapt"))
    if not force and rd.is_complete(name, fp):
        log.info("[%s] up to date, skipped (fingerprint %s)", name, fp)
        rd.record_skip(name)
        return rd.path(name)
    with rd.stage(name, fp, inputs) as ctx:
        log.info("[%s] %s", name, "resuming" if ctx.resuming else "running")
        build(recipe, rd, ctx)
    log.info("[%s] done -> %s", name, rd.path(name))
    return rd.path(name)
