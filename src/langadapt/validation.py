"""Checks on a recipe beyond its shape: registered names, value ranges, files that exist.

Each section's checks live beside its config (`corpus/config.py: check`, ...); this module
runs them all and the caller raises once with every message, so a user fixes their recipe
in one round trip instead of one error at a time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import langadapt.catalog  # noqa: F401  (every registry whole: a recipe may name any registered part)
from langadapt.corpus import checks as corpus_checks
from langadapt.devices import DTYPES, device_problems, resolve_device
from langadapt.distill import checks as distill_checks
from langadapt.evaluate import checks as eval_checks
from langadapt.init import checks as init_checks
from langadapt.models.attention import attention_problems, model_class
from langadapt.models.loading import base_config, base_problems, is_encoder
from langadapt.report import config as report_config
from langadapt.tokenizer import checks as tokenizer_checks
from langadapt.train import checks as train_checks

if TYPE_CHECKING:
    from langadapt.recipe import Recipe


def semantic_problems(recipe: "Recipe") -> list[str]:
    p: list[str] = []
    if not recipe.name.strip() or "/" in recipe.name:
        p.append("name: must be a non-empty name without '/'")
    p.extend(base_problems(recipe.model))
    if recipe.model.dtype not in DTYPES:
        p.append(f"model.dtype: '{recipe.model.dtype}' is not one of {', '.join(DTYPES)}")
    p.extend(_attention_problems(recipe))
    for section in (
        corpus_checks,
        tokenizer_checks,
        init_checks,
        train_checks,
        eval_checks,
        distill_checks,
        report_config,
    ):
        p.extend(section.check(recipe))
    return p


def _attention_problems(recipe: "Recipe") -> list[str]:
    """`model.attn_implementation` against the devices the model trains and is evaluated on, and its class."""
    requested = recipe.model.attn_implementation
    keys = {"train.device": recipe.train.device, "eval.device": recipe.eval.device}
    devices = {key: resolve_device(name) for key, name in keys.items() if not device_problems(name, key)}
    config = base_config(recipe.model) if requested in ("flash_attention_2", "sdpa") else None
    encoder = config is not None and is_encoder(config)
    cls = model_class(config, encoder) if config is not None else None
    packed = recipe.train.packed_attention == "document"
    return attention_problems(requested, devices, cls, encoder, packed)
