"""langadapt: adapt pretrained language models to under-served languages.

from langadapt import Recipe, run
result = run(Recipe.from_yaml("my-recipe.yaml"))
print(result.results["bits_per_byte"])
"""

from langadapt.errors import LangAdaptError
from langadapt.pipeline import RunResult, run
from langadapt.recipe import Recipe

__all__ = ["LangAdaptError", "Recipe", "RunResult", "run"]
__version__ = "0.1.0"
