"""Stage 1, corpus: read, clean, deduplicate and split text by document group, on datatrove.

The flow, in passes run by a datatrove executor (local, Slurm or Ray; `executors.py`):

1. measure  - read every record, normalise, scrub PII, identify language and script, compute
              the quality statistics and content hash of each document (`blocks.py`);
   then, in this process, from the stored statistics only: derive the language's thresholds
   (`thresholds.py` -> corpus/thresholds.json), find exact duplicates and boilerplate lines;
2. decide   - apply language, script, quality and exact-duplicate decisions, remove boilerplate
              lines, write dropped documents aside, compute MinHash signatures;
3. buckets + cluster - datatrove's MinHash LSH stages;
4. near-dedup - drop near-duplicates (datatrove's MinHash filter), keep cluster sizes.
5. outputs  - in this process: the held-out split and the files per language (`outputs.py`).

Every input record ends up in exactly one place: `corpus/<lang>/train.parquet`,
`corpus/<lang>/heldout.parquet`, or `corpus/dropped/<lang>.parquet` with the step and reason
that dropped it; `corpus/stats.json` balances per source and language. Held-out text is
chosen by whole groups (Bible books, web domains) so evaluation never sees a training group.
Intermediate files stay in the stage's partial folder while it runs, so an interrupted run
resumes task by task, and are removed when it is done - except the measured documents
(`corpus/measured/`): a re-run that changes only decisions (thresholds, LID confidence, dedup
settings, held-out groups) reads them back instead of measuring again.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from langadapt.config import ROLES, is_listed, source_name, sources_of
from langadapt.corpus.config import CorpusConfig
from langadapt.corpus.filters import FILTERS  # noqa: F401  (registers the steps for `langadapt list filters`)
from langadapt.corpus.outputs import heldout_groups, is_heldout
from langadapt.documents import normalize
from langadapt.rundir import RunDir, StageContext, write_json
from langadapt.sources.reading import source_identity
from langadapt.stage import run_stage

if TYPE_CHECKING:
    from langadapt.recipe import Recipe

log = logging.getLogger(__name__)
NAME = "corpus"
MAX_AUTO_TASKS = 64

__all__ = ["normalize", "run", "inputs", "heldout_groups", "is_heldout"]


# -- the flow ------------------------------------------------------------------------------


def _build(recipe: "Recipe", rd: RunDir, ctx: StageContext, reuse: bool = True) -> None:
    from langadapt.corpus import executors, outputs
    from langadapt.corpus.readers import plan_units

    cfg, out = recipe.corpus, ctx.out
    work = out / "work"  # intermediate files: kept while resuming, removed at the end
    disabled = set(cfg.disable)
    units = plan_units(cfg)
    tasks = cfg.tasks or min(len(units), MAX_AUTO_TASKS)
    languages = sorted({u["language"] for u in units})
    key = _measure_key(recipe, rd, tasks)
    # only from a finished output: `--force` removes its completion marker, and then everything is measured again
    reused = reuse and rd.is_complete(NAME) and _reuse_measured(rd.path(NAME) / "measured", work, key)
    stop_words = _stop_words(cfg, languages, work)
    workers = executors.auto_workers(cfg, sum(Path(u["file"]).stat().st_size for u in units if u["file"]))
    logs = work / "logs"

    if reused:
        log.info("[corpus] measured statistics reused from the previous run (only decisions changed)")
    else:
        pipeline = _measure_pass(cfg, units, stop_words, work, disabled)
        executors.run_pass(cfg, "measure", pipeline, tasks, logs, workers)
    plan = _decide_plan(cfg, work, languages, disabled, stop_words)
    write_json(out / "thresholds.json", plan["report"])
    executors.run_pass(cfg, "decide", _decide_pass(cfg, work, disabled), tasks, logs, workers)
    if "near-dedup" not in disabled:
        for name, pipeline, n in _minhash_passes(cfg, work):
            executors.run_pass(cfg, name, pipeline, n, logs, workers)
    executors.run_pass(cfg, "near-dedup", _final_pass(cfg, work, disabled), tasks, logs, workers)

    stats = outputs.assemble(cfg, work, out, plan)
    stats["measured"] = "reused" if reused else "computed"
    write_json(out / "stats.json", stats)
    _keep_measured(work, out / "measured", key)
    shutil.rmtree(work)


def _measure_pass(
    cfg: CorpusConfig, units: list[dict[str, Any]], stop_words: dict[str, list[str]], work: Path, disabled: set[str]
) -> list[Any]:
    from langadapt.corpus import blocks

    steps: list[Any] = [
        blocks.SourceReader(units, cfg.docs_per_group, cfg.invalid_utf8),
        blocks.Prepare(cfg.normalization, cfg.min_chars, cfg.max_chars, "length" not in disabled),
    ]
    if "pii" not in disabled:
        steps.append(blocks.PIIScrubber())
    steps += [
        blocks.LanguageTagger(cfg.lid.model_file, "lid" not in disabled),
        blocks.Measure(stop_words, str(work / "lines"), cfg.line_dedup.min_chars),
        blocks.RankWriter(str(work / "measured")),
    ]
    return steps


def _decide_pass(cfg: CorpusConfig, work: Path, disabled: set[str]) -> list[Any]:
    from langadapt.corpus import blocks

    steps: list[Any] = [blocks.RankReader(str(work / "measured")), blocks.Decide(str(work / "plan.json"))]
    if "line-dedup" not in disabled:
        steps.append(blocks.LineDedup(str(work / "boilerplate.npz"), cfg.min_chars))
    if cfg.url_filter and "url-filter" not in disabled:
        steps.append(blocks.UrlFilter())
    steps += [
        blocks.RankWriter(str(work / "dropped" / "decide"), only="dropped"),
        blocks.RankWriter(str(work / "filtered")),
    ]
    if "near-dedup" not in disabled:
        from datatrove.pipeline.dedup.minhash import MinhashDedupSignature

        from langadapt.corpus.dedup import minhash_config
        from langadapt.script import make_word_tokenizer

        nd = cfg.near_dedup
        mh = minhash_config(nd.shingle_size, nd.bands, nd.rows)
        steps.append(MinhashDedupSignature(str(work / "minhash" / "signatures"), mh, language=make_word_tokenizer()))
    return steps


def _minhash_passes(cfg: CorpusConfig, work: Path) -> list[tuple[str, list[Any], int]]:
    from datatrove.pipeline.dedup.minhash import MinhashDedupBuckets, MinhashDedupCluster

    from langadapt.corpus.dedup import minhash_config

    nd = cfg.near_dedup
    mh = minhash_config(nd.shingle_size, nd.bands, nd.rows)
    m = work / "minhash"
    return [
        (
            "buckets",
            [MinhashDedupBuckets(input_folder=str(m / "signatures"), output_folder=str(m / "buckets"), config=mh)],
            nd.bands,
        ),
        (
            "cluster",
            [
                MinhashDedupCluster(
                    input_folder=str(m / "buckets"), output_folder=str(m / "remove"), config=mh, save_cluster_size=True
                )
            ],
            1,
        ),
    ]


def _final_pass(cfg: CorpusConfig, work: Path, disabled: set[str]) -> list[Any]:
    from langadapt.corpus import blocks

    steps: list[Any] = [blocks.RankReader(str(work / "filtered"))]
    if "near-dedup" not in disabled:
        from datatrove.pipeline.dedup.minhash import MinhashDedupFilter

        sink = blocks.ParquetSink(work / "dropped" / "near", step="near-dedup", reason="near_duplicate")
        steps.append(
            MinhashDedupFilter(str(work / "minhash" / "remove"), exclusion_writer=sink, load_cluster_sizes=True)
        )
    steps.append(blocks.RankWriter(str(work / "kept")))
    return steps


# -- measure once, decide later ----------------------------------------------------------------

# Recipe fields that only decide what happens to measured documents: changing them leaves the
# measurement valid. Everything else (sources, normalisation, length limits, PII, the LID model,
# tasks) changes what is measured.
DECISION_FIELDS = ("quality", "near_dedup", "url_filter", "heldout_groups", "heldout_fraction", "executor",
                   "workers", "slurm", "ray", "disable")  # fmt: skip
DECISION_LID_FIELDS = ("min_confidence", "script", "min_script_fraction")
MEASURED_STEPS = {"length", "pii", "lid"}  # steps that run while measuring; switching them changes the measurement
# work file -> its name under corpus/measured/
MEASURED_FILES = {"measured": "documents", "lines": "lines", "stop_words.json": "stop_words.json"}


def _measure_key(recipe: "Recipe", rd: RunDir, tasks: int) -> str:
    """Fingerprint of everything the measuring pass depends on."""
    from importlib import metadata

    from langadapt.rundir import fingerprint

    section = {k: v for k, v in corpus_section(recipe).items() if k not in DECISION_FIELDS}
    section["lid"] = {k: v for k, v in section["lid"].items() if k not in DECISION_LID_FIELDS}
    section["line_dedup"] = {"min_chars": section["line_dedup"]["min_chars"]}
    measured_steps = sorted(MEASURED_STEPS & set(recipe.corpus.disable))
    model = Path(recipe.corpus.lid.model_file).expanduser() if recipe.corpus.lid.model_file else None
    model_id = f"{model.stat().st_size}:{int(model.stat().st_mtime)}" if model and model.is_file() else ""
    sources = inputs(recipe, rd)["sources"]
    return fingerprint("measure", section, measured_steps, model_id, sources, tasks, metadata.version("langadapt"))


def _reuse_measured(previous: Path, work: Path, key: str) -> bool:
    """Bring the previous run's measured documents into this run when they were measured the same way."""
    marker = previous / "measure.json"
    if not marker.is_file() or json.loads(marker.read_text(encoding="utf-8")).get("fingerprint") != key:
        return False
    done = work / ".measured-reused"
    if done.exists():  # an interrupted run that already brought them in
        return True
    work.mkdir(parents=True, exist_ok=True)
    for name, kept in MEASURED_FILES.items():
        src, dst = previous / kept, work / name
        if dst.is_dir():  # left by an interrupted measuring or copy; the previous measurement replaces it
            shutil.rmtree(dst)
        if src.is_dir():
            shutil.copytree(src, dst, copy_function=_link_or_copy)
        elif src.is_file():
            _link_or_copy(str(src), str(dst))
    done.touch()
    return True


