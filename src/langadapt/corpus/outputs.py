"""The corpus stage's outputs, after its passes: the held-out split by whole groups, the files
per language, and the accounting of every record (stats.json, which must balance).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from langadapt.config import ROLES, is_listed, primary, source_name, sources_of
from langadapt.corpus.config import CorpusConfig
from langadapt.corpus.filters import FILTERS
from langadapt.documents import write_docs
from langadapt.errors import InputError
from langadapt.sources.records import Doc

log = logging.getLogger(__name__)

# the order steps apply in: the per-step table of stats.json follows it
STEP_ORDER = ("read", "length", "lid", "script", "quality", "exact-dedup", "line-dedup", "url-filter", "near-dedup")


def _hash01(group: str) -> float:
    return int.from_bytes(hashlib.sha256(group.encode()).digest()[:4], "big") / 2**32


def is_heldout(group: str, cfg: CorpusConfig) -> bool:
    if cfg.heldout_groups:
        return group in cfg.heldout_groups
    return _hash01(group) < cfg.heldout_fraction


def heldout_groups(groups: set[str], cfg: CorpusConfig) -> set[str]:
    """Groups held out: the named ones, or those a stable hash picks; at least one when there are two or more."""
    if cfg.heldout_groups:
        return groups & set(cfg.heldout_groups)
    chosen = {g for g in groups if _hash01(g) < cfg.heldout_fraction}
    if not chosen and len(groups) >= 2:
        chosen = {min(groups, key=_hash01)}
    return chosen


def _read_rows(folder: Path, columns: list[str]) -> list[dict[str, Any]]:
    import pyarrow.parquet as pq

    rows: list[dict[str, Any]] = []
    for f in sorted(folder.glob("**/*.parquet")):
        rows.extend(pq.read_table(f, columns=columns).to_pylist())
    return rows


def assemble(cfg: CorpusConfig, work: Path, out: Path, plan: dict[str, Any]) -> dict[str, Any]:
    cols = ["id", "text", "source", "language", "group", "doc_id", "drop_step", "drop_reason", "repaired", "lid",
            "pii", "lines_removed", "chars_removed", "minhash_cluster_size", "url"]  # fmt: skip
    kept = _read_rows(work / "kept", cols)
    dropped = _read_rows(work / "dropped", cols)
    kept.sort(key=_order)
    dropped.sort(key=_order)
    languages = sorted({r["language"] for r in kept + dropped})
    stats: dict[str, Any] = {
        "target": primary(cfg, "target").language,  # type: ignore[union-attr]
        "replay": replay.language if (replay := primary(cfg, "replay")) else None,
        "languages": {},
        "sources": _per_source(kept, dropped),
    }
    for lang in languages:
        stats["languages"][lang] = _write_language(cfg, out, lang, kept, dropped)
    _check_outputs(cfg, stats)
    return stats


def _order(row: dict[str, Any]) -> tuple[int, int]:
    unit, n = row["id"].split(":")
    return int(unit), int(n)


def _per_source(kept: list[dict[str, Any]], dropped: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for row in kept + dropped:
        s = out.setdefault(row["source"], {"language": row["language"], "records": 0, "kept": 0, "dropped": {}})
        s["records"] += 1
        if row["drop_step"]:
            by_step = s["dropped"].setdefault(row["drop_step"], {})
            by_step[row["drop_reason"]] = by_step.get(row["drop_reason"], 0) + 1
        else:
            s["kept"] += 1
    for role, s in out.items():
        n_dropped = sum(sum(r.values()) for r in s["dropped"].values())
        assert s["records"] == s["kept"] + n_dropped, f"corpus accounting ({role}): {s}"
    return out


def _write_language(
    cfg: CorpusConfig, out: Path, lang: str, kept_all: list[dict[str, Any]], dropped_all: list[dict[str, Any]]
) -> dict[str, Any]:
    kept = [r for r in kept_all if r["language"] == lang]
    dropped = [r for r in dropped_all if r["language"] == lang]
    groups = {r["group"] for r in kept if r["source"] != "knowledge"}
    held = heldout_groups(groups, cfg)
    if not cfg.heldout_groups:
        log.info(
            "%s: %d of %d groups held out (heldout_fraction %s)", lang, len(held), len(groups), cfg.heldout_fraction
        )
    heldout = [r for r in kept if r["group"] in held and r["source"] != "knowledge"]
    train = [r for r in kept if not (r["group"] in held and r["source"] != "knowledge")]
    train_docs = [Doc(r["doc_id"], r["text"], r["group"]) for r in train]
    if cfg.near_dedup.rehydrate:
        train_docs = rehydrate(train, cfg.near_dedup.rehydrate_cap)
    copies = [_copies(r, cfg) if cfg.near_dedup.rehydrate else 1 for r in train]  # rehydration repeats documents
    # each training document's URL, when it has one (metadata conditioning reads it)
    extra = {"url": [r["url"] or "" for r, k in zip(train, copies) for _ in range(k)]}
    if any(":" in r["source"] for r in train):  # a source of a list: each document names it (the mix draws per source)
        extra["source"] = [_source_of(r, cfg) for r, k in zip(train, copies) for _ in range(k)]
    write_docs(out / lang / "train.parquet", train_docs, extra=extra)
    write_docs(out / lang / "heldout.parquet", [Doc(r["doc_id"], r["text"], r["group"]) for r in heldout])
    write_docs(
        out / "dropped" / f"{lang}.parquet",
        [Doc(r["doc_id"] or r["id"], r["text"] or "", r["group"] or "") for r in dropped],
        [r["drop_reason"] for r in dropped],
        extra={"step": [r["drop_step"] for r in dropped], "source": [r["source"] for r in dropped]},
    )
    reasons = Counter(f"{r['drop_step']}:{r['drop_reason']}" for r in dropped)
    return {
        "records_read": len(kept) + len(dropped),
        "kept": len(kept),
        "dropped": dict(sorted(reasons.items())),
        "repaired": dict(Counter(r["repaired"] for r in kept + dropped if r["repaired"])),
        "pii_replaced": _sum_json(r["pii"] for r in kept + dropped),
        "boilerplate": {
            "lines_removed": sum(r["lines_removed"] or 0 for r in kept + dropped),
            "characters_removed": sum(r["chars_removed"] or 0 for r in kept + dropped),
        },
        "near_duplicate_clusters": dict(
            sorted(Counter(r["minhash_cluster_size"] for r in kept if (r["minhash_cluster_size"] or 1) > 1).items())
        ),
        "language_id": dict(
            Counter(r["lid"] or "und" for r in kept + dropped if r["drop_step"] != "read").most_common(20)
        ),
        "steps": _step_table(kept, dropped),
        "groups": len(groups),
        "train": {"documents": len(train_docs), "characters": sum(len(d.text) for d in train_docs)},
        "heldout": {
            "documents": len(heldout),
            "characters": sum(len(r["text"]) for r in heldout),
            "groups": sorted(held),
        },
    }


def _step_table(kept: list[dict[str, Any]], dropped: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Documents and characters going into and out of each step, in the order the steps apply."""
    quality = {e.name for e in FILTERS.entries() if e.obj.kind == "quality"}
    by_step: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in dropped:
        by_step["quality" if r["drop_step"] in quality else r["drop_step"]].append(r)
    docs = len(kept) + len(dropped)
    chars = sum(len(r["text"] or "") for r in kept + dropped)
    table = []
    for step in STEP_ORDER:
        gone = by_step.get(step, [])
        gone_chars = sum(len(r["text"] or "") for r in gone)
        if step == "line-dedup":
            gone_chars += sum(r["chars_removed"] or 0 for r in kept)
        table.append(
            {
                "step": step,
                "documents_in": docs,
                "documents_out": docs - len(gone),
                "characters_in": chars,
                "characters_out": chars - gone_chars,
            }  # fmt: skip
        )
        docs, chars = docs - len(gone), chars - gone_chars
    return table


