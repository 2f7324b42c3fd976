"""The `corpus` section of a recipe.

A recipe that names only a target source gets the full cleaning: language and script
identification, quality filters with thresholds derived for the language, exact and
near-duplicate removal, repeated-line removal and PII scrubbing. Each step is switched off
by name (`disable: [pii]`) and each threshold can be set by hand (`quality.thresholds`).
"""

from __future__ import annotations

import importlib.util
import logging
import shutil
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING

from langadapt.config import SourceConfig, opt, req

if TYPE_CHECKING:
    from langadapt.recipe import Recipe

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class LidConfig:
    model_file: str = opt(
        "",
        "a GlotLID / OpenLID fastText model file (labels like __label__nya_Latn); empty: pycld2, shipped offline",
    )
    min_confidence: float | None = opt(
        0.5,
        "keep a document only if its language matches with at least this confidence; empty: derived per "
        "language as FineWeb2 does, max(0.3, min(0.9, median - std)) of the confidences of its documents",
    )
    script: str = opt(
        "", "ISO 15924 script the text must be in (Latn, Arab, Ethi, ...); empty: the dominant script of the source"
    )
    min_script_fraction: float = opt(0.5, "fraction of a document's letters that must be in that script")


def _threshold(help: str) -> float | None:
    return opt(None, f"{help}; empty: derived from the corpus (see corpus/thresholds.json)")


@dataclass(frozen=True, kw_only=True)
class Thresholds:
    """Hand-set thresholds; every one left empty is derived for the language from the corpus."""

    min_words: float | None = _threshold("words per document, at least (Gopher, English 50)")
    max_words: float | None = _threshold("words per document, at most (Gopher, English 100000)")
    min_mean_word_length: float | None = _threshold("mean word length in characters, at least (Gopher, English 3)")
    max_mean_word_length: float | None = _threshold("mean word length in characters, at most (Gopher, English 10)")
    max_symbol_ratio: float | None = _threshold("'#' and ellipses per word, at most (Gopher, English 0.1)")
    max_bullet_lines: float | None = _threshold("fraction of lines starting with a bullet (Gopher, English 0.9)")
    max_ellipsis_lines: float | None = _threshold("fraction of lines ending with an ellipsis (Gopher, English 0.3)")
    min_alpha_words: float | None = _threshold("fraction of words with a letter, at least (Gopher, English 0.8)")
    min_stop_words: float | None = _threshold("distinct stop words present, at least (Gopher, English 2)")
    max_dup_lines: float | None = _threshold("fraction of duplicated lines (Gopher, English 0.3)")
    max_dup_paragraphs: float | None = _threshold("fraction of duplicated paragraphs (Gopher, English 0.3)")
    max_dup_line_chars: float | None = _threshold("characters in duplicated lines (Gopher, English 0.2)")
    max_dup_paragraph_chars: float | None = _threshold("characters in duplicated paragraphs (Gopher, English 0.2)")
    max_top_2gram: float | None = _threshold("characters in the most frequent word 2-gram (Gopher, English 0.2)")
    max_top_3gram: float | None = _threshold("characters in the most frequent word 3-gram (Gopher, English 0.18)")
    max_top_4gram: float | None = _threshold("characters in the most frequent word 4-gram (Gopher, English 0.16)")
    max_dup_5gram: float | None = _threshold("characters in duplicated word 5-grams (Gopher, English 0.15)")
    max_dup_10gram: float | None = _threshold("characters in duplicated word 10-grams (Gopher, English 0.1)")
    min_terminal_punct_lines: float | None = _threshold(
        "fraction of lines ending in terminal punctuation (FineWeb, English 0.12)"
    )
    max_short_lines: float | None = _threshold("fraction of lines under 30 characters (FineWeb, English 0.67)")
    max_non_alpha_lines: float | None = _threshold(
        "fraction of lines that are mostly not letters (tables, menus, code; English 0.5)"
    )
    max_bad_chars: float | None = _threshold(
        "fraction of replacement/control characters: repaired bytes, binary junk (English 0.01)"
    )


@dataclass(frozen=True, kw_only=True)
class QualityConfig:
    derive: str = opt(
        "median_ratio",
        "how thresholds adapt to a language: median_ratio (scale the English threshold by the ratio of the "
        "language's median to the English reference median), quantile (cut the same fraction of the language's "
        "documents that the English threshold cuts of English), english (English values as they are)",
    )
    min_documents: int = opt(
        50, "fewer documents than this in a language: too few to derive from, English values are used"
    )
    thresholds: Thresholds = opt(Thresholds(), "thresholds set by hand (override the derived ones)")


