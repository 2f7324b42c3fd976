"""Task data: labelled examples from local CSV/JSONL/CoNLL files or a hub data set.

Local files are named `<language>.<split>.<ext>` (`nya.test.conll`, `eng.train.jsonl`),
unless their rows carry `language` and `split` fields. Every example remembers where it
came from (`file:line`), so a bad label or a malformed line is reported at its place.
Nothing is dropped silently: rows without text or label, and dev splits the fixed
protocol does not use, are counted in `TaskData.skipped`.
"""

from __future__ import annotations

import csv
import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from langadapt.errors import InputError, MissingDependencyError

if TYPE_CHECKING:
    from langadapt.evaluate.config import TaskConfig

EXTENSIONS = {".csv": "csv", ".jsonl": "jsonl", ".json": "jsonl", ".conll": "conll", ".iob": "conll", ".bio": "conll"}
SPLITS = {"train": "train", "test": "test", "dev": "dev", "validation": "dev", "valid": "dev"}
_NAME = re.compile(r"^(?P<language>[A-Za-z]{2,3}(?:[_-][A-Za-z]{4})?)[._](?P<split>[A-Za-z]+)$")


@dataclass(frozen=True)
class Example:
    id: str
    language: str
    split: str  # train | test | dev
    text: str = ""
    label: str = ""
    tokens: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    group: str = ""  # book, document: what a split keeps together
    where: str = ""  # file:line, for error messages


@dataclass
class TaskData:
    examples: list[Example]
    provenance: str
    skipped: Counter = field(default_factory=Counter)  # reason -> count

    def select(self, language: str, split: str) -> list[Example]:
        return [e for e in self.examples if e.language == language and e.split == split]

    def languages(self) -> list[str]:
        return sorted({e.language for e in self.examples})


def task_files(pattern: str) -> list[Path]:
    p = Path(pattern).expanduser()
    if p.is_file():
        return [p]
    if p.is_dir():
        return [f for f in sorted(p.rglob("*")) if f.is_file() and f.suffix.lower() in EXTENSIONS]
    return [f for f in sorted(p.parent.glob(p.name)) if f.is_file()] if p.parent.is_dir() else []


def name_parts(path: Path) -> tuple[str, str] | None:
    """(language, split) from a file named <language>.<split>.<ext>, else None."""
    m = _NAME.match(path.name[: -len(path.suffix)] if path.suffix else path.name)
    if not m or m["split"].lower() not in SPLITS:
        return None
    return m["language"], SPLITS[m["split"].lower()]


def read_local(pattern: str, cfg: "TaskConfig", token_level: bool) -> TaskData:
    files = task_files(pattern)
    if not files:
        raise InputError(f"task data: no file matches '{pattern}'", hint="name files <language>.<split>.<ext>")
    data = TaskData([], provenance=f"local files: {', '.join(str(f) for f in files)}")
    for path in files:
        fmt = EXTENSIONS.get(path.suffix.lower())
        if fmt is None:
            raise InputError(f"{path}: unknown task file type; use one of {', '.join(sorted(EXTENSIONS))}")
        if token_level != (fmt == "conll"):
            need = "CoNLL (.conll, one 'word tag' per line)" if token_level else "CSV or JSONL"
            raise InputError(f"{path}: this task reads {need} files")
        parts = name_parts(path)
        rows = _conll(path, parts) if fmt == "conll" else _records(path, fmt, parts, cfg)
        for ex in rows:
            if ex is None:
                data.skipped[f"{path.name}: row without '{cfg.text_field}' or '{cfg.label_field}'"] += 1
                continue
            if ex.split == "dev":
                data.skipped["dev split (not used by the fixed protocol)"] += 1
                continue
            data.examples.append(ex)
    return data


def _raw_rows(path: Path, fmt: str) -> Iterator[tuple[int, dict | None]]:
    with open(path, encoding="utf-8") as f:
        if fmt == "csv":
            for i, row in enumerate(csv.DictReader(f), start=2):
                yield i, row
            return
        for i, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise InputError(f"{path}:{i}: not valid JSON ({e.msg})") from None
            yield i, obj if isinstance(obj, dict) else None


def _records(path: Path, fmt: str, parts: tuple[str, str] | None, cfg: "TaskConfig") -> Iterator[Example | None]:
    for i, row in _raw_rows(path, fmt):
        if row is None:
            raise InputError(f"{path}:{i}: expected a JSON object per line")
        text, label = row.get(cfg.text_field), row.get(cfg.label_field)
        language = row.get("language") or (parts[0] if parts else None)
        split = SPLITS.get(str(row.get("split") or (parts[1] if parts else "")).lower())
        if language is None or split is None:
            raise InputError(
                f"{path}:{i}: no language/split for this row",
                hint="name the file <language>.<split>.<ext> (e.g. nya.test.jsonl) or give rows language and split fields",
            )
        if not isinstance(text, str) or not text.strip() or label is None or str(label) == "":
            yield None
            continue
        yield Example(
            id=str(row.get("id", f"{path.name}:{i}")),
            language=str(language),
            split=split,
            text=text,
            label=str(label),
            group=str(row.get("group", "")),
            where=f"{path}:{i}",
        )


