"""Bilingual dictionaries for WECHSEL: read from dictd or TSV files, or induced from parallel text.

- dictd (Debian's dict-freedict-* packages install `/usr/share/dictd/freedict-xxx-yyy.index`
  beside `.dict.dz`): every headword with each one-word translation.
- TSV: one `word<TAB>word` pair per line.
- Parallel text: documents of two sources paired by id, word-aligned with eflomal (a
  Bayesian HMM aligner with fertility) in both directions; links both directions agree
  on are counted, and pairs that are each other's most frequent translation, seen at
  least three times, form the dictionary. The aligner samples, so the induced dictionary
  is cached in the run directory and reused by every re-run.

Which side is the source language is detected from the vocabularies, so a freedict
`swh-eng` file serves an English -> Swahili adaptation as well as the reverse.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from langadapt.errors import InputError, MissingDependencyError
from langadapt.init.vectors import digest, words
from langadapt.rundir import fingerprint, sha256_file
from langadapt.sources.dictionary import _b64, orient, read_dictionary  # noqa: F401  (wechsel reads them here)

if TYPE_CHECKING:
    from langadapt.config import SourceConfig

log = logging.getLogger(__name__)
MAX_WORDS = 1000  # eflomal sentences longer than this are cut (and counted)


@dataclass
class Dictionary:
    pairs: list[tuple[str, str]]  # (source word, target word)
    origin: str  # what it was made from, for the report
    stats: dict[str, int]


def parallel_texts(source: "SourceConfig", target: "SourceConfig") -> tuple[list[str], list[str], dict[str, int]]:
    """Documents of two sources paired by id; unpaired documents are counted."""
    from langadapt.sources.reading import read_source

    src_docs, _ = read_source(source)
    by_id = {d.id: d.text for d in src_docs}
    tgt_docs, _ = read_source(target)
    src_texts, tgt_texts, seen = [], [], set()
    for d in tgt_docs:
        seen.add(d.id)
        if d.id in by_id:
            src_texts.append(by_id[d.id])
            tgt_texts.append(d.text)
    stats = {
        "pairs": len(src_texts),
        "unpaired_source": sum(1 for i in by_id if i not in seen),
        "unpaired_target": len(seen) - len(src_texts),
    }
    if not src_texts:
        raise InputError(
            "init.parallel_source and init.parallel_target share no document id, so no text is parallel",
            hint="parallel documents must carry the same id on both sides (e.g. a verse or chapter reference)",
        )
    return src_texts, tgt_texts, stats


def induce(
    src_texts: list[str], tgt_texts: list[str], cache: Path, min_count: int = 3
) -> tuple[list[tuple[str, str]], dict[str, int]]:
    """A dictionary from word alignments of parallel text (cached: the aligner samples)."""
    key = fingerprint(digest(src_texts), digest(tgt_texts), min_count)
    path = cache / f"dictionary-{key}.tsv"
    if path.is_file():
        rows = [line.split("\t") for line in path.read_text(encoding="utf-8").splitlines() if line]
        return [(r[0], r[1]) for r in rows], {"cached": 1, "pairs": len(rows)}
    try:
        from eflomal import Aligner
    except ImportError:
        raise MissingDependencyError(
            "eflomal", "inducing a dictionary from parallel text", "pip install 'langadapt[init]'"
        ) from None
    import tempfile

    src = [words(t) for t in src_texts]
    tgt = [words(t) for t in tgt_texts]
    cut = sum(1 for s in src + tgt if len(s) > MAX_WORDS)
    keep = [i for i in range(len(src)) if src[i] and tgt[i]]
    src = [src[i][:MAX_WORDS] for i in keep]
    tgt = [tgt[i][:MAX_WORDS] for i in keep]
    log.info("aligning %d parallel documents with eflomal to induce a dictionary", len(src))
    with tempfile.TemporaryDirectory() as tmp:
        fwd, rev = Path(tmp) / "fwd", Path(tmp) / "rev"
        Aligner().align(
            [" ".join(s) for s in src],
            [" ".join(t) for t in tgt],
            links_filename_fwd=str(fwd),
            links_filename_rev=str(rev),
            quiet=True,
        )
        fwd_links = fwd.read_text().splitlines()
        rev_links = rev.read_text().splitlines()
    counts: Counter[tuple[str, str]] = Counter()
    for s, t, lf, lr in zip(src, tgt, fwd_links, rev_links):
        both = set(lf.split()) & set(lr.split())
        for link in both:
            i, j = (int(n) for n in link.split("-"))
            counts[(s[i], t[j])] += 1
    best_t: dict[str, tuple[int, str]] = {}
    best_s: dict[str, tuple[int, str]] = {}
    for (s, t), n in counts.items():
        if n > best_t.get(s, (0, ""))[0] or (n == best_t[s][0] and t < best_t[s][1]):
            best_t[s] = (n, t)
        if n > best_s.get(t, (0, ""))[0] or (n == best_s[t][0] and s < best_s[t][1]):
            best_s[t] = (n, s)
    pairs = sorted(
        ((s, t) for s, (n, t) in best_t.items() if n >= min_count and best_s[t][1] == s),
        key=lambda p: (-counts[p], p),
    )
    cache.mkdir(parents=True, exist_ok=True)
    tmp_path = path.with_name(path.name + ".tmp")
    tmp_path.write_text("".join(f"{s}\t{t}\t{counts[(s, t)]}\n" for s, t in pairs), encoding="utf-8")
    tmp_path.replace(path)
    stats = {
        "aligned_documents": len(src),
        "documents_cut_to_max_words": cut,
        "links": sum(counts.values()),
        "pairs": len(pairs),
    }
    return pairs, stats


def dictionary_file_identity(path: str) -> str:
    return sha256_file(Path(path).expanduser())
