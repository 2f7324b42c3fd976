"""Checks of the tokenizer section of a recipe that need the stage's parts (registries, files, the model).

`validation.py` runs them with every other section's; `config.py` holds the section itself and imports
only mechanics.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from langadapt.config import ROLES, primary, sources_of
from langadapt.errors import ConfigError
from langadapt.models.loading import cache_dir, load_tokenizer, looks_like_local_path
from langadapt.sources.reading import source_problems
from langadapt.tokenizer.config import NEEDS_TARGET, TRANSLIT_INIT
from langadapt.tokenizer.methods import TOKENIZER_METHODS
from langadapt.tokenizer.state import check_extendable

if TYPE_CHECKING:
    from langadapt.recipe import Recipe


def check(recipe: "Recipe") -> list[str]:
    """Problems with the tokenizer section."""

    t, p = recipe.tokenizer, []
    if t.method not in TOKENIZER_METHODS:
        p.append(f"tokenizer.method: {TOKENIZER_METHODS.unknown_message(t.method)}")
    if t.method == "extend" and t.new_tokens < 1:
        p.append("tokenizer.new_tokens: must be >= 1 with method 'extend'")
    if t.method in NEEDS_TARGET and t.target_vocab_size < 300:
        p.append("tokenizer.target_vocab_size: must be >= 300 (the byte alphabet alone is 256)")
    if t.min_frequency < 1:
        p.append("tokenizer.min_frequency: must be >= 1")
    if t.trim_min_count < 1:
        p.append("tokenizer.trim_min_count: must be >= 1")
    if t.trim_vocab_size < 0:
        p.append("tokenizer.trim_vocab_size: must be >= 0 (0: no limit)")
    if t.method == "trim":
        p.extend(_trim_problems(recipe))
    for i, src in enumerate(t.trim_sources):
        p.extend(source_problems(src, f"tokenizer.trim_sources[{i}]"))
    if t.translit_init not in TRANSLIT_INIT:
        p.append(f"tokenizer.translit_init: '{t.translit_init}' is not one of {', '.join(TRANSLIT_INIT)}")
    if t.method == "translit":
        import importlib.util

        if importlib.util.find_spec("uroman") is None:
            p.append("tokenizer.method: translit romanises with uroman: pip install uroman==1.3.1.1")
    if (t.parity_target is None) != (t.parity_reference is None):
        p.append("tokenizer.parity_target / tokenizer.parity_reference: give both sides of the parallel text")
    for key, src in (("parity_target", t.parity_target), ("parity_reference", t.parity_reference)):
        if src is not None:
            p.extend(source_problems(src, f"tokenizer.{key}"))
    target = primary(recipe.corpus, "target")
    if t.parity_target is not None and target is not None and t.parity_target.language != target.language:
        p.append(
            f"tokenizer.parity_target.language: '{t.parity_target.language}' should be the corpus target language "
            f"'{target.language}'"
        )
    if t.parity_max_pairs < 1:
        p.append("tokenizer.parity_max_pairs: must be >= 1")
    return p


def _trim_problems(recipe: "Recipe") -> list[str]:
    """Trim options checked against the corpus languages and, when it is on disk, the base vocabulary."""
    t, p = recipe.tokenizer, []
    known = {s.language for role in ROLES for s in sources_of(recipe.corpus, role)}
    for lang in t.trim_languages:
        if lang not in known:
            p.append(f"tokenizer.trim_languages: '{lang}' is not a corpus language ({', '.join(sorted(known))})")
    folder = _local_tokenizer_folder(recipe)
    if folder is not None and t.trim_vocab_size:
        try:
            check_extendable(load_tokenizer(str(folder)), t)
        except ConfigError as e:
            p.extend(e.problems)
    return p


def _local_tokenizer_folder(recipe: "Recipe") -> Path | None:
    """The base tokenizer's folder when it is already on disk (local folder or imported builtin), else None.

    Hub models are checked before any work instead (`pipeline.preflight`), where loading is allowed.
    """
    base = recipe.model.base
    if base.startswith("builtin:"):
        folder = cache_dir() / "models" / base[len("builtin:") :]
    elif looks_like_local_path(base) and not recipe.model.gguf_file:
        folder = Path(base).expanduser()
    else:
        return None
    return folder if (folder / "tokenizer.json").is_file() else None
