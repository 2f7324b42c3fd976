"""Checks on a recipe beyond its shape: registered names, value ranges, files that exist.

Each section's checks live beside its config (`corpus/config.py: check`, ...); this module
runs them all and the caller raises once with every message, so a user fixes their recipe
in one round trip instead of one error at a time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from langadapt.config import SourceConfig
    from langadapt.recipe import Recipe

DTYPES = ("float32", "bfloat16", "float16")
SPLIT_BY = ("line", "paragraph", "file")


def semantic_problems(recipe: "Recipe") -> list[str]:
    from langadapt import models
    from langadapt.corpus import config as corpus_config
    from langadapt.evaluate import config as eval_config
    from langadapt.init import config as init_config
    from langadapt.report import config as report_config
    from langadapt.tokenizer import config as tokenizer_config
    from langadapt.train import config as train_config

    p: list[str] = []
    if not recipe.name.strip() or "/" in recipe.name:
        p.append("name: must be a non-empty name without '/'")
    p.extend(models.base_problems(recipe.model))
    if recipe.model.dtype not in DTYPES:
        p.append(f"model.dtype: '{recipe.model.dtype}' is not one of {', '.join(DTYPES)}")
    for section in (corpus_config, tokenizer_config, init_config, train_config, eval_config, report_config):
        p.extend(section.check(recipe))
    return p


def source_format_problems(src: "SourceConfig", key: str) -> list[str]:
    from langadapt.sources import FORMATS

    p = []
    if src.format not in ("auto", *FORMATS):
        p.append(f"{key}.format: '{src.format}' is not one of auto, {', '.join(FORMATS)}")
    if src.split_by not in SPLIT_BY:
        p.append(f"{key}.split_by: '{src.split_by}' is not one of {', '.join(SPLIT_BY)}")
    if not src.language or not src.language.replace("_", "").replace("-", "").isalnum():
        p.append(f"{key}.language: give a language code such as nya or eng")
    if src.max_documents < 0:
        p.append(f"{key}.max_documents: must be >= 0")
    return p
