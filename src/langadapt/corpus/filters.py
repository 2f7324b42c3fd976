"""The corpus stage's steps, registered by name (`langadapt list filters`), and the quality statistics.

Quality filtering is "measure once, decide later": `measure` computes every statistic of a
document once and stores it with the document; thresholds (derived per language in
`thresholds.py`, or set in the recipe) are applied afterwards, so changing one and re-running
does not recompute anything. The statistics are those of Gopher (quality and repetition) and
FineWeb, computed on script-aware words (`script.words`).
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

from langadapt.corpus.script import words
from langadapt.registry import Registry


@dataclass(frozen=True)
class Step:
    """A cleaning step: `kind` says where it runs; quality steps name their threshold fields."""

    kind: str  # read | lid | quality | dedup | format | url
    thresholds: tuple[str, ...] = ()


FILTERS: Registry[Step] = Registry("filters")


def _step(name: str, kind: str, help: str, *thresholds: str) -> None:
    FILTERS.register(name, help)(Step(kind, thresholds))


_step("length", "read", "drop documents shorter than corpus.min_chars or longer than corpus.max_chars")
_step("lid", "lid", "keep documents whose identified language is the source's language (pycld2 or a GlotLID file)")
_step("script", "lid", "keep documents written in the source's script (Unicode data; works for any language)")
_step("pii", "format", "replace e-mail addresses, phone numbers and IP addresses with placeholders")
_step("line-dedup", "dedup", "remove lines repeated across many documents (boilerplate headers and footers)")
_step("exact-dedup", "dedup", "drop documents whose normalised text already appeared in the same language")
_step("near-dedup", "dedup", "MinHash LSH near-duplicate removal (datatrove's stages); cluster sizes kept")
_step("url-filter", "url", "datatrove's URL block list (adult / spam domains); runs when corpus.url_filter is on")
_Q = "quality"
_step("words", _Q, "Gopher: document length in words", "min_words", "max_words")
_step("mean-word-length", _Q, "Gopher: mean word length", "min_mean_word_length", "max_mean_word_length")
_step("symbol-ratio", _Q, "Gopher: '#' and ellipses per word", "max_symbol_ratio")
_step("bullet-lines", _Q, "Gopher: lines starting with a bullet", "max_bullet_lines")
_step("ellipsis-lines", _Q, "Gopher: lines ending with an ellipsis", "max_ellipsis_lines")
_step("alpha-words", _Q, "Gopher: words containing a letter", "min_alpha_words")
_step("stop-words", _Q, "Gopher: presence of the language's most common words", "min_stop_words")
_step("dup-lines", _Q, "Gopher repetition: duplicated lines", "max_dup_lines", "max_dup_line_chars")
_step("dup-paragraphs", _Q, "Gopher repetition: duplicated paragraphs", "max_dup_paragraphs", "max_dup_paragraph_chars")
_step(
    "top-ngrams", _Q, "Gopher repetition: most frequent 2/3/4-grams", "max_top_2gram", "max_top_3gram", "max_top_4gram"
)
_step("dup-ngrams", _Q, "Gopher repetition: duplicated 5- and 10-grams", "max_dup_5gram", "max_dup_10gram")
_step("terminal-punct", _Q, "FineWeb: lines ending in terminal punctuation (any script)", "min_terminal_punct_lines")
_step("short-lines", _Q, "FineWeb: lines under 30 characters", "max_short_lines")
_step("non-alpha-lines", _Q, "lines that are mostly digits, symbols or markup", "max_non_alpha_lines")
_step("bad-chars", _Q, "replacement and control characters: repaired bytes, binary junk", "max_bad_chars")

# Threshold field -> (statistic it bounds, English value). English values are Gopher's, FineWeb's, or (for
# non_alpha_lines and bad_chars) this project's.
ENGLISH: dict[str, tuple[str, float]] = {
    "min_words": ("words", 50),
    "max_words": ("words", 100_000),
    "min_mean_word_length": ("mean_word_length", 3),
    "max_mean_word_length": ("mean_word_length", 10),
    "max_symbol_ratio": ("symbol_ratio", 0.1),
    "max_bullet_lines": ("bullet_lines", 0.9),
    "max_ellipsis_lines": ("ellipsis_lines", 0.3),
    "min_alpha_words": ("alpha_words", 0.8),
    "min_stop_words": ("stop_words", 2),
    "max_dup_lines": ("dup_lines", 0.3),
    "max_dup_line_chars": ("dup_line_chars", 0.2),
    "max_dup_paragraphs": ("dup_paragraphs", 0.3),
    "max_dup_paragraph_chars": ("dup_paragraph_chars", 0.2),
    "max_top_2gram": ("top_2gram", 0.2),
    "max_top_3gram": ("top_3gram", 0.18),
    "max_top_4gram": ("top_4gram", 0.16),
    "max_dup_5gram": ("dup_5gram", 0.15),
    "max_dup_10gram": ("dup_10gram", 0.1),
    "min_terminal_punct_lines": ("terminal_punct_lines", 0.12),
    "max_short_lines": ("short_lines", 0.67),
    "max_non_alpha_lines": ("non_alpha_lines", 0.5),
    "max_bad_chars": ("bad_chars", 0.01),
}
FRACTIONS = {s for s, _ in ENGLISH.values()} - {"words", "mean_word_length", "stop_words", "symbol_ratio"}
NOT_DERIVED = {"max_bad_chars"}  # broken bytes are broken in every language
STATS = tuple(sorted({s for s, _ in ENGLISH.values()}))


def step_of(threshold: str) -> str:
    return next(e.name for e in FILTERS.entries() if threshold in e.obj.thresholds)


def terminal_punctuation() -> frozenset[str]:
    from datatrove.utils.text import TERMINAL_PUNCTUATION

    return frozenset(TERMINAL_PUNCTUATION)


def _punctuation() -> frozenset[str]:
    from datatrove.utils.text import PUNCTUATION_SET

    return frozenset(PUNCTUATION_SET)


_CLOSERS = "\"'”’»›)]}」』）"  # closing quotes and brackets after a sentence's final punctuation
_PARAGRAPHS = re.compile(r"\n\s*\n")
_BAD = re.compile("[\ufffd\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def measure(text: str, stop_words: frozenset[str], punct: frozenset[str], terminal: frozenset[str]) -> dict[str, float]:
    """Every quality statistic of one (normalised) document."""
    from datatrove.pipeline.filters.gopher_repetition_filter import (
        find_all_duplicate,
        find_duplicates,
        find_top_duplicate,
        get_n_grams,
    )

    ws = words(text)
    content = [w for w in ws if not all(c in punct for c in w)]
    n_words = max(len(ws), 1)
    lines = [line for line in text.split("\n") if line.strip()] or [""]
    paragraphs = [p for p in _PARAGRAPHS.split(text) if p.strip()] or [""]
    chars = max(len(text), 1)
    s: dict[str, float] = {
        "words": len(content),
        "mean_word_length": sum(map(len, content)) / len(content) if content else 0.0,
        "symbol_ratio": (text.count("#") + text.count("...") + text.count("…")) / n_words,
        "bullet_lines": sum(line.lstrip().startswith(("•", "-", "*", "·", "‣")) for line in lines) / len(lines),
        "ellipsis_lines": sum(line.rstrip().endswith(("...", "…")) for line in lines) / len(lines),
        "alpha_words": sum(any(c.isalpha() for c in w) for w in ws) / n_words,
        "stop_words": len(stop_words.intersection(w.lower() for w in content)),
        "terminal_punct_lines": sum(line.rstrip().rstrip(_CLOSERS)[-1:] in terminal for line in lines) / len(lines),
        "short_lines": sum(len(line) < 30 for line in lines) / len(lines),
        "non_alpha_lines": sum(_mostly_not_letters(line) for line in lines) / len(lines),
        "bad_chars": len(_BAD.findall(text)) / chars,
    }
    dup, dup_chars = find_duplicates(lines)
    s["dup_lines"], s["dup_line_chars"] = dup / len(lines), dup_chars / chars
    dup, dup_chars = find_duplicates(paragraphs)
    s["dup_paragraphs"], s["dup_paragraph_chars"] = dup / len(paragraphs), dup_chars / chars
    word_chars = max(sum(map(len, ws)), 1)
    for n in (2, 3, 4):
        grams = get_n_grams(ws, n)
        s[f"top_{n}gram"] = find_top_duplicate(grams) / word_chars if len(grams) > 1 else 0.0
    for n in (5, 10):
        s[f"dup_{n}gram"] = find_all_duplicate(ws, n) / word_chars if len(ws) > n else 0.0
    return s


def _mostly_not_letters(line: str) -> bool:
    visible = [c for c in line if not c.isspace()]
    return bool(visible) and sum(c.isalpha() for c in visible) < 0.5 * len(visible)


def quality_reason(stats: dict[str, float], thresholds: dict[str, float]) -> tuple[str, str] | None:
    """(step, threshold field) of the first threshold a document fails, or None if it passes them all."""
    for field, value in thresholds.items():
        stat = stats.get(ENGLISH[field][0])
        if stat is None:
            continue
        if (field.startswith("min_") and stat < value) or (field.startswith("max_") and stat > value):
            return step_of(field), field
    return None


def stop_words_from(texts: list[str], n: int = 8) -> list[str]:
    """The language's stop words, taken from its own text: the n words in the most documents."""
    df: Counter[str] = Counter()
    punct = _punctuation()
    for text in texts:
        df.update({w.lower() for w in words(text) if not all(c in punct for c in w)})
    return [w for w, _ in df.most_common(n)]
