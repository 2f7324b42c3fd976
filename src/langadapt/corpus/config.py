"""The `corpus` section of a recipe."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from langadapt.config import SourceConfig, opt, req

if TYPE_CHECKING:
    from langadapt.recipe import Recipe


@dataclass(frozen=True, kw_only=True)
class CorpusConfig:
    target: SourceConfig = req("the target-language text to adapt to")
    replay: SourceConfig | None = opt(None, "source-language text replayed during training against forgetting")
    normalization: str = opt("NFC", "Unicode normalisation: NFC, NFKC or none")
    min_chars: int = opt(20, "drop documents shorter than this many characters (reason: too_short)")
    max_chars: int = opt(200_000, "drop documents longer than this many characters (reason: too_long)")
    heldout_groups: tuple[str, ...] = opt(
        (), "groups held out for evaluation (never trained on), in every language; empty: use heldout_fraction"
    )
    heldout_fraction: float = opt(
        0.02, "fraction of groups (chosen by a stable hash) held out when heldout_groups is empty"
    )
    docs_per_group: int = opt(
        100, "txt sources without groups: consecutive documents per group, so held-out text is contiguous"
    )


NORMALIZATIONS = ("NFC", "NFKC", "none")


def check(recipe: "Recipe") -> list[str]:
    """Problems with the corpus section (all of them, for `langadapt validate`)."""
    from langadapt import sources

    c, p = recipe.corpus, []
    p.extend(sources.source_problems(c.target, "corpus.target"))
    if c.replay is not None:
        p.extend(sources.source_problems(c.replay, "corpus.replay"))
        if c.replay.language == c.target.language:
            p.append("corpus.replay.language: must differ from corpus.target.language")
    if c.normalization not in NORMALIZATIONS:
        p.append(f"corpus.normalization: '{c.normalization}' is not one of {', '.join(NORMALIZATIONS)}")
    if c.min_chars < 0:
        p.append("corpus.min_chars: must be >= 0")
    if c.max_chars <= c.min_chars:
        p.append("corpus.max_chars: must be greater than corpus.min_chars")
    if not 0.0 < c.heldout_fraction < 0.5:
        p.append("corpus.heldout_fraction: must be between 0 and 0.5")
    if c.docs_per_group < 1:
        p.append("corpus.docs_per_group: must be >= 1")
    return p
