"""The `corpus` section of a recipe.

A recipe that names only a target source gets the full cleaning: language and script
identification, quality filters with thresholds derived for the language, exact and
near-duplicate removal, repeated-line removal and PII scrubbing. Each step is switched off
by name (`disable: [pii]`) and each threshold can be set by hand (`quality.thresholds`).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import TYPE_CHECKING

from langadapt.config import SourceConfig, WeightedSource, opt, req

if TYPE_CHECKING:
    pass


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
    target: SourceConfig | tuple[WeightedSource, ...] = req(
        "the target-language text to adapt to: one source, or a list of sources (each with a weight; see "
        "train.mixing). With a list the first source's language is the primary target: the tokenizer, the "
        "initialisation and the evaluation stage take it; training mixes every source"
    )
    replay: SourceConfig | tuple[WeightedSource, ...] | None = opt(
        None,
        "source-language text replayed during training against forgetting: one source, or a list of sources "
        "(each with a weight; see train.mixing); train.replay_ratio sets the replay share, the mixing divides it",
    )
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