def _link_or_copy(src: str, dst: str) -> None:
    """Hard links cost nothing and leave the previous output intact; a copy where links are not possible."""
    import os

    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _keep_measured(work: Path, dest: Path, key: str) -> None:
    """Keep the measured documents (text, language, script, statistics) beside the output for later re-runs."""
    dest.mkdir(parents=True, exist_ok=True)
    for name, kept in MEASURED_FILES.items():
        if (work / name).exists():
            (work / name).replace(dest / kept)
    write_json(dest / "measure.json", {"fingerprint": key})


# -- between passes: decisions from stored statistics ----------------------------------------


def _stop_words(cfg: CorpusConfig, languages: list[str], work: Path) -> dict[str, list[str]]:
    """Shipped stop words for a language, else the words in most documents of a sample of its own text."""
    from importlib import resources

    from langadapt.corpus.filters import stop_words_from
    from langadapt.sources.reading import source_records

    cache = work / "stop_words.json"
    if cache.exists():
        return json.loads(cache.read_text(encoding="utf-8"))
    out: dict[str, list[str]] = {}
    sources = {s.language: s for role in ROLES for s in reversed(sources_of(cfg, role))}  # a language's first source
    for lang in languages:
        shipped = resources.files("langadapt").joinpath(f"data/corpus/stopwords/{lang}.txt")
        if shipped.is_file():
            out[lang] = shipped.read_text(encoding="utf-8").split()
            continue
        sample = []
        for rec in source_records(sources[lang], cfg.docs_per_group, "repair"):
            if rec.doc is not None and len(rec.doc.text) <= cfg.max_chars:
                sample.append(normalize(rec.doc.text, cfg.normalization))
            if len(sample) >= 2000:
                break
        out[lang] = stop_words_from(sample)
    work.mkdir(parents=True, exist_ok=True)
    write_json(cache, out)
    return out


