"""Rebuild `src/langadapt/data/corpus/reference.json`: English reference statistics for threshold derivation.

The reference is the bundled English text (World English Bible chapters and the UDHR
articles), measured with the same statistics the corpus stage stores. FineWeb2's reference
was web English; none ships with langadapt, and the file says so (`thresholds.LIMITATION`). Run:
    .venv/bin/python bench/corpus_reference.py
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from langadapt.config import SourceConfig
from langadapt.corpus.filters import STATS, _punctuation, measure, terminal_punctuation
from langadapt.corpus.thresholds import build_reference
from langadapt.documents import normalize
from langadapt.sources.reading import read_source

OUT = Path(__file__).resolve().parents[1] / "src/langadapt/data/corpus/reference.json"


def main() -> None:
    stop = frozenset((OUT.parent / "stopwords" / "eng.txt").read_text().split())
    punct, terminal = _punctuation(), terminal_punctuation()
    rows = []
    for path in ("builtin:bible-eng", "builtin:udhr-eng"):
        docs, _ = read_source(SourceConfig(path=path, language="eng"))
        rows += [measure(normalize(d.text, "NFC"), stop, punct, terminal) for d in docs]
    stats = {s: np.array([r[s] for r in rows]) for s in STATS}
    ref = build_reference(stats, "English: World English Bible chapters and UDHR articles (bundled)")
    OUT.write_text(json.dumps(ref, indent=1) + "\n", encoding="utf-8")
    print(f"{len(rows)} English documents -> {OUT}")


if __name__ == "__main__":
    main()
