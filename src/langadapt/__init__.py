"""langadapt: adapt pretrained language models to under-served languages.

from langadapt import Recipe, run
result = run(Recipe.from_yaml("my-recipe.yaml"))
print(result.results["bits_per_byte"])

The names below load on first use (PEP 562), so `import langadapt` and a stage's config
import nothing heavy. Where things start: `pipeline.py` runs the stages in order; each
stage is a package whose flow is `<stage>/flow.py`; `catalog.py` lists the parts.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from langadapt.errors import LangAdaptError
    from langadapt.pipeline import RunResult, run
    from langadapt.recipe import Recipe

__all__ = ["LangAdaptError", "Recipe", "RunResult", "run"]
__version__ = "0.1.0"

_WHERE = {
    "LangAdaptError": "langadapt.errors",
    "Recipe": "langadapt.recipe",
    "RunResult": "langadapt.pipeline",
    "run": "langadapt.pipeline",
}


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'langadapt' has no attribute '{name}'")
    return getattr(import_module(_WHERE[name]), name)