def _read_measured(work: Path) -> Any:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from langadapt.corpus.blocks import COLUMNS

    cols = [c for c in COLUMNS if c != "text"]
    files = sorted((work / "measured").glob("*.parquet"))
    tables = [pq.read_table(f, columns=cols) for f in files]
    return pa.concat_tables(tables).to_pydict() if tables else {c: [] for c in cols}


def _decide_plan(
    cfg: CorpusConfig, work: Path, languages: list[str], disabled: set[str], stop_words: dict[str, list[str]]
) -> dict[str, Any]:
    """Per language: whether LID applies, the script, the thresholds; plus exact duplicates and boilerplate lines."""
    import numpy as np

    from langadapt.corpus import dedup, thresholds
    from langadapt.corpus.config import threshold_fields
    from langadapt.corpus.filters import STATS
    from langadapt.corpus.lid import confidence_threshold, load_identifier, same_language

    t = _read_measured(work)
    identifier = load_identifier(cfg.lid.model_file) if "lid" not in disabled else None
    overrides = {f: getattr(cfg.quality.thresholds, f) for f in threshold_fields()}
    plan: dict[str, Any] = {"languages": {}, "report": {"reference": thresholds.provenance(), "languages": {}}}
    for lang in languages:
        rows = [i for i, (lg, step) in enumerate(zip(t["language"], t["drop_step"])) if lg == lang and not step]
        lid_on = identifier is not None and identifier.supports(lang)
        script = cfg.lid.script
        if not script and "script" not in disabled:
            counts = Counter(t["script"][i] for i in rows if t["script"][i])
            script = counts.most_common(1)[0][0] if counts else ""
        if "script" in disabled:
            script = ""
        labelled = [t["lid_conf"][i] for i in rows if lid_on and same_language(t["lid"][i] or "", lang)]
        min_conf = confidence_threshold(cfg.lid.min_confidence, labelled, cfg.quality.min_documents)
        passing = [
            i
            for i in rows
            if (not lid_on or (same_language(t["lid"][i] or "", lang) and t["lid_conf"][i] >= min_conf["value"]))
            and (not script or (t["script"][i] == script and t["script_frac"][i] >= cfg.lid.min_script_fraction))
        ]
        stats = {s: np.array([t[f"stat_{s}"][i] for i in passing], dtype=float) for s in STATS}
        derived = thresholds.derive(stats, cfg.quality.derive, cfg.quality.min_documents, overrides)
        plan["languages"][lang] = {
            "lid": lid_on,
            "min_confidence": min_conf["value"],
            "script": script,
            "min_script_fraction": cfg.lid.min_script_fraction,
            "thresholds": thresholds.values(derived, disabled),
        }
        plan["report"]["languages"][lang] = {
            "documents_measured": len(passing),
            "language_id": {
                "identifier": identifier.name if identifier is not None else "off",
                "supported": lid_on,
                "used_instead": "" if lid_on else f"script {script or '(off)'} and the quality filters",
                "min_confidence": min_conf["value"],
                "min_confidence_how": min_conf["how"] if lid_on else "not applied",
            },
            "script": script,
            "stop_words": stop_words.get(lang, []),
            "method": cfg.quality.derive,
            "thresholds": {f: e for f, e in derived.items() if f in plan["languages"][lang]["thresholds"]},
        }
    exact = work / "exact_duplicates.txt"
    dedup.save_ids(exact, dedup.exact_duplicates(t) if "exact-dedup" not in disabled else [])
    plan["exact_duplicates"] = str(exact)
    if "line-dedup" not in disabled:
        dedup.save_boilerplate(
            work / "boilerplate.npz", dedup.boilerplate_lines(work / "lines", cfg.line_dedup.min_documents)
        )
    (work / "plan.json").write_text(json.dumps({k: v for k, v in plan.items() if k != "report"}), encoding="utf-8")
    return plan


