"""Checks of the init section of a recipe that need the stage's parts (registries, files, the model).

`validation.py` runs them with every other section's; `config.py` holds the section itself and imports
only mechanics.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import TYPE_CHECKING

from langadapt.config import ModelConfig
from langadapt.devices import device_problems
from langadapt.init.config import TRANSLIT_MODES, VECTOR_METHODS
from langadapt.init.methods import INIT_METHODS
from langadapt.models.loading import base_problems, cache_dir, looks_like_local_path
from langadapt.sources.reading import source_problems

if TYPE_CHECKING:
    from langadapt.recipe import Recipe


def check(recipe: "Recipe") -> list[str]:
    """Problems with the init section."""

    c, p = recipe.init, []
    if c.method not in INIT_METHODS:
        p.append(f"init.method: {INIT_METHODS.unknown_message(c.method)}")
    p.extend(_compare_problems(recipe))
    for name, value, low in (
        ("neighbours", c.neighbours, 1),
        ("focus_top_k", c.focus_top_k, 0),
        ("omp_atoms", c.omp_atoms, 1),
        ("ofa_rank", c.ofa_rank, 1),
        ("vector_dim", c.vector_dim, 8),
        ("vector_epochs", c.vector_epochs, 1),
        ("compare_chars", c.compare_chars, 1),
    ):
        if value < low:
            p.append(f"init.{name}: must be >= {low}")
    if c.temperature <= 0:
        p.append("init.temperature: must be > 0")
    if c.device.partition(":")[0] == "mps":
        p.append("init.device: the init methods compute in float64, which Apple GPUs lack; use auto, cpu or cuda")
    else:
        p.extend(device_problems(c.device, "init.device"))
    if c.translit_mode not in TRANSLIT_MODES:
        p.append("init.translit_mode: one of min, mean, max (or empty for the tokenizer's hint)")
    if c.helper_model:
        p.extend(
            q.replace("model.base", "init.helper_model", 1) for q in base_problems(ModelConfig(base=c.helper_model))
        )
    if c.method == "clp" and not c.helper_model:
        p.append(
            "init.helper_model: clp needs a small model already trained on the target language (hub id or local "
            "folder); without one, use init.method focus or omp, which train fastText vectors on the corpus instead"
        )
    if c.method == "wechsel":
        p.extend(_wechsel_problems(recipe))
    for key, src in (("parallel_source", c.parallel_source), ("parallel_target", c.parallel_target)):
        if src is not None:
            p.extend(source_problems(src, f"init.{key}"))
    if c.method == "ofa":
        hidden = hidden_size(recipe)
        if hidden is not None and c.ofa_rank > hidden:
            p.append(
                f"init.ofa_rank: {c.ofa_rank} is larger than the model's hidden size {hidden}; use at most {hidden}"
            )
    needs_vectors = c.method in VECTOR_METHODS or (c.method == "omp" and not c.helper_model)
    if needs_vectors and importlib.util.find_spec("gensim") is None:
        p.append(f"init.method: {c.method} trains fastText vectors with gensim: pip install 'langadapt[init]'")
    return p


def _compare_problems(recipe: "Recipe") -> list[str]:
    """Each compared method must be valid and have what it needs, as if it were init.method."""
    import dataclasses

    c, p = recipe.init, []
    for i, method in enumerate(c.compare):
        if method not in INIT_METHODS:
            p.append(f"init.compare[{i}]: {INIT_METHODS.unknown_message(method)}")
        elif method != c.method:
            trial = dataclasses.replace(recipe, init=dataclasses.replace(c, method=method, compare=()))
            p.extend(f"init.compare[{i}] ({method}): {q}" for q in check(trial) if not q.startswith("init.compare"))
    return p


def _wechsel_problems(recipe: "Recipe") -> list[str]:
    c, p = recipe.init, []
    parallel = c.parallel_source is not None and c.parallel_target is not None
    if (c.parallel_source is None) != (c.parallel_target is None):
        p.append("init.parallel_source / init.parallel_target: give both sides of the parallel text")
    if not c.dictionary and not parallel:
        p.append(
            "init.dictionary: wechsel needs a bilingual dictionary between the source and target language, or "
            "parallel text to induce one. Debian packages dictd dictionaries (apt-get install dict-freedict-xxx-yyy, "
            "then init.dictionary: /usr/share/dictd/freedict-xxx-yyy.index); a TSV of 'source<TAB>target' word pairs "
            "works too; or name parallel text with init.parallel_source and init.parallel_target"
        )
    if c.dictionary and not Path(c.dictionary).expanduser().is_file():
        p.append(f"init.dictionary: file not found: {c.dictionary}")
    if parallel and importlib.util.find_spec("eflomal") is None:
        p.append("init.parallel_target: inducing a dictionary needs the eflomal aligner: pip install 'langadapt[init]'")
    if recipe.corpus.replay is None and c.parallel_source is None:
        p.append(
            "init.method: wechsel trains source-language vectors on the replay corpus or on init.parallel_source; "
            "set corpus.replay or init.parallel_source"
        )
    return p


def hidden_size(recipe: "Recipe") -> int | None:
    """The base model's hidden size when its config can be read without loading weights, else None."""
    base = recipe.model.base
    candidates = []
    if base.startswith("builtin:"):
        candidates.append(cache_dir() / "models" / base[len("builtin:") :] / "config.json")
    elif looks_like_local_path(base):
        candidates.append(Path(base).expanduser() / "config.json")
    for path in candidates:
        if path.is_file():
            config = json.loads(path.read_text(encoding="utf-8"))
            size = config.get("hidden_size", config.get("d_model", config.get("n_embd")))
            return int(size) if isinstance(size, int) else None
    return None