@dataclass(frozen=True, kw_only=True)
class NearDedupConfig:
    shingle_size: int = opt(5, "words per shingle (n-gram) for MinHash")
    bands: int = opt(14, "LSH bands; with rows 8: documents above ~0.75 Jaccard similarity are duplicates")
    rows: int = opt(8, "hashes per LSH band")
    rehydrate: bool = opt(
        False, "FineWeb2-style rehydration: repeat each kept training document by its duplicate-cluster size"
    )
    rehydrate_cap: int = opt(5, "rehydration: at most this many copies of a document")


@dataclass(frozen=True, kw_only=True)
class LineDedupConfig:
    min_documents: int = opt(10, "a line seen in at least this many documents of a language is boilerplate and removed")
    min_chars: int = opt(10, "shorter lines are never treated as boilerplate")


@dataclass(frozen=True, kw_only=True)
class SlurmConfig:
    partition: str = opt("", "Slurm partition")
    time: str = opt("24:00:00", "time limit per job")
    cpus_per_task: int = opt(1, "CPUs per task")
    mem_per_cpu_gb: float = opt(2.0, "memory per CPU in GB")
    sbatch_args: tuple[str, ...] = opt((), "extra sbatch options, e.g. [--account=xyz]")


@dataclass(frozen=True, kw_only=True)
class RayConfig:
    address: str = opt("", "Ray cluster address; empty: a local Ray instance on this machine")
    cpus_per_task: int = opt(1, "CPUs per task")


@dataclass(frozen=True, kw_only=True)
class KnowledgeConfig:
    triples: str = req("CSV/TSV file of triples with columns relation, head, tail, language (ConceptNet style)")
    templates: str = opt(
        "builtin", "YAML file of sentence templates per language and relation; builtin: the shipped examples"
    )


@dataclass(frozen=True, kw_only=True)
class CorpusConfig:
    target: SourceConfig = req("the target-language text to adapt to")
    replay: SourceConfig | None = opt(None, "source-language text replayed during training against forgetting")
    knowledge: KnowledgeConfig | None = opt(
        None, "knowledge-graph triples turned into target-language sentences, added to the target text"
    )
    normalization: str = opt("NFC", "Unicode normalisation: NFC, NFKC or none")
    invalid_utf8: str = opt(
        "repair", "invalid UTF-8 bytes in a record: repair (replace with U+FFFD, counted) or drop (the record)"
    )
    min_chars: int = opt(20, "drop documents shorter than this many characters (reason: too_short)")
    max_chars: int = opt(200_000, "drop documents longer than this many characters (reason: too_long)")
    disable: tuple[str, ...] = opt((), "cleaning steps switched off, by name (see `langadapt list filters`)")
    lid: LidConfig = opt(LidConfig(), "language and script identification")
    quality: QualityConfig = opt(QualityConfig(), "quality filters and how their thresholds adapt to the language")
    near_dedup: NearDedupConfig = opt(NearDedupConfig(), "MinHash near-duplicate removal")
    line_dedup: LineDedupConfig = opt(LineDedupConfig(), "removal of lines repeated across documents")
    url_filter: bool = opt(False, "drop documents whose `url` is on datatrove's adult/spam URL block list")
    heldout_groups: tuple[str, ...] = opt(
        (), "groups held out for evaluation (never trained on), in every language; empty: use heldout_fraction"
    )
    heldout_fraction: float = opt(
        0.02,
        "fraction of groups (chosen by a stable hash) held out when heldout_groups is empty; at least one "
        "group per language is held out when there are two or more",
    )
    docs_per_group: int = opt(
        100, "txt sources without groups: consecutive documents per group, so held-out text is contiguous"
    )
    executor: str = opt("local", "datatrove executor: local, slurm or ray")
    tasks: int = opt(0, "tasks (shards) of the pipeline; 0: one per input file, at most 64")
    workers: int = opt(0, "tasks run at once on the local executor; 0: as many as CPU cores")
    slurm: SlurmConfig = opt(SlurmConfig(), "executor: slurm settings")
    ray: RayConfig = opt(RayConfig(), "executor: ray settings")


NORMALIZATIONS = ("NFC", "NFKC", "none")
DERIVE = ("median_ratio", "quantile", "english")
EXECUTORS = ("local", "slurm", "ray")


def threshold_fields() -> list[str]:
    return [f.name for f in fields(Thresholds)]