def _conll(path: Path, parts: tuple[str, str] | None) -> Iterator[Example]:
    """CoNLL / IOB: one 'word ... tag' per line (tab or space separated), blank line between sentences."""
    if parts is None:
        raise InputError(f"{path}: cannot tell language and split; name CoNLL files <language>.<split>.conll")
    language, split = parts
    words: list[str] = []
    tags: list[str] = []
    start = 0
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f, start=1):
            line = line.rstrip("\n")
            if not line.strip() or line.startswith("-DOCSTART-"):
                if words:
                    yield Example(
                        f"{path.name}:{start}",
                        language,
                        split,
                        tokens=tuple(words),
                        tags=tuple(tags),
                        where=f"{path}:{start}",
                    )
                words, tags = [], []
                continue
            if line.startswith("#"):
                continue
            cols = line.split("\t") if "\t" in line else line.split()
            if len(cols) < 2 or not cols[0].strip() or not cols[-1].strip():
                raise InputError(
                    f"{path}:{i}: malformed CoNLL line {line[:60]!r}: expected a word and its tag separated by a tab or space",
                    hint="one token per line ('word<TAB>tag'), a blank line between sentences",
                )
            if not words:
                start = i
            words.append(cols[0].strip())
            tags.append(cols[-1].strip())
    if words:
        yield Example(
            f"{path.name}:{start}", language, split, tokens=tuple(words), tags=tuple(tags), where=f"{path}:{start}"
        )


def read_hub(name: str, cfg: "TaskConfig", languages: list[str], token_level: bool) -> TaskData:
    """A hub data set by name, one configuration per language (`subsets: [nya=nya_Latn, ...]`)."""
    try:
        import datasets
    except ImportError:
        raise MissingDependencyError("datasets", f"task data hf:{name}", "pip install 'langadapt[datasets]'") from None
    subsets = dict(s.split("=", 1) for s in cfg.subsets)
    data = TaskData([], provenance=f"hub data set {name} ({', '.join(f'{k}={v}' for k, v in subsets.items())})")
    for lang in languages or list(subsets):
        config = subsets.get(lang)
        try:
            ds = datasets.load_dataset(name, config)
        except Exception as e:  # offline, unknown name, unknown configuration: all one answer for the user
            raise InputError(
                f"task data hf:{name}{f' ({config})' if config else ''} cannot be loaded: {str(e).splitlines()[0][:200]}",
                hint="offline? download it where you are online and point the task's data: at local "
                "<language>.<split>.<ext> files; the bundled builtin:bible-topic works offline",
            ) from None
        for split_name, rows in ds.items():
            split = SPLITS.get(split_name.lower())
            if split is None or split == "dev":
                data.skipped[f"{split_name} split (not used by the fixed protocol)"] += len(rows)
                continue
            names = _label_names(rows, cfg.label_field)
            for i, row in enumerate(rows):
                where = f"hf:{name}/{config or ''}/{split_name}:{i}"
                if token_level:
                    tags = [names[t] if names else str(t) for t in row[cfg.label_field]]
                    data.examples.append(
                        Example(where, lang, split, tokens=tuple(row[cfg.tokens_field]), tags=tuple(tags), where=where)
                    )
                else:
                    label = row[cfg.label_field]
                    label = names[label] if names and isinstance(label, int) else str(label)
                    data.examples.append(
                        Example(where, lang, split, text=row[cfg.text_field], label=label, where=where)
                    )
    return data


def _label_names(rows: object, field_name: str) -> list[str] | None:
    feature = getattr(rows, "features", {}).get(field_name)
    feature = getattr(feature, "feature", feature)  # a sequence of class labels for tags
    return list(getattr(feature, "names", []) or []) or None


def check_labels(train: list[Example], test: list[Example], task: str, token_level: bool) -> None:
    """Every test label must occur in training; otherwise the score would silently punish the model."""
    known = {t for e in train for t in e.tags} if token_level else {e.label for e in train}
    for e in test:
        bad = [t for t in e.tags if t not in known] if token_level else ([e.label] if e.label not in known else [])
        if bad:
            raise InputError(
                f"task '{task}': {e.where}: label '{bad[0]}' of the test split does not occur in the training data "
                f"(known: {', '.join(sorted(known))[:300]})",
                hint="fix the label, or add training examples for it",
            )
