"""langadapt's datatrove blocks: the corpus stage's steps in datatrove's `PipelineStep` shape.

A document that a step drops is not removed from the stream at once: it is marked
(`drop_step`, `drop_reason`) and every later step passes it through untouched, until a
`DropSink` writes it aside. That way each input record reaches exactly one output file,
which is what lets `stats.json` balance per source and language.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Iterator

from datatrove.data import Document, DocumentsPipeline
from datatrove.pipeline.base import PipelineStep

from langadapt.corpus.filters import STATS

COLUMNS = {  # column -> arrow type name; every parquet file the stage writes has these columns
    "id": "string",
    "text": "string",
    "source": "string",
    "language": "string",
    "group": "string",
    "doc_id": "string",
    "drop_step": "string",
    "drop_reason": "string",
    "repaired": "string",
    "url": "string",
    "lid": "string",
    "lid_conf": "float64",
    "script": "string",
    "script_frac": "float64",
    "hash": "int64",
    "pii": "string",
    "lines_removed": "int64",
    "chars_removed": "int64",
    "minhash_cluster_size": "int64",
    **{f"stat_{s}": "float64" for s in STATS},
}


def dropped(doc: Document) -> bool:
    return bool(doc.metadata.get("drop_step"))


def drop(doc: Document, step: str, reason: str) -> None:
    doc.metadata["drop_step"], doc.metadata["drop_reason"] = step, reason


def text_hash(text: str) -> int:
    return int.from_bytes(
        hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "big", signed=True
    )


# -- reading and writing -------------------------------------------------------------------


class SourceReader(PipelineStep):
    """Reads the corpus's input units (files of a source, a bundled corpus, knowledge triples); task r reads units r, r+T, ..."""

    name = "langadapt reader"
    type = "📖 - READER"

    def __init__(self, units: list[dict[str, Any]], docs_per_group: int, invalid_utf8: str) -> None:
        super().__init__()
        self.units, self.docs_per_group, self.invalid_utf8 = units, docs_per_group, invalid_utf8

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        from langadapt.corpus.readers import unit_records

        for u, unit in enumerate(self.units):
            if u % world_size != rank:
                continue
            for n, rec in enumerate(unit_records(unit, self.docs_per_group, self.invalid_utf8)):
                self.stat_update("records")
                meta = {"source": unit.get("label", unit["role"]), "language": unit["language"]}
                if rec.doc is None:
                    meta.update(group="", doc_id="", drop_step="read", drop_reason=rec.skip)
                    yield Document(text=rec.raw, id=f"{u}:{n}", metadata=meta)
                    continue
                meta.update(group=rec.doc.group, doc_id=rec.doc.id, repaired=rec.repaired, url=rec.url)
                yield Document(text=rec.doc.text, id=f"{u}:{n}", metadata=meta)


class RankWriter(PipelineStep):
    """Writes this task's documents to `<folder>/<rank>.parquet` (atomically, at the end) and passes them on.

    `only`: 'all' documents, the 'kept' ones, or the 'dropped' ones (which are then not passed on).
    """

    name = "langadapt writer"
    type = "💽 - WRITER"

    def __init__(self, folder: str, only: str = "all") -> None:
        super().__init__()
        self.folder, self.only = folder, only

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        with ParquetSink(Path(self.folder), rank) as sink:
            for doc in data:
                is_dropped = dropped(doc)
                if self.only == "all" or (self.only == "dropped") == is_dropped:
                    sink.write(doc, rank)
                    self.stat_update("written")
                if not (self.only == "dropped" and is_dropped):
                    yield doc