def check(recipe: "Recipe") -> list[str]:
    """Problems with the corpus section (all of them, for `langadapt validate`)."""
    from langadapt import sources
    from langadapt.corpus import lid
    from langadapt.corpus.filters import FILTERS

    c, p = recipe.corpus, []
    p.extend(sources.source_problems(c.target, "corpus.target"))
    if c.replay is not None:
        p.extend(sources.source_problems(c.replay, "corpus.replay"))
        if c.replay.language == c.target.language:
            p.append("corpus.replay.language: must differ from corpus.target.language")
    if c.normalization not in NORMALIZATIONS:
        p.append(f"corpus.normalization: '{c.normalization}' is not one of {', '.join(NORMALIZATIONS)}")
    if c.invalid_utf8 not in sources.INVALID_UTF8:
        p.append(f"corpus.invalid_utf8: '{c.invalid_utf8}' is not one of {', '.join(sources.INVALID_UTF8)}")
    if c.min_chars < 0:
        p.append("corpus.min_chars: must be >= 0")
    if c.max_chars <= c.min_chars:
        p.append("corpus.max_chars: must be greater than corpus.min_chars")
    for name in c.disable:
        if name not in FILTERS:
            p.append(f"corpus.disable: {FILTERS.unknown_message(name)}")
    if c.lid.model_file and "lid" not in c.disable:
        problem = lid.model_file_problem(Path(c.lid.model_file).expanduser())
        if problem:
            p.append(f"corpus.lid.model_file: {problem}")
        elif importlib.util.find_spec("fasttext") is None:
            p.append("corpus.lid.model_file: reading a fastText model needs fasttext: pip install 'langadapt[glotlid]'")
    if c.lid.min_confidence is not None and not 0.0 <= c.lid.min_confidence <= 1.0:
        p.append("corpus.lid.min_confidence: must be between 0 and 1")
    if c.lid.script and not lid.is_script_code(c.lid.script):
        p.append(f"corpus.lid.script: '{c.lid.script}' is not an ISO 15924 script code (e.g. Latn, Arab, Ethi, Deva)")
    if not 0.0 < c.lid.min_script_fraction <= 1.0:
        p.append("corpus.lid.min_script_fraction: must be in (0, 1]")
    if c.quality.derive not in DERIVE:
        p.append(f"corpus.quality.derive: '{c.quality.derive}' is not one of {', '.join(DERIVE)}")
    for name in threshold_fields():
        value = getattr(c.quality.thresholds, name)
        if value is not None and value < 0:
            p.append(f"corpus.quality.thresholds.{name}: must be >= 0")
    nd = c.near_dedup
    if nd.shingle_size < 1 or nd.bands < 1 or nd.rows < 1 or nd.rehydrate_cap < 1:
        p.append("corpus.near_dedup: shingle_size, bands, rows and rehydrate_cap must be >= 1")
    if c.line_dedup.min_documents < 2:
        p.append("corpus.line_dedup.min_documents: must be >= 2")
    if c.knowledge is not None:
        from langadapt.corpus import kg2text

        p.extend(kg2text.problems(c.knowledge, c.target.language, "corpus.knowledge"))
    if not 0.0 < c.heldout_fraction < 0.5:
        p.append("corpus.heldout_fraction: must be between 0 and 0.5")
    if c.docs_per_group < 1:
        p.append("corpus.docs_per_group: must be >= 1")
    p.extend(_executor_problems(c))
    for note in lid.support_notes(c):
        log.warning(note)
    return p


def _executor_problems(c: CorpusConfig) -> list[str]:
    if c.executor not in EXECUTORS:
        return [f"corpus.executor: '{c.executor}' is not one of {', '.join(EXECUTORS)}"]
    p = []
    if c.tasks < 0 or c.workers < 0:
        p.append("corpus.tasks / corpus.workers: must be >= 0")
    if c.executor == "slurm" and shutil.which("sbatch") is None:
        p.append(
            "corpus.executor: slurm needs Slurm's sbatch on the PATH, which this machine lacks; "
            "run on a Slurm login node or use executor: local"
        )
    if c.url_filter and "url-filter" not in c.disable:
        missing = [m for m in ("ahocorasick", "fasteners", "tldextract") if importlib.util.find_spec(m) is None]
        if missing:
            p.append("corpus.url_filter: needs " + ", ".join(missing) + ": pip install 'langadapt[corpus-url]'")
    if c.executor == "ray" and importlib.util.find_spec("ray") is None:
        p.append("corpus.executor: ray needs the package 'ray': pip install 'langadapt[ray]'")
    return p
