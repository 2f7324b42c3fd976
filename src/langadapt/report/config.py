"""The `report` section of a recipe."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from langadapt.config import opt

if TYPE_CHECKING:
    from langadapt.recipe import Recipe


@dataclass(frozen=True, kw_only=True)
class ReportConfig:
    title: str = opt("", "page title; defaults to the recipe name")


def check(recipe: "Recipe") -> list[str]:
    """Problems with the report section."""
    return []
