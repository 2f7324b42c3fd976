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

import numpy as np

from langadapt.registry import Registry
from langadapt.script import has_unspaced_script, words


@dataclass(frozen=True)
class Step:
    """A cleaning step: `kind` says where it runs; quality steps name their threshold fields."""

    kind: str  # read | lid | quality | dedup | format | url
    thresholds: tuple[str, ...] = ()


FILTERS: Registry[Step] = Registry("filters")


def _step(name: str, kind: str, help: str, *thresholds: str) -> None:
    if thresholds:
        help += f" (corpus.quality.thresholds: {', '.join(thresholds)})"
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


_BULLETS = ("•", "-", "*", "·", "‣")
_CLOSERS = "\"'”’»›)]}」』）"  # closing quotes and brackets after a sentence's final punctuation
_PARAGRAPHS = re.compile(r"\n\s*\n")
_BAD = re.compile("[\ufffd\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


_CONTENT = re.compile(r"\S*\w\S*")  # a space-separated word with a letter or digit (not only symbols)
_ALPHA = re.compile(r"\S*[^\W\d_]\S*")  # ... with a letter
# odd 64-bit multipliers: an n-gram's key is sum(id[i+j] * M[j]) mod 2**64 (word ids are exact, keys collide ~never)
_MULT = np.random.default_rng(0).integers(1, 2**63, size=10, dtype=np.uint64) | np.uint64(1)


def measure(text: str, stop_words: frozenset[str], punct: frozenset[str], terminal: frozenset[str]) -> dict[str, float]:
    """Every quality statistic of one (normalised) document.

    The definitions are Gopher's and FineWeb's (datatrove's filters); the repetition statistics work on
    integer word ids with numpy instead of joined strings, which makes them several times faster.
    """
    from datatrove.pipeline.filters.gopher_repetition_filter import find_duplicates

    ws = words(text)
    if has_unspaced_script(text):
        content = [w for w in ws if not all(c in punct for c in w)]
        n_alpha = sum(any(c.isalpha() for c in w) for w in ws)
    else:
        content = _CONTENT.findall(text)
        n_alpha = len(_ALPHA.findall(text))
    n_words = max(len(ws), 1)
    lines = [line for line in text.split("\n") if line.strip()] or [""]
    paragraphs = [p for p in _PARAGRAPHS.split(text) if p.strip()] or [""]
    chars = max(len(text), 1)
    s: dict[str, float] = {
        "words": len(content),
        "mean_word_length": sum(map(len, content)) / len(content) if content else 0.0,
        "symbol_ratio": (text.count("#") + text.count("...") + text.count("…")) / n_words,
        "bullet_lines": sum(line.lstrip().startswith(_BULLETS) for line in lines) / len(lines),
        "ellipsis_lines": sum(line.rstrip().endswith(("...", "…")) for line in lines) / len(lines),
        "alpha_words": n_alpha / n_words,
        "stop_words": len(stop_words.intersection(map(str.lower, content))) if stop_words else 0,
        "terminal_punct_lines": sum(line.rstrip().rstrip(_CLOSERS)[-1:] in terminal for line in lines) / len(lines),
        "short_lines": sum(len(line) < 30 for line in lines) / len(lines),
        "non_alpha_lines": sum(_mostly_not_letters(line) for line in lines) / len(lines),
        "bad_chars": len(_BAD.findall(text)) / chars,
    }
    dup, dup_chars = find_duplicates(lines)
    s["dup_lines"], s["dup_line_chars"] = dup / len(lines), dup_chars / chars
    dup, dup_chars = find_duplicates(paragraphs)
    s["dup_paragraphs"], s["dup_paragraph_chars"] = dup / len(paragraphs), dup_chars / chars
    s.update(_ngram_repetition(ws))
    return s


def _ngram_repetition(ws: list[str]) -> dict[str, float]:
    """Gopher's top 2/3/4-gram and duplicated 5/10-gram character fractions, vectorised over word hashes."""
    out = {"top_2gram": 0.0, "top_3gram": 0.0, "top_4gram": 0.0, "dup_5gram": 0.0, "dup_10gram": 0.0}
    if len(ws) < 3:
        return out
    # words numbered by first occurrence: exact, and the same in every process (str hash() is seeded per process,
    # and the n-gram keys below order the ties)
    index: dict[str, int] = {}
    ids = np.fromiter((index.setdefault(w, len(index)) for w in ws), dtype=np.uint64, count=len(ws))
    lens = np.fromiter(map(len, ws), dtype=np.int64, count=len(ws))
    csum = np.concatenate([[0], np.cumsum(lens)])
    word_chars = max(int(csum[-1]), 1)
    for n in (2, 3, 4, 5, 10):
        if len(ws) < n + 1:
            continue
        m = len(ws) - n + 1
        keys = np.zeros(m, dtype=np.uint64)
        for j in range(n):
            keys += ids[j : j + m] * _MULT[j]
        uniq, first, inverse, counts = np.unique(keys, return_index=True, return_inverse=True, return_counts=True)
        if n <= 4:  # the most frequent n-gram: its characters (joined by spaces) times its count
            # ties go to the n-gram that occurs first, as in datatrove's Counter.most_common
            top = int(np.argmin(np.where(counts == counts.max(), first, m)))
            if counts[top] > 1:
                out[f"top_{n}gram"] = (
                    float((csum[first[top] + n] - csum[first[top]] + n - 1) * counts[top]) / word_chars
                )
        else:  # characters of words covered by a repeated occurrence of an n-gram
            repeat = np.flatnonzero(first[inverse] != np.arange(m))
            if len(repeat):
                cover = np.zeros(len(ws) + 1, dtype=np.int64)
                np.add.at(cover, repeat, 1)
                np.add.at(cover, repeat + n, -1)
                out[f"dup_{n}gram"] = float(lens[np.cumsum(cover[:-1]) > 0].sum()) / word_chars
    return out


_NOT_LETTER = re.compile(r"[\W\d_]+")
_SPACE = re.compile(r"\s+")


def _mostly_not_letters(line: str) -> bool:
    visible = len(_SPACE.sub("", line))
    return visible > 0 and len(_NOT_LETTER.sub("", line)) < 0.5 * visible


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
    # ties in document frequency go to the alphabetically first word (a set's order changes from process to process)
    return [w for w, _ in sorted(df.items(), key=lambda item: (-item[1], item[0]))[:n]]
