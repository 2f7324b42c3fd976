"""The one list of modules that register parts, and so the one place that fills every registry.

A part registers itself where it is defined (`@INIT_METHODS.register("focus", ...)`); a flow
imports the parts of its own stage. `langadapt list` and recipe validation need every
registry whole, whichever flows have loaded: they import this module. Adding a part is one
file and, if it is a new module, one line here.
"""

from __future__ import annotations

from typing import Any

from langadapt.corpus import filters  # noqa: F401
from langadapt.evaluate.tasks import classify, harness, retrieval, tag  # noqa: F401
from langadapt.init import basic, clp, focus, ofa, omp, wechsel  # noqa: F401
from langadapt.models import loading  # noqa: F401
from langadapt.registry import REGISTRIES, Registry
from langadapt.sources import bundled  # noqa: F401
from langadapt.tokenizer import extend, methods, replace, translit, trim  # noqa: F401
from langadapt.train import adapters, codeswitch, lem, meco, mlm, objectives, translation  # noqa: F401
from langadapt.train import methods as train_methods  # noqa: F401


def registries() -> dict[str, Registry[Any]]:
    """Every registry by the name `langadapt list` takes, each with all its parts."""
    return dict(REGISTRIES)
