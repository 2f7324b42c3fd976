"""Knowledge to text: ConceptNet-style triples turned into target-language sentences.

The "Small Models, Big Impact" recipe: facts about concepts, written with per-language
templates the user supplies in YAML, give a small corpus extra, varied text. All the
sentences about one head concept form one document (grouped by that concept); a triple in
another language or with a relation that has no template is counted, never lost.
"""

from __future__ import annotations

import csv
import hashlib
from collections import defaultdict
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from langadapt.errors import InputError
from langadapt.sources.records import Doc, Record

if TYPE_CHECKING:
    from langadapt.corpus.config import KnowledgeConfig

COLUMNS = ("relation", "head", "tail", "language")


def load_templates(spec: str) -> dict[str, dict[str, list[str]]]:
    import yaml

    if spec == "builtin":
        text = resources.files("langadapt").joinpath("data/corpus/templates.yaml").read_text(encoding="utf-8")
    else:
        text = Path(spec).expanduser().read_text(encoding="utf-8")
    data = yaml.safe_load(text) or {}
    if not isinstance(data, dict) or not all(
        isinstance(rels, dict)
        and all(isinstance(t, list) and all(isinstance(s, str) for s in t) for t in rels.values())
        for rels in data.values()
    ):
        raise InputError(f"templates {spec}: expected language -> relation -> list of sentences with {{head}} {{tail}}")
    return data


def problems(cfg: "KnowledgeConfig", language: str, key: str) -> list[str]:
    p = []
    if not Path(cfg.triples).expanduser().is_file():
        p.append(f"{key}.triples: no such file: {cfg.triples}")
    if cfg.templates != "builtin" and not Path(cfg.templates).expanduser().is_file():
        p.append(f"{key}.templates: no such file: {cfg.templates}")
        return p
    try:
        templates = load_templates(cfg.templates)
    except (InputError, ValueError) as e:
        return p + [f"{key}.templates: {e}"]
    if language not in templates:
        p.append(f"{key}.templates: no templates for '{language}' (languages: {', '.join(sorted(templates))})")
    return p


def _triples(path: Path) -> Iterator[dict[str, Any] | None]:
    with open(path, encoding="utf-8", errors="replace", newline="") as f:
        sample = f.read(4096)
        f.seek(0)
        delimiter = "\t" if sample.count("\t") >= sample.count(",") else ","
        rows = csv.reader(f, delimiter=delimiter)
        first = next(rows, None)
        if first is None:
            return
        header = [c.strip().lower() for c in first]
        if not all(c in header for c in COLUMNS):
            header, rows_iter = list(COLUMNS), _chain([first], rows)
        else:
            rows_iter = rows
        idx = {c: header.index(c) for c in COLUMNS}
        for row in rows_iter:
            if len(row) < len(header):
                yield None
                continue
            yield {c: row[i].strip() for c, i in idx.items()}


def _chain(first: list[list[str]], rest: Any) -> Iterator[list[str]]:
    yield from first
    yield from rest


def sentence(template_list: list[str], head: str, tail: str) -> str:
    pick = int(hashlib.sha1(f"{head}\t{tail}".encode()).hexdigest(), 16) % len(template_list)
    text = template_list[pick].format(head=_concept(head), tail=_concept(tail))
    return text[0].upper() + text[1:]


def _concept(term: str) -> str:
    """A ConceptNet URI (/c/en/ice_cream) or a plain term, as words."""
    if term.startswith("/c/"):
        term = term.split("/")[3]
    return term.replace("_", " ")


def knowledge_records(cfg: "KnowledgeConfig", language: str) -> Iterator[Record]:
    """One document per head concept (its facts as sentences); skipped triples as records with a reason."""
    templates = load_templates(cfg.templates).get(language, {})
    facts: dict[str, list[str]] = defaultdict(list)
    for row in _triples(Path(cfg.triples).expanduser()):
        if row is None:
            yield Record(None, "knowledge:bad_row")
            continue
        raw = "\t".join(row[c] for c in COLUMNS)
        if row["language"] not in (language, "") and not row["language"].startswith(f"{language}_"):
            yield Record(None, "knowledge:other_language", raw)
        elif row["relation"].removeprefix("/r/") not in templates:
            yield Record(None, f"knowledge:no_template:{row['relation'].removeprefix('/r/')}", raw)
        elif not row["head"] or not row["tail"]:
            yield Record(None, "knowledge:bad_row", raw)
        else:
            rel = row["relation"].removeprefix("/r/")
            facts[_concept(row["head"])].append(sentence(templates[rel], row["head"], row["tail"]))
    for head, sentences in facts.items():
        yield Record(Doc(id=f"kg:{head}", text=" ".join(sentences), group=f"kg:{head}"))
