"""The `eval` section of a recipe."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from langadapt.config import SourceConfig, opt

if TYPE_CHECKING:
    from langadapt.recipe import Recipe


@dataclass(frozen=True, kw_only=True)
class EvalConfig:
    max_chars: int = opt(
        30_000, "evaluate at most this many characters per set (whole documents; the rest is counted as skipped)"
    )
    context_length: int = opt(512, "tokens per evaluation window; longer documents are scored with a sliding window")
    stride: int = opt(256, "new tokens scored per window after the first (the rest is context)")
    extra_sets: tuple[SourceConfig, ...] = opt(
        (), "additional evaluation-only sets, e.g. out-of-domain text in the source language"
    )


def check(recipe: "Recipe") -> list[str]:
    """Problems with the eval section."""
    from langadapt import sources

    e, p = recipe.eval, []
    if e.max_chars < 100:
        p.append("eval.max_chars: must be >= 100")
    if e.context_length < 16:
        p.append("eval.context_length: must be >= 16")
    if not 0 < e.stride <= e.context_length:
        p.append("eval.stride: must be in (0, eval.context_length]")
    names = [s.name or s.language for s in e.extra_sets]
    for i, src in enumerate(e.extra_sets):
        p.extend(sources.source_problems(src, f"eval.extra_sets[{i}]"))
        if not src.name:
            p.append(f"eval.extra_sets[{i}].name: give each extra set a name, e.g. {src.language}-ood")
    if len(set(names)) != len(names):
        p.append("eval.extra_sets: names must be unique")
    return p