def _sum_json(items: Any) -> dict[str, int]:
    total: Counter[str] = Counter()
    for item in items:
        if item:
            total.update(json.loads(item))
    return dict(total)


def _source_of(row: dict[str, Any], cfg: CorpusConfig) -> str:
    """The name of the listed source a training document trains under: its own, or for a sentence made from
    knowledge triples, the first target source's (knowledge is target-language text)."""
    if ":" in row["source"]:
        return row["source"].split(":", 1)[1]
    if row["source"] == "knowledge" and is_listed(cfg, "target"):
        return source_name(primary(cfg, "target"))  # type: ignore[arg-type]
    return ""


def _copies(row: dict[str, Any], cfg: CorpusConfig) -> int:
    return min(max(row["minhash_cluster_size"] or 1, 1), cfg.near_dedup.rehydrate_cap)


def rehydrate(rows: list[dict[str, Any]], cap: int) -> list[Doc]:
    """FineWeb2-style: a document that had k near-duplicates is repeated min(k, cap) times."""
    docs = []
    for r in rows:
        for i in range(min(max(r["minhash_cluster_size"] or 1, 1), cap)):
            docs.append(Doc(r["doc_id"] if i == 0 else f"{r['doc_id']}#{i}", r["text"], r["group"]))
    return docs


def _check_outputs(cfg: CorpusConfig, stats: dict[str, Any]) -> None:
    for role in ROLES:
        listed = is_listed(cfg, role)
        for src in sources_of(cfg, role):
            _check_source(src, stats, f"{role}:{source_name(src)}" if listed else "")
    target_lang = primary(cfg, "target").language  # type: ignore[union-attr]
    target = stats["languages"][target_lang]
    if target["heldout"]["documents"] == 0:
        wanted = ", ".join(cfg.heldout_groups) if cfg.heldout_groups else f"fraction {cfg.heldout_fraction}"
        raise InputError(
            f"corpus: no {target_lang} documents are held out ({wanted}); evaluation needs some",
            hint="name existing groups in corpus.heldout_groups, raise corpus.heldout_fraction, "
            "or give the source a group_field with two or more groups",
        )
    if target["train"]["documents"] == 0:
        raise InputError(
            f"corpus: every {target_lang} document is held out; nothing is left to train on",
            hint="hold out fewer groups",
        )


def _check_source(src: Any, stats: dict[str, Any], label: str) -> None:
    """A source with nothing left (a source of a list: its own documents; a single one: its language's)."""
    s = stats["languages"].get(src.language)
    if label and s is not None and stats["sources"].get(label, {}).get("kept", 0) == 0:
        raise InputError(
            f"corpus: no documents left from source '{label.split(':', 1)[1]}' ('{src.path}'; "
            f"{stats['sources'].get(label, {}).get('records', 0)} records read)",
            hint="check the file holds text in the expected field and language, or drop it from the list",
        )
    if s is None or s["kept"] == 0:
        reasons = s["dropped"] if s else {}
        raise InputError(
            f"corpus: no {src.language} documents left from '{src.path}' "
            f"(read {s['records_read'] if s else 0} records; dropped or skipped: {reasons or 'none'})",
            hint="check the file holds text in the expected field and language, or switch steps off "
            "with corpus.disable (see corpus/thresholds.json for the thresholds applied)",
        )
