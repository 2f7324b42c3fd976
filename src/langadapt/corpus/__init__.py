"""Stage 1, corpus: read, normalise, filter, deduplicate and split text by document group.

Every input record ends up in exactly one place: `corpus/<lang>/train.parquet`,
`corpus/<lang>/heldout.parquet`, or `corpus/dropped/<lang>.parquet` with its reason; the
counts are in `corpus/stats.json`. Held-out text is chosen by whole groups (e.g. whole
Bible books) so evaluation never sees text from a training group, and the same groups are
held out in every language.
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

from langadapt.config import SourceConfig
from langadapt.corpus.config import CorpusConfig
from langadapt.corpus.filters import DEFAULT_FILTERS, FILTERS
from langadapt.documents import normalize, write_docs
from langadapt.errors import InputError
from langadapt.progress import track
from langadapt.rundir import RunDir, StageContext, write_json
from langadapt.sources import Doc, read_source, source_identity
from langadapt.stage import run_stage

if TYPE_CHECKING:
    from langadapt.recipe import Recipe

log = logging.getLogger(__name__)
NAME = "corpus"


def is_heldout(group: str, cfg: CorpusConfig) -> bool:
    if cfg.heldout_groups:
        return group in cfg.heldout_groups
    digest = hashlib.sha256(group.encode()).digest()
    return int.from_bytes(digest[:4], "big") / 2**32 < cfg.heldout_fraction


def clean(docs: Iterable[Doc], cfg: CorpusConfig) -> tuple[list[Doc], list[tuple[Doc, str]]]:
    """Normalise, filter and exact-deduplicate; returns (kept, [(dropped, reason)])."""
    kept: list[Doc] = []
    dropped: list[tuple[Doc, str]] = []
    seen: set[bytes] = set()
    filters = [FILTERS.get(name) for name in DEFAULT_FILTERS]
    for doc in docs:
        text = normalize(doc.text, cfg.normalization)
        reason = next((r for f in filters if (r := f(text, cfg)) is not None), None)
        if reason is None:
            key = hashlib.blake2b(text.encode(), digest_size=16).digest()
            if key in seen:
                reason = "duplicate"
            seen.add(key)
        if reason is None:
            kept.append(Doc(doc.id, text, doc.group))
        else:
            dropped.append((Doc(doc.id, text, doc.group), reason))
    return kept, dropped


def _process(src: SourceConfig, cfg: CorpusConfig, out: Path) -> dict[str, Any]:
    docs, read_stats = read_source(src, cfg.docs_per_group)
    kept, dropped = clean(track(docs, f"reading {src.language} ({src.path})"), cfg)
    if not kept:
        reasons = dict(Counter(r for _, r in dropped)) | dict(read_stats.skipped)
        raise InputError(
            f"corpus: no {src.language} documents left from '{src.path}' "
            f"(read {read_stats.records} records; dropped or skipped: {reasons or 'none'})",
            hint="check the file holds text in the expected field, or lower corpus.min_chars",
        )
    train = [d for d in kept if not is_heldout(d.group, cfg)]
    heldout = [d for d in kept if is_heldout(d.group, cfg)]
    lang = src.language
    write_docs(out / lang / "train.parquet", train)
    write_docs(out / lang / "heldout.parquet", heldout)
    write_docs(out / "dropped" / f"{lang}.parquet", [d for d, _ in dropped], [r for _, r in dropped])
    stats = {
        "source": src.path,
        "records_read": read_stats.records,
        "skipped_while_reading": dict(read_stats.skipped),
        "dropped": dict(Counter(r for _, r in dropped)),
        "kept": len(kept),
        "groups": len({d.group for d in kept}),
        "train": {"documents": len(train), "characters": sum(len(d.text) for d in train)},
        "heldout": {
            "documents": len(heldout),
            "characters": sum(len(d.text) for d in heldout),
            "groups": sorted({d.group for d in heldout}),
        },
    }
    accounted = stats["kept"] + sum(stats["dropped"].values()) + sum(stats["skipped_while_reading"].values())
    assert accounted == read_stats.records, f"corpus accounting: {accounted} != {read_stats.records}"
    log.info(
        "%s: %d records -> %d train / %d held-out documents; dropped %s",
        lang,
        read_stats.records,
        len(train),
        len(heldout),
        stats["dropped"] or "none",
    )
    return stats


def _build(recipe: "Recipe", rd: RunDir, ctx: StageContext) -> None:
    cfg = recipe.corpus
    stats: dict[str, Any] = {
        "target": cfg.target.language,
        "replay": cfg.replay.language if cfg.replay else None,
        "languages": {},
    }
    for src in (cfg.target, cfg.replay):
        if src is not None:
            stats["languages"][src.language] = _process(src, cfg, ctx.out)
    target = stats["languages"][cfg.target.language]
    if target["heldout"]["documents"] == 0:
        wanted = ", ".join(cfg.heldout_groups) if cfg.heldout_groups else f"fraction {cfg.heldout_fraction}"
        raise InputError(
            f"corpus: no {cfg.target.language} documents are held out ({wanted}); evaluation needs some",
            hint="name existing groups in corpus.heldout_groups, or raise corpus.heldout_fraction",
        )
    if target["train"]["documents"] == 0:
        raise InputError(
            f"corpus: every {cfg.target.language} document is held out; nothing is left to train on",
            hint="hold out fewer groups",
        )
    write_json(ctx.out / "stats.json", stats)


def inputs(recipe: "Recipe", rd: RunDir) -> dict[str, Any]:
    cfg = recipe.corpus
    return {
        "config": recipe.to_dict()["corpus"],
        "sources": {s.language: source_identity(s) for s in (cfg.target, cfg.replay) if s is not None},
    }


def run(recipe: "Recipe", rd: RunDir, force: bool = False) -> Path:
    return run_stage(NAME, recipe, rd, inputs(recipe, rd), _build, force)
