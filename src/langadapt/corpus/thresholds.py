"""Quality thresholds for a language the English thresholds were never tuned on.

The English thresholds (Gopher, FineWeb) cut English text at some point of each
statistic's distribution. For another language the same number can mean something else
(mean word length in an agglutinative language, n-gram repetition in a script segmented by
characters), so each threshold is moved by how the language's own distribution differs from
the English reference, as FineWeb2 did (FineWeb2's reference was web English; the shipped one
is Bible and UDHR English, a limitation `LIMITATION` states in every thresholds.json):

- `median_ratio`: English threshold x (language median / English reference median); for the
  repetition statistics only ever looser than English (see TAIL_STATS);
- `quantile`: the language's value at the fraction of documents the English threshold
  removes from the English reference;
- `english`: the English values as they are.

Every value is written to `corpus/thresholds.json` with the statistic, the reference and
how it was obtained, so a user can read it and set a different one in the recipe.
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources
from typing import Any

import numpy as np

from langadapt.corpus.filters import ENGLISH, FRACTIONS, NOT_DERIVED

# Repetition statistics: the English thresholds sit far in the tail (many times the median), where a
# language's typical documents say little; a language that repeats more (reduplication, scripts counted
# by characters) loosens them, one that repeats less does not tighten them.
TAIL_STATS = {"dup_lines", "dup_line_chars", "dup_paragraphs", "dup_paragraph_chars", "top_2gram", "top_3gram",
              "top_4gram", "dup_5gram", "dup_10gram"}  # fmt: skip


@lru_cache(maxsize=1)
def reference() -> dict[str, Any]:
    """English reference statistics (`data/corpus/reference.json`): medians and the fraction each threshold cuts."""
    text = resources.files("langadapt").joinpath("data/corpus/reference.json").read_text(encoding="utf-8")
    return json.loads(text)


# What the shipped reference is not: FineWeb2 moved its thresholds relative to web English, and so should a web
# corpus's; langadapt measures Bible and UDHR English, the only English it ships. Written into reference.json and,
# from there, into every run's corpus/thresholds.json.
REGISTER = "scripture (World English Bible) and a legal declaration (UDHR): edited prose, not web text"
LIMITATION = (
    "FineWeb2 derived its thresholds relative to web English (FineWeb); this reference is Bible and UDHR English, "
    "because no web-register English ships with langadapt or installs from a package. For web text in another "
    "language a derived threshold therefore moves by the difference between web text and scripture (line "
    "lengths, punctuation, repetition, bullets) as well as by the difference between the languages; read the "
    "values here with that in mind, keep the English values (corpus.quality.derive: english), or set thresholds "
    "in the recipe (corpus.quality.thresholds)"
)


def provenance() -> dict[str, Any]:
    """What the thresholds were derived against: the reference's description, register, size and limitation."""
    ref = reference()
    return {k: ref[k] for k in ("description", "register", "documents", "limitation") if k in ref}


def build_reference(stats: dict[str, np.ndarray], description: str) -> dict[str, Any]:
    """Reference figures from English per-document statistics (how `data/corpus/reference.json` was made)."""
    out: dict[str, Any] = {
        "description": description,
        "register": REGISTER,
        "limitation": LIMITATION,
        "documents": int(len(next(iter(stats.values())))),
        "stats": {},
    }
    for field, (stat, value) in ENGLISH.items():
        values = stats[stat]
        cut = float(np.mean(values < value) if field.startswith("min_") else np.mean(values > value))
        out["stats"].setdefault(stat, {"median": float(np.median(values))})
        out["stats"][stat][f"cut:{field}"] = cut
    return out


def derive(
    stats: dict[str, np.ndarray], method: str, min_documents: int, overrides: dict[str, float | None]
) -> dict[str, dict[str, Any]]:
    """Threshold field -> {value, statistic, english, how, ...} for one language."""
    ref = reference()
    n = len(next(iter(stats.values()))) if stats else 0
    out: dict[str, dict[str, Any]] = {}
    for field, (stat, english) in ENGLISH.items():
        entry: dict[str, Any] = {"statistic": stat, "english": english, "reference": ref["description"]}
        values = stats.get(stat, np.zeros(0))
        ref_stat = ref["stats"][stat]
        entry["reference_median"] = ref_stat["median"]
        entry["language_median"] = float(np.median(values)) if len(values) else None
        if overrides.get(field) is not None:
            entry.update(value=float(overrides[field]), how="set in the recipe")
        elif method == "english" or field in NOT_DERIVED:
            entry.update(value=float(english), how="english value")
        elif n < min_documents:
            entry.update(value=float(english), how=f"english value: {n} documents are too few to derive from")
        elif method == "quantile":
            q = ref_stat[f"cut:{field}"]
            entry["reference_cut"] = q
            if q == 0.0:
                entry.update(value=float(english), how="english value: it cuts no English reference document")
            else:
                entry.update(value=float(np.quantile(values, q if field.startswith("min_") else 1 - q)), how="quantile")
        else:
            entry.update(_median_ratio(english, ref_stat["median"], entry["language_median"]))
            if stat in TAIL_STATS and entry["value"] < english:
                entry.update(value=float(english), how=entry["how"] + "; kept at the english value (never stricter)")
        if stat in FRACTIONS:
            entry["value"] = float(min(max(entry["value"], 0.0), 1.0))
        out[field] = entry
    return out


def _median_ratio(english: float, ref_median: float, lang_median: float | None) -> dict[str, Any]:
    if not ref_median or lang_median is None:
        return {"value": float(english), "how": "english value: the reference median is 0, no ratio"}
    ratio = lang_median / ref_median
    return {"value": float(english * ratio), "how": f"median ratio {ratio:.3f}"}


def values(derived: dict[str, dict[str, Any]], disabled: set[str]) -> dict[str, float]:
    """Threshold field -> value, without the fields of disabled steps (what the filter applies)."""
    from langadapt.corpus.filters import step_of

    return {f: e["value"] for f, e in derived.items() if step_of(f) not in disabled}
