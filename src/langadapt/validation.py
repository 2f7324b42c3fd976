"""Checks on a recipe beyond its shape: registered names, value ranges, files that exist.

Each section's checks live beside its config (`corpus/config.py: check`, ...); this module
runs them all and the caller raises once with every message, so a user fixes their recipe
in one round trip instead of one error at a time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import langadapt.catalog  # noqa: F401  (every registry whole: a recipe may name any registered part)
from langadapt.corpus import checks as corpus_checks
from langadapt.evaluate import checks as eval_checks
from langadapt.init import checks as init_checks
from langadapt.models.loading import base_problems
from langadapt.report import config as report_config
from langadapt.tokenizer import checks as tokenizer_checks
from langadapt.train import checks as train_checks

if TYPE_CHECKING:
    from langadapt.recipe import Recipe

DTYPES = ("float32", "bfloat16", "float16")


def semantic_problems(recipe: "Recipe") -> list[str]:
    p: list[str] = []
    if not recipe.name.strip() or "/" in recipe.name:
        p.append("name: must be a non-empty name without '/'")
    p.extend(base_problems(recipe.model))
    if recipe.model.dtype not in DTYPES:
        p.append(f"model.dtype: '{recipe.model.dtype}' is not one of {', '.join(DTYPES)}")
    for section in (corpus_checks, tokenizer_checks, init_checks, train_checks, eval_checks, report_config):
        p.extend(section.check(recipe))
    return p
