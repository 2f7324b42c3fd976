"""Writing systems: which script a text is in, and how to cut it into words.

The script comes from Unicode data (a range table in `data/corpus/scripts.tsv`), not from
the language identifier, so text in a language no identifier knows is still checked by
script. Word statistics need words: scripts written without spaces (Thai, Lao, Khmer,
Myanmar, Han, kana, Tibetan, Yi) count every character of those scripts as a word, so the
quality filters measure them the same way everywhere and their thresholds are derived
from the corpus rather than borrowed from English.
"""

from __future__ import annotations

import bisect
from collections import Counter
from functools import lru_cache
from importlib import resources

# Scripts written without spaces between words.
NO_SPACE_SCRIPTS = ("Thai", "Laoo", "Khmr", "Mymr", "Hani", "Hira", "Kana", "Tibt", "Yiii", "Bali", "Java")
_UNSPACED = frozenset(NO_SPACE_SCRIPTS)


@lru_cache(maxsize=1)
def _table() -> tuple[list[int], list[int], list[str]]:
    text = resources.files("langadapt").joinpath("data/corpus/scripts.tsv").read_text(encoding="utf-8")
    starts, ends, names = [], [], []
    for line in text.splitlines()[2:]:
        a, b, code = line.split("\t")
        starts.append(int(a, 16))
        ends.append(int(b, 16))
        names.append(code)
    return starts, ends, names


@lru_cache(maxsize=1)
def script_codes() -> frozenset[str]:
    return frozenset(_table()[2])


@lru_cache(maxsize=65536)
def char_script(ch: str) -> str:
    """ISO 15924 code of a character's script; '' for common characters (digits, punctuation, spaces)."""
    starts, ends, names = _table()
    cp = ord(ch)
    i = bisect.bisect_right(starts, cp) - 1
    return names[i] if i >= 0 and cp <= ends[i] else ""


def script_counts(text: str) -> Counter[str]:
    """Characters per script (common characters left out)."""
    counts: Counter[str] = Counter()
    for ch, n in Counter(text).items():
        s = char_script(ch)
        if s:
            counts[s] += n
    return counts


def dominant_script(text: str) -> tuple[str, float]:
    """(script, fraction of the text's script characters in it); ('', 0.0) for text without letters.

    Japanese mixes Han and kana: they count as one script, 'Jpan', when kana are present.
    """
    counts = script_counts(text)
    if counts["Hira"] or counts["Kana"]:
        counts["Jpan"] = counts.pop("Hani", 0) + counts.pop("Hira", 0) + counts.pop("Kana", 0)
    total = sum(counts.values())
    if not total:
        return "", 0.0
    script, n = counts.most_common(1)[0]
    return script, n / total


@lru_cache(maxsize=1)
def _unspaced_class() -> str:
    """A `re` character class of the scripts written without spaces, from the range table."""
    starts, ends, names = _table()
    ranges = [f"\\U{a:08x}-\\U{b:08x}" for a, b, n in zip(starts, ends, names) if n in NO_SPACE_SCRIPTS]
    return "[" + "".join(ranges) + "]"


@lru_cache(maxsize=1)
def _word_pattern():  # type: ignore[no-untyped-def]
    import re

    cls = _unspaced_class()
    return re.compile(rf"{cls}|[^\s{cls[1:-1]}]+")


def has_unspaced_script(text: str) -> bool:
    # the distinct characters of a text are few; their scripts are cached
    return any(char_script(c) in _UNSPACED for c in set(text))


def words(text: str) -> list[str]:
    """Words of any script: runs between spaces, and single characters of scripts without spaces."""
    if not has_unspaced_script(text):
        return text.split()
    return _word_pattern().findall(text)


def make_word_tokenizer():  # type: ignore[no-untyped-def]
    """The same segmentation as a datatrove `WordTokenizer`, for datatrove's own blocks (MinHash, filters)."""
    from datatrove.utils.word_tokenizers import WordTokenizer

    class ScriptWordTokenizer(WordTokenizer):
        """Script-aware words without downloads (datatrove's default tokenizers fetch models)."""

        def word_tokenize(self, text: str) -> list[str]:
            return words(text)

        def sent_tokenize(self, text: str) -> list[str]:
            return [s for s in text.splitlines() if s.strip()]

        def span_tokenize(self, text: str) -> list[tuple[int, int]]:
            spans, pos = [], 0
            for s in self.sent_tokenize(text):
                start = text.index(s, pos)
                spans.append((start, start + len(s)))
                pos = start + len(s)
            return spans

    return ScriptWordTokenizer()


@lru_cache(maxsize=1)
def _span_pattern():  # type: ignore[no-untyped-def]
    import re

    cls = _unspaced_class()
    return re.compile(rf"{cls}|[^\s{cls[1:-1]}]+")


def _is_edge(ch: str) -> bool:
    """Punctuation or a symbol: trimmed from a word's edges (quotes, commas, brackets)."""
    import unicodedata

    return unicodedata.category(ch)[0] in "PS"


def word_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of each word of `text`, of any script: the runs `words` finds, with punctuation and
    symbols trimmed from their edges (a word's inner apostrophe or hyphen stays), so that a word can be
    replaced in place. Runs of punctuation alone are no word."""
    spans = []
    for m in _span_pattern().finditer(text):
        start, end = m.start(), m.end()
        while start < end and _is_edge(text[start]):
            start += 1
        while end > start and _is_edge(text[end - 1]):
            end -= 1
        if start < end:
            spans.append((start, end))
    return spans
