"""Parallel data: aligned sentence pairs, from files or the bundled Bible bitext.

Three file layouts (`ParallelConfig.align`): one TSV file of two columns; two text files
aligned line by line; two files of `id<TAB>text` lines (or .jsonl records) matched by id.
`builtin:bible-bitext` is the bundled Chichewa-English Bible aligned by verse
(`sources/bible.py`), each pair grouped by its book so that held-out books stay held out;
the books the bible-bitext evaluation set is drawn from are never among its pairs.

`pair_problems` reads the files once and says, one message each, what makes them unusable:
files that are missing, unequal line counts, lines without two columns, empty sides, ids on
one side only or twice, languages that do not fit the recipe. `read_pairs` trusts that they
passed and returns the pairs in file order.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from langadapt.config import ParallelConfig

BUILTIN_BITEXT = "builtin:bible-bitext"
BUILTIN_LANGUAGES = ("nya", "eng")
ALIGNS = ("auto", "column", "line", "id")
_SHOWN = 3  # locations quoted in a message


@dataclass(frozen=True)
class Pair:
    first: str
    second: str
    group: str  # the book of a Bible verse; the pair's id (or line) for files
    where: str  # file and line, or the verse id


def resolved_align(cfg: ParallelConfig) -> str:
    if cfg.align != "auto":
        return cfg.align
    return "line" if cfg.second_path else "column"


def pair_languages(cfg: ParallelConfig, target: str, replay: str | None) -> tuple[str, ...]:
    """The (first, second) side's languages: the configured ones, else the defaults of the help text."""
    if cfg.languages:
        return tuple(cfg.languages)
    if cfg.path == BUILTIN_BITEXT:
        return BUILTIN_LANGUAGES
    return (target, replay or "")


def language_problems(cfg: ParallelConfig, target: str, replay: str | None, key: str) -> list[str]:
    langs = pair_languages(cfg, target, replay)
    if len(langs) != 2 or not all(langs) or langs[0] == langs[1]:
        shown = ", ".join(langs) or "none"
        return [f"{key}.languages: give two distinct language codes, first side then second (now: {shown})"]
    if target not in langs:
        return [
            f"{key}.languages: {langs[0]} and {langs[1]}, but corpus.target's language is {target}: one side must be "
            "the target language"
        ]
    if cfg.path == BUILTIN_BITEXT and set(langs) != set(BUILTIN_LANGUAGES):
        return [f"{key}: builtin:bible-bitext holds nya and eng, not {langs[0]} and {langs[1]}"]
    return []


def pair_problems(cfg: ParallelConfig, key: str) -> list[str]:
    """What makes the pairs unusable (reads the files; the bundled bitext is trusted)."""
    if cfg.align not in ALIGNS:
        return [f"{key}.align: '{cfg.align}' is not one of {', '.join(ALIGNS)}"]
    if cfg.max_pairs < 0:
        return [f"{key}.max_pairs: must be >= 0"]
    if cfg.path == BUILTIN_BITEXT:
        return []
    if cfg.path.startswith("builtin:"):
        return [f"{key}.path: the only bundled parallel data is {BUILTIN_BITEXT}"]
    align = resolved_align(cfg)
    files = [cfg.path] + ([cfg.second_path] if cfg.second_path else [])
    missing = [f for f in files if not Path(f).is_file()]
    if missing:
        return [f"{key}: no such file: {', '.join(missing)}"]
    if align == "column" and cfg.second_path:
        return [f"{key}.align: column reads one TSV file; with second_path use line or id"]
    if align in ("line", "id") and not cfg.second_path:
        return [f"{key}.align: {align} matches two files; set second_path (or use align: column for one TSV file)"]
    try:
        _, problems = _read(cfg, align)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        return [f"{key}: cannot read the pairs: {e}"]
    return [f"{key}: {p}" for p in problems]


def read_pairs(cfg: ParallelConfig) -> list[Pair]:
    """The pairs in file order (at most max_pairs), as `pair_problems` checked them."""
    if cfg.path == BUILTIN_BITEXT:
        pairs = _bible_pairs()
    else:
        pairs, problems = _read(cfg, resolved_align(cfg))
        if problems:  # validation reports them before any work; a file changed since
            from langadapt.errors import ConfigError

            raise ConfigError([f"train.parallel: {p}" for p in problems])
    return pairs[: cfg.max_pairs] if cfg.max_pairs else pairs


def _bible_pairs() -> list[Pair]:
    from langadapt.sources.bible import BITEXT_BOOKS, aligned_verses
    from langadapt.sources.bundled import bible_books

    rank = {b["code"]: i for i, b in enumerate(bible_books())}

    def order(vid: str) -> tuple[int, int, int]:
        book, chapter, verse = vid.split(".")
        return rank[book], int(chapter), int(verse)

    out = []
    for vid, texts in sorted(aligned_verses().items(), key=lambda kv: order(kv[0])):  # in canonical order
        book = vid.split(".")[0]
        if book not in BITEXT_BOOKS:
            out.append(Pair(texts["nya"], texts["eng"], book, vid))
    return out