class ParquetSink:
    """Writes documents to `<folder>/<rank>.parquet`, atomically when closed; also usable as datatrove's
    `exclusion_writer` (a context manager with `write(doc, rank)`), then marking what it writes as dropped."""

    def __init__(self, folder: Path, rank: int | None = None, step: str = "", reason: str = "") -> None:
        self.folder, self.rank, self.step, self.reason = folder, rank, step, reason
        self._buffer: list[dict[str, Any]] = []
        self._writer: Any = None

    def _path(self) -> Path:
        return self.folder / f"{self.rank:05d}.parquet"

    def __enter__(self) -> "ParquetSink":
        return self

    def write(self, doc: Document, rank: int = 0) -> None:
        if self.rank is None:
            self.rank = rank
        if self.step and not dropped(doc):
            drop(doc, self.step, self.reason)
        row = {c: doc.metadata.get(c) for c in COLUMNS}
        row["id"], row["text"] = doc.id, doc.text
        self._buffer.append(row)
        if len(self._buffer) >= 2000:
            self._flush()

    def _flush(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        if not self._buffer:
            return
        if self._writer is None:
            self.folder.mkdir(parents=True, exist_ok=True)
            self._schema = pa.schema([(c, getattr(pa, t)()) for c, t in COLUMNS.items()])
            self._writer = pq.ParquetWriter(self._path().with_suffix(".tmp"), self._schema, compression="zstd")
        self._writer.write_table(pa.Table.from_pylist(self._buffer, schema=self._schema))
        self._buffer = []

    def __exit__(self, *exc: Any) -> None:
        self._flush()
        if self._writer is not None:
            self._writer.close()
            if exc[0] is None:
                os.replace(self._path().with_suffix(".tmp"), self._path())
            self._writer = None


class RankReader(PipelineStep):
    """Reads back `<folder>/<rank>.parquet`, written by `RankWriter` in an earlier pass of the same task."""

    name = "langadapt rank reader"
    type = "📖 - READER"

    def __init__(self, folder: str) -> None:
        super().__init__()
        self.folder = folder

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        yield from read_rank(Path(self.folder) / f"{rank:05d}.parquet")


def read_rank(path: Path) -> Iterator[Document]:
    import pyarrow.parquet as pq

    if not path.exists():
        return
    for batch in pq.ParquetFile(path).iter_batches(batch_size=2000):
        for row in batch.to_pylist():
            meta = {k: v for k, v in row.items() if v is not None and k not in ("id", "text")}
            yield Document(text=row["text"], id=row["id"], metadata=meta)


# -- measuring -----------------------------------------------------------------------------


class Prepare(PipelineStep):
    """Unicode normalisation and the length limits (before anything costly runs on a 50 MB line)."""

    name = "langadapt normalise"

    def __init__(self, normalization: str, min_chars: int, max_chars: int, check_length: bool) -> None:
        super().__init__()
        self.normalization, self.min_chars, self.max_chars = normalization, min_chars, max_chars
        self.check_length = check_length

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        from langadapt.documents import normalize

        for doc in data:
            if not dropped(doc):
                if self.check_length and len(doc.text) > 4 * self.max_chars:  # no need to normalise it to know
                    drop(doc, "length", "too_long")
                    yield doc
                    continue
                doc.text = normalize(doc.text, self.normalization)
                if not doc.text:
                    drop(doc, "length", "empty")
                elif self.check_length and len(doc.text) < self.min_chars:
                    drop(doc, "length", "too_short")
                elif self.check_length and len(doc.text) > self.max_chars:
                    drop(doc, "length", "too_long")
            yield doc


class PIIScrubber(PipelineStep):
    name = "langadapt PII"
    type = "✂️ - FORMAT"

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        from langadapt.corpus.pii import scrub

        for doc in data:
            if not dropped(doc):
                doc.text, counts = scrub(doc.text)
                if counts:
                    doc.metadata["pii"] = json.dumps(counts)
                    for kind, n in counts.items():
                        self.stat_update(f"pii_{kind}", value=n)
            yield doc


class LanguageTagger(PipelineStep):
    """Language (with confidence) and script of every document; the decision comes later."""

    name = "langadapt LID + script"
    type = "🏷 - TAGGER"

    def __init__(self, model_file: str, run_lid: bool) -> None:
        super().__init__()
        self.model_file, self.run_lid = model_file, run_lid

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        from langadapt.corpus.lid import load_identifier
        from langadapt.script import dominant_script

        identifier = load_identifier(self.model_file) if self.run_lid else None
        for doc in data:
            if not dropped(doc):
                with self.track_time():
                    doc.metadata["script"], doc.metadata["script_frac"] = dominant_script(doc.text)
                    if identifier is not None:
                        doc.metadata["lid"], doc.metadata["lid_conf"] = identifier.predict(doc.text)
            yield doc


class Measure(PipelineStep):
    """Quality statistics and the content hash of every document, and this task's line counts for boilerplate."""

    name = "langadapt measure"
    type = "📊 - STATS"

    def __init__(self, stop_words: dict[str, list[str]], lines_folder: str, line_min_chars: int) -> None:
        super().__init__()
        self.stop_words, self.lines_folder, self.line_min_chars = stop_words, lines_folder, line_min_chars

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        from langadapt.corpus.dedup import line_key, save_line_counts
        from langadapt.corpus.filters import _punctuation, measure, terminal_punctuation

        punct, terminal = _punctuation(), terminal_punctuation()
        stop = {lang: frozenset(ws) for lang, ws in self.stop_words.items()}
        lines: dict[str, Counter[int]] = defaultdict(Counter)
        for doc in data:
            if not dropped(doc):
                with self.track_time():
                    lang = doc.metadata["language"]
                    for key, value in measure(doc.text, stop.get(lang, frozenset()), punct, terminal).items():
                        doc.metadata[f"stat_{key}"] = float(value)
                    doc.metadata["hash"] = text_hash(doc.text)
                    doc_lines = {line_key(x) for x in doc.text.split("\n") if len(x) >= self.line_min_chars}
                    if len(doc_lines) > 1:
                        lines[lang].update(doc_lines)
            yield doc
        save_line_counts(Path(self.lines_folder) / f"{rank:05d}.npz", lines)


# -- deciding ------------------------------------------------------------------------------


class Decide(PipelineStep):
    """Applies the decisions measured documents wait for: language, script, quality thresholds, exact duplicates."""

    name = "langadapt decide"
    type = "🔻 - FILTER"

    def __init__(self, plan_file: str) -> None:
        super().__init__()
        self.plan_file = plan_file

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        from langadapt.corpus.dedup import load_ids
        from langadapt.corpus.filters import quality_reason
        from langadapt.corpus.lid import same_language

        plan = json.loads(Path(self.plan_file).read_text(encoding="utf-8"))
        duplicates = load_ids(Path(plan["exact_duplicates"])) if plan["exact_duplicates"] else set()
        for doc in data:
            if not dropped(doc):
                m = doc.metadata
                lang = plan["languages"][m["language"]]
                if lang["lid"] and not (
                    same_language(m.get("lid", ""), m["language"]) and m.get("lid_conf", 0.0) >= lang["min_confidence"]
                ):
                    drop(doc, "lid", f"language:{m.get('lid', 'und')}")
                elif lang["script"] and (
                    m.get("script") != lang["script"] or m.get("script_frac", 0.0) < lang["min_script_fraction"]
                ):
                    drop(doc, "script", f"script:{m.get('script') or 'none'}")
                elif (failed := quality_reason(_stats(m), lang["thresholds"])) is not None:
                    drop(doc, *failed)
                elif doc.id in duplicates:
                    drop(doc, "exact-dedup", "duplicate")
                self.stat_update(f"dropped_{m['drop_step']}" if dropped(doc) else "kept")
            yield doc


def _stats(meta: dict[str, Any]) -> dict[str, float]:
    return {k[5:]: v for k, v in meta.items() if k.startswith("stat_")}


class LineDedup(PipelineStep):
    """Removes boilerplate lines (seen in many documents of the language); a document left too short is dropped."""

    name = "langadapt line dedup"
    type = "✂️ - FORMAT"

    def __init__(self, boilerplate_file: str, min_chars: int) -> None:
        super().__init__()
        self.boilerplate_file, self.min_chars = boilerplate_file, min_chars

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        from langadapt.corpus.dedup import line_key, load_boilerplate

        boilerplate = load_boilerplate(Path(self.boilerplate_file))
        for doc in data:
            bad = boilerplate.get(doc.metadata.get("language", ""))
            if bad and not dropped(doc):
                lines = doc.text.split("\n")
                keep = [x for x in lines if line_key(x) not in bad]
                if len(keep) < len(lines):
                    new = "\n".join(keep).strip()
                    doc.metadata["lines_removed"] = len(lines) - len(keep)
                    doc.metadata["chars_removed"] = len(doc.text) - len(new)
                    self.stat_update("lines_removed", value=len(lines) - len(keep))
                    doc.text = new
                    if len(new) < self.min_chars:
                        drop(doc, "line-dedup", "only_boilerplate")
            yield doc


class UrlFilter(PipelineStep):
    """datatrove's URL filter (block lists of adult / spam domains) on documents that carry a `url`."""

    name = "langadapt URL filter"
    type = "🔻 - FILTER"

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        from datatrove.pipeline.filters.url_filter import URLFilter

        f = URLFilter()
        for doc in data:
            url = doc.metadata.get("url")
            if url and not dropped(doc):
                ok, reason = _filter_result(f.filter(doc))
                if not ok:
                    drop(doc, "url-filter", reason or "blocked_url")
            yield doc


def _filter_result(res: Any) -> tuple[bool, str]:
    return (res[0], res[1]) if isinstance(res, tuple) else (bool(res), "")
