"""Checks of the corpus section of a recipe that need the stage's parts (registries, files, the model).

`validation.py` runs them with every other section's; `config.py` holds the section itself and imports
only mechanics.
"""

from __future__ import annotations

import importlib.util
import logging
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from langadapt.config import ROLES, primary, source_name, source_weight, sources_of
from langadapt.corpus import kg2text, lid
from langadapt.corpus.config import (
    DERIVE,
    EXECUTORS,
    NORMALIZATIONS,
    CorpusConfig,
    threshold_fields,
)
from langadapt.corpus.filters import FILTERS
from langadapt.sources.formats import INVALID_UTF8
from langadapt.sources.reading import source_problems

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from langadapt.recipe import Recipe


def check(recipe: "Recipe") -> list[str]:
    """Problems with the corpus section (all of them, for `langadapt validate`)."""

    c, p = recipe.corpus, []
    p.extend(source_list_problems(c))
    if c.normalization not in NORMALIZATIONS:
        p.append(f"corpus.normalization: '{c.normalization}' is not one of {', '.join(NORMALIZATIONS)}")
    if c.invalid_utf8 not in INVALID_UTF8:
        p.append(f"corpus.invalid_utf8: '{c.invalid_utf8}' is not one of {', '.join(INVALID_UTF8)}")
    if c.min_chars < 0:
        p.append("corpus.min_chars: must be >= 0")
    if c.max_chars <= c.min_chars:
        p.append("corpus.max_chars: must be greater than corpus.min_chars")
    for name in c.disable:
        if name not in FILTERS:
            p.append(f"corpus.disable: {FILTERS.unknown_message(name)}")
    if c.lid.model_file and "lid" not in c.disable:
        problem = lid.model_file_problem(Path(c.lid.model_file).expanduser())
        if problem:
            p.append(f"corpus.lid.model_file: {problem}")
        elif importlib.util.find_spec("fasttext") is None:
            p.append("corpus.lid.model_file: reading a fastText model needs fasttext: pip install 'langadapt[glotlid]'")
    if c.lid.min_confidence is not None and not 0.0 <= c.lid.min_confidence <= 1.0:
        p.append("corpus.lid.min_confidence: must be between 0 and 1")
    if c.lid.script and not lid.is_script_code(c.lid.script):
        p.append(f"corpus.lid.script: '{c.lid.script}' is not an ISO 15924 script code (e.g. Latn, Arab, Ethi, Deva)")
    if not 0.0 < c.lid.min_script_fraction <= 1.0:
        p.append("corpus.lid.min_script_fraction: must be in (0, 1]")
    if c.quality.derive not in DERIVE:
        p.append(f"corpus.quality.derive: '{c.quality.derive}' is not one of {', '.join(DERIVE)}")
    for name in threshold_fields():
        value = getattr(c.quality.thresholds, name)
        if value is not None and value < 0:
            p.append(f"corpus.quality.thresholds.{name}: must be >= 0")
    nd = c.near_dedup
    if nd.shingle_size < 1 or nd.bands < 1 or nd.rows < 1 or nd.rehydrate_cap < 1:
        p.append("corpus.near_dedup: shingle_size, bands, rows and rehydrate_cap must be >= 1")
    if c.line_dedup.min_documents < 2:
        p.append("corpus.line_dedup.min_documents: must be >= 2")
    if c.knowledge is not None and primary(c, "target") is not None:
        p.extend(kg2text.problems(c.knowledge, primary(c, "target").language, "corpus.knowledge"))  # type: ignore[union-attr]
    if not 0.0 < c.heldout_fraction < 0.5:
        p.append("corpus.heldout_fraction: must be between 0 and 0.5")
    if c.docs_per_group < 1:
        p.append("corpus.docs_per_group: must be >= 1")
    p.extend(_executor_problems(c))
    for note in lid.support_notes(c):
        log.warning(note)
    return p


def source_list_problems(c: CorpusConfig) -> list[str]:
    """Each source's own problems, and a list's: empty, a weight not above 0, a name used twice, a replay
    language that is also a target language."""
    p: list[str] = []
    names: dict[str, str] = {}
    target_languages = {s.language for s in sources_of(c, "target")}
    for role in ROLES:
        value = c.target if role == "target" else c.replay
        if value == ():
            p.append(f"corpus.{role}: an empty list; give one source or a list of at least one")
        for i, src in enumerate(sources_of(c, role)):
            key = f"corpus.{role}[{i}]" if isinstance(value, tuple) else f"corpus.{role}"
            p.extend(source_problems(src, key))
            if not source_weight(src) > 0:
                p.append(f"{key}.weight: must be > 0 (got {source_weight(src)}); leave a source out to give it none")
            name = source_name(src)
            if name in names:
                p.append(
                    f"{key}.name: '{name}' already names {names[name]}; give each source a distinct name "
                    "(a source's name defaults to its language)"
                )
            names.setdefault(name, key)
            if role == "replay" and src.language in target_languages:
                p.append(f"{key}.language: '{src.language}' is a target language; replay text must be in another")
    return p


def _executor_problems(c: CorpusConfig) -> list[str]:
    if c.executor not in EXECUTORS:
        return [f"corpus.executor: '{c.executor}' is not one of {', '.join(EXECUTORS)}"]
    p = []
    if c.tasks < 0 or c.workers < 0:
        p.append("corpus.tasks / corpus.workers: must be >= 0")
    if c.executor == "slurm" and shutil.which("sbatch") is None:
        p.append(
            "corpus.executor: slurm needs Slurm's sbatch on the PATH, which this machine lacks; "
            "run on a Slurm login node or use executor: local"
        )
    if c.url_filter and "url-filter" not in c.disable:
        missing = [m for m in ("ahocorasick", "fasteners", "tldextract") if importlib.util.find_spec(m) is None]
        if missing:
            p.append("corpus.url_filter: needs " + ", ".join(missing) + ": pip install 'langadapt[corpus-url]'")
    if c.executor == "ray" and importlib.util.find_spec("ray") is None:
        p.append("corpus.executor: ray needs the package 'ray': pip install 'langadapt[ray]'")
    return p