def _lines(path: str) -> list[str]:
    return Path(path).read_text(encoding="utf-8").splitlines()


def _read(cfg: ParallelConfig, align: str) -> tuple[list[Pair], list[str]]:
    if align == "column":
        return _read_columns(cfg.path)
    if align == "line":
        return _read_lines(cfg.path, cfg.second_path)
    return _read_ids(cfg)


def _empty_problem(empty: list[str]) -> list[str]:
    if not empty:
        return []
    return [
        f"{len(empty)} pairs have an empty side ({', '.join(empty[:_SHOWN])}{', ...' if len(empty) > _SHOWN else ''}); "
        "remove them or fill them in"
    ]


def _read_columns(path: str) -> tuple[list[Pair], list[str]]:
    pairs, bad, empty = [], [], []
    for i, line in enumerate(_lines(path), start=1):
        if not line.strip():
            continue  # blank lines separate nothing: skipped
        cols = line.split("\t")
        where = f"{Path(path).name}:{i}"
        if len(cols) != 2:
            bad.append(f"{where} ({len(cols)} columns)")
            continue
        a, b = cols[0].strip(), cols[1].strip()
        if not a or not b:
            empty.append(where)
        pairs.append(Pair(a, b, where, where))
    problems = []
    if bad:
        problems.append(
            f"{len(bad)} lines are not two tab-separated columns ({', '.join(bad[:_SHOWN])}"
            f"{', ...' if len(bad) > _SHOWN else ''}): each line is first<TAB>second"
        )
    if not pairs and not bad:
        problems.append(f"{path} holds no pairs")
    return pairs, problems + _empty_problem(empty)


def _read_lines(first: str, second: str) -> tuple[list[Pair], list[str]]:
    a, b = _lines(first), _lines(second)
    if len(a) != len(b):
        return [], [
            f"align: line needs files of equal length: {Path(first).name} has {len(a)} lines, "
            f"{Path(second).name} has {len(b)}; are they the same text, with one sentence per line?"
        ]
    pairs, empty = [], []
    for i, (x, y) in enumerate(zip(a, b), start=1):
        where = f"line {i}"
        if not x.strip() and not y.strip():
            continue  # a blank line on both sides: nothing to pair
        if not x.strip() or not y.strip():
            empty.append(where)
        pairs.append(Pair(x.strip(), y.strip(), where, f"{Path(first).name}:{i}"))
    if not pairs:
        return [], [f"{first} and {second} hold no pairs"]
    return pairs, _empty_problem(empty)


def _id_texts(path: str, cfg: ParallelConfig) -> tuple[list[tuple[str, str]], list[str]]:
    rows, bad = [], []
    for i, line in enumerate(_lines(path), start=1):
        if not line.strip():
            continue
        if path.endswith(".jsonl"):
            record = json.loads(line)
            if cfg.id_field not in record or cfg.text_field not in record:
                bad.append(f"{Path(path).name}:{i}")
                continue
            rows.append((str(record[cfg.id_field]), str(record[cfg.text_field] or "")))
        else:
            cols = line.split("\t", 1)
            if len(cols) != 2:
                bad.append(f"{Path(path).name}:{i}")
                continue
            rows.append((cols[0].strip(), cols[1]))
    problems = []
    if bad:
        what = f"the keys {cfg.id_field} and {cfg.text_field}" if path.endswith(".jsonl") else "id<TAB>text"
        problems.append(
            f"{len(bad)} lines lack {what} ({', '.join(bad[:_SHOWN])}{', ...' if len(bad) > _SHOWN else ''})"
        )
    return rows, problems


def _read_ids(cfg: ParallelConfig) -> tuple[list[Pair], list[str]]:
    (a, pa), (b, pb) = _id_texts(cfg.path, cfg), _id_texts(cfg.second_path, cfg)
    problems = pa + pb
    for path, rows in ((cfg.path, a), (cfg.second_path, b)):
        seen: set[str] = set()
        twice = sorted({i for i, _ in rows if i in seen or seen.add(i)})  # type: ignore[func-returns-value]
        if twice:
            problems.append(
                f"{Path(path).name}: {len(twice)} ids occur more than once (e.g. {', '.join(twice[:_SHOWN])})"
            )
    first, second = dict(a), dict(b)
    only = [
        (Path(p).name, sorted(set(x) - set(y)))
        for p, x, y in ((cfg.path, first, second), (cfg.second_path, second, first))
    ]
    lone = [f"{len(ids)} ids are only in {name} (e.g. {', '.join(ids[:_SHOWN])})" for name, ids in only if ids]
    if lone:
        problems.append(f"{'; '.join(lone)}: each id needs a text on both sides")
    pairs, empty = [], []
    for i, text in first.items():
        if i in second:
            if not text.strip() or not second[i].strip():
                empty.append(f"id {i}")
            pairs.append(Pair(text.strip(), second[i].strip(), i, f"id {i}"))
    if not pairs and not problems:
        problems.append(f"{cfg.path} and {cfg.second_path} share no ids")
    return pairs, problems + _empty_problem(empty)
