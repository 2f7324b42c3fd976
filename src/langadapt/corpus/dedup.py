"""Deduplication state shared across tasks: exact duplicates by content hash, boilerplate lines by count.

Both are decided globally between the measuring and the deciding pass, from small per-task
files (hashes, line counts), never from the texts. Near-duplicates use datatrove's MinHash
stages (`near_dedup_steps`).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np


def line_key(line: str) -> int:
    import xxhash

    return xxhash.xxh64_intdigest(line.strip().lower().encode()) & 0x7FFF_FFFF_FFFF_FFFF


def save_line_counts(path: Path, counts: dict[str, Counter[int]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, np.ndarray] = {}
    for lang, c in counts.items():
        arrays[f"{lang}.keys"] = np.fromiter(c.keys(), dtype=np.int64, count=len(c))
        arrays[f"{lang}.counts"] = np.fromiter(c.values(), dtype=np.int64, count=len(c))
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, **arrays)
    tmp.replace(path)


def boilerplate_lines(folder: Path, min_documents: int) -> dict[str, np.ndarray]:
    """Language -> line keys seen in at least `min_documents` documents (summed over every task's counts)."""
    merged: dict[str, Counter[int]] = {}
    for f in sorted(folder.glob("*.npz")):
        with np.load(f) as z:
            for name in z.files:
                if name.endswith(".keys"):
                    lang = name[: -len(".keys")]
                    c = merged.setdefault(lang, Counter())
                    c.update(dict(zip(z[name].tolist(), z[f"{lang}.counts"].tolist())))
    return {
        lang: np.array(sorted(k for k, n in c.items() if n >= min_documents), dtype=np.int64)
        for lang, c in merged.items()
    }


def save_boilerplate(path: Path, lines: dict[str, np.ndarray]) -> None:
    np.savez(path, **lines)


def load_boilerplate(path: Path) -> dict[str, set[int]]:
    if not path.exists():
        return {}
    with np.load(path) as z:
        return {lang: set(z[lang].tolist()) for lang in z.files}


def exact_duplicates(table: Any) -> list[str]:
    """Ids of documents whose (language, content hash) appeared earlier; `table` holds id, language, hash, drop_step."""
    seen: set[tuple[str, int]] = set()
    dups = []
    for doc_id, lang, h, step in zip(table["id"], table["language"], table["hash"], table["drop_step"]):
        if step or h is None:
            continue
        key = (lang, h)
        if key in seen:
            dups.append(doc_id)
        seen.add(key)
    return dups


def save_ids(path: Path, ids: list[str]) -> None:
    path.write_text("\n".join(ids) + ("\n" if ids else ""), encoding="utf-8")


def load_ids(path: Path) -> set[str]:
    return set(path.read_text(encoding="utf-8").split())


def minhash_config(shingle_size: int, bands: int, rows: int) -> Any:
    from datatrove.pipeline.dedup.minhash import MinhashConfig

    return MinhashConfig(n_grams=shingle_size, num_buckets=bands, hashes_per_bucket=rows)