def corpus_section(recipe: "Recipe") -> dict[str, Any]:
    """The recipe's corpus section as the stage depends on it: a list's weights only decide the training mix
    (train stage), so changing them reuses the cleaned corpus."""
    section = recipe.to_dict()["corpus"]
    for role in ROLES:
        if isinstance(section.get(role), list):
            section[role] = [{k: v for k, v in s.items() if k != "weight"} for s in section[role]]
    return section


def inputs(recipe: "Recipe", rd: RunDir) -> dict[str, Any]:
    cfg = recipe.corpus
    found = {}
    for role in ROLES:
        listed = is_listed(cfg, role)
        for s in sources_of(cfg, role):  # a single source by its language, as before lists existed
            found[f"{role}:{source_name(s)}" if listed else s.language] = source_identity(s)
    if cfg.knowledge is not None:
        from langadapt.rundir import sha256_file

        found["knowledge"] = {cfg.knowledge.triples: sha256_file(Path(cfg.knowledge.triples).expanduser())}
    return {"config": corpus_section(recipe), "sources": found}


def run(recipe: "Recipe", rd: RunDir, force: bool = False) -> Path:
    from functools import partial

    # --force measures again; a plain re-run with changed decisions reuses the measurement
    return run_stage(NAME, recipe, rd, inputs(recipe, rd), partial(_build, reuse=not force), force)
