"""Bilingual word dictionaries read from files: dictd (Debian's freedict packages) or TSV.

- dictd (Debian's dict-freedict-* packages install `/usr/share/dictd/freedict-xxx-yyy.index`
  beside `.dict.dz`): every headword with each one-word translation.
- TSV: one `word<TAB>word` pair per line.

Which side is which language is told from the vocabularies (`orient`), so a freedict
`swh-eng` file serves an English -> Swahili adaptation as well as the reverse. WECHSEL
(embedding initialisation) and code-switching (training) read them.
"""

from __future__ import annotations

import gzip
import re
from pathlib import Path

from langadapt.errors import InputError

_B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_WORD = re.compile(r"\w+(?:['’]\w+)*")


def words(text: str) -> list[str]:
    """Lower-cased words of any script that separates words with spaces or punctuation."""
    return _WORD.findall(text.lower())


def read_dictionary(path: Path) -> list[tuple[str, str]]:
    """(headword, translation) pairs of one-word entries from a dictd index or a TSV file."""
    if path.suffix == ".index":
        return _read_dictd(path)
    pairs = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            cols = line.rstrip("\n").split("\t")
            if len(cols) >= 2 and cols[0].strip() and cols[1].strip():
                pairs.append((cols[0].strip().lower(), cols[1].strip().lower()))
    if not pairs:
        raise InputError(f"{path}: no word pairs found", hint="a TSV dictionary has one 'source<TAB>target' per line")
    return pairs


def _b64(s: str) -> int:
    n = 0
    for ch in s:
        n = n * 64 + _B64.index(ch)
    return n


def _read_dictd(index: Path) -> list[tuple[str, str]]:
    stem = index.with_suffix("")
    data_path = next((p for p in (stem.with_suffix(".dict.dz"), stem.with_suffix(".dict")) if p.is_file()), None)
    if data_path is None:
        raise InputError(f"{index}: the dictd data file {stem.name}.dict.dz (or .dict) is missing beside it")
    opener = gzip.open if data_path.suffix == ".dz" else open
    with opener(data_path, "rb") as f:
        data = f.read()
    pairs = []
    for line in index.read_text(encoding="utf-8", errors="replace").splitlines():
        cols = line.split("\t")
        if len(cols) < 3 or cols[0].startswith("00-database") or cols[0].startswith("00database"):
            continue
        head = words(cols[0])
        if len(head) != 1:
            continue
        body = data[_b64(cols[1]) : _b64(cols[1]) + _b64(cols[2])].decode("utf-8", "replace")
        for translation in _translations(body):
            pairs.append((head[0], translation))
    if not pairs:
        raise InputError(f"{index}: no one-word entries found in this dictd dictionary")
    return pairs


def _translations(body: str) -> list[str]:
    """One-word translations in a dictd entry body (its first line is the headword)."""
    import re

    out = []
    for line in body.splitlines()[1:]:
        line = re.sub(r"\([^)]*\)|\[[^\]]*\]|<[^>]*>|/[^/]*/", " ", line).strip()
        line = re.sub(r"^\d+\.\s*", "", line)
        if not line or line.lower().startswith(("see:", "synonym", "note:", "example", "antonym", "see also")):
            continue
        for part in re.split(r"[,;]", line):
            ws = words(part)
            if len(ws) == 1:
                out.append(ws[0])
    return list(dict.fromkeys(out))


def orient(pairs: list[tuple[str, str]], source_words: set[str], target_words: set[str]) -> list[tuple[str, str]]:
    """The pairs as (source, target), flipping them if the file lists target words first."""
    forward = sum(1 for a, b in pairs if a in source_words and b in target_words)
    backward = sum(1 for a, b in pairs if b in source_words and a in target_words)
    return pairs if forward >= backward else [(b, a) for a, b in pairs]
