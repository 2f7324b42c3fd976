"""The `init` section of a recipe."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from langadapt.config import opt

if TYPE_CHECKING:
    from langadapt.recipe import Recipe


@dataclass(frozen=True, kw_only=True)
class InitConfig:
    method: str = opt("fvt", "how rows for new tokens are initialised (see `langadapt list init-methods`)")


def check(recipe: "Recipe") -> list[str]:
    """Problems with the init section."""
    from langadapt.init.methods import INIT_METHODS

    if recipe.init.method not in INIT_METHODS:
        return [f"init.method: {INIT_METHODS.unknown_message(recipe.init.method)}"]
    return []
