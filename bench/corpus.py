"""Benchmark the corpus stage against a stock datatrove pipeline on a generated dirty corpus.

    python bench/corpus.py                 # >= 100 MB corpus, 2 workers
    python bench/corpus.py --mb 20 --workers 1

Needs `pip install 'langadapt[corpus-bench]'` (the stock pipeline's JsonlReader reads with orjson).

The corpus is real Chichewa text (Bible verses, recombined into web-page-sized documents)
mixed with other-language documents (English Bible verses), boilerplate header and footer
lines, planted near-duplicates at known edit distances (1-3 words changed per 100),
exact duplicates, PII, junk (symbol noise, menus, spam repetition) and invalid UTF-8 bytes.

Baseline, measured in the same run on the same files: a stock datatrove pipeline with the
equivalent steps - JsonlReader, the same pycld2 language check (a LambdaFilter), datatrove's
GopherRepetitionFilter, GopherQualityFilter and FineWebQualityFilter with English thresholds
(the stock pipeline cannot derive them), the same MinHash settings (its four stages) and a
JsonlWriter. Both use the same script-aware word tokenizer (datatrove's defaults download
models). Prints documents and MB/s per core for both, dedup recall/precision against the
planted pairs, the share of other-language documents removed, the accounting of junk records,
and ends with `ratio: R` (langadapt throughput / stock throughput).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import random
import shutil
import sys
import time
from pathlib import Path

BOILERPLATE = [
    "Home | Nkhani | Masewera | Zosangalatsa | Lumikizanani nafe",
    "© 2024 Nkhani Zathu Media. Ufulu wonse ndi wotetezedwa.",
    "Gawani nkhaniyi pa Facebook, Twitter ndi WhatsApp",
]
JUNK = [
    lambda r: " ".join("".join(r.choice("#$%&*+=<>|~^") for _ in range(r.randint(2, 8))) for _ in range(200)),
    lambda r: "\n".join(f"- Menu item {i} | {r.randint(0, 999)}" for i in range(40)),
    lambda r: "gulani tsopano mtengo wotsika kwambiri " * 60,
    lambda r: "\n".join(" | ".join(str(r.randint(0, 99999)) for _ in range(8)) for _ in range(30)),
]


def verses(lang: str) -> list[str]:
    from langadapt.config import SourceConfig
    from langadapt.sources.reading import read_source

    docs, _ = read_source(SourceConfig(path=f"builtin:bible-{lang}", language=lang))
    out = []
    for d in docs:  # chapters -> sentences (verses are joined with spaces in the bundled reader)
        out += [s.strip() + "." for s in d.text.split(". ") if len(s.split()) >= 4]
    return out


def edit(text: str, rng: random.Random, per_100: int) -> str:
    """Replace `per_100` words in every 100 (lines kept as they are)."""
    lines = [line.split(" ") for line in text.split("\n")]
    spots = [(i, j) for i, line in enumerate(lines) for j in range(len(line))]
    for i, j in rng.sample(spots, max(1, len(spots) * per_100 // 100)):
        lines[i][j] = rng.choice(["mawu", "zina", "kwambiri", "tsopano", "ife"])
    return "\n".join(" ".join(line) for line in lines)


def generate(folder: Path, mb: int, shards: int, seed: int = 0) -> dict:
    """Write the dirty corpus as JSONL shards; return the truth (planted pairs, other-language and junk ids)."""
    rng = random.Random(seed)
    nya, eng = verses("nya"), verses("eng")
    folder.mkdir(parents=True, exist_ok=True)
    files = [open(folder / f"shard-{i:03d}.jsonl", "wb") for i in range(shards)]
    truth: dict = {"near": [], "exact": [], "other": [], "junk": [], "invalid": [], "not_json": [], "target": 0}
    size, n = 0, 0
    originals: list[tuple[str, str]] = []

    def emit(doc_id: str, text: str, raw: bytes | None = None) -> None:
        nonlocal size, n
        line = (
            raw
            if raw is not None
            else json.dumps(
                {"id": doc_id, "text": text, "url": f"https://site{n % 997}.mw/{doc_id}"}, ensure_ascii=False
            ).encode()
        )
        files[n % shards].write(line + b"\n")
        size += len(line) + 1
        n += 1

    while size < mb << 20:
        kind = rng.random()
        doc_id = f"d{n}"
        if kind < 0.70:
            paragraphs = ["\n".join(" ".join(rng.sample(nya, rng.randint(2, 4))) for _ in range(rng.randint(3, 6)))]
            text = paragraphs[0]
            if rng.random() < 0.3:
                text = f"{BOILERPLATE[0]}\n{text}\n{BOILERPLATE[1]}\n{BOILERPLATE[2]}"
            if rng.random() < 0.05:
                text += f"\nLumikizanani nafe: info{n}@nkhani.mw kapena +265 999 {n % 1000:03d} {n % 997:03d}"
            emit(doc_id, text)
            truth["target"] += 1
            if rng.random() < 0.1:
                originals.append((doc_id, text))
        elif kind < 0.80:
            text = "\n".join(" ".join(rng.sample(eng, rng.randint(2, 4))) for _ in range(rng.randint(3, 6)))
            emit(doc_id, text)
            truth["other"].append(doc_id)
        elif kind < 0.86 and originals:
            src_id, src = rng.choice(originals)
            per_100 = rng.choice([1, 2, 3])
            emit(doc_id, edit(src, rng, per_100))
            truth["near"].append([src_id, doc_id, per_100])
        elif kind < 0.88 and originals:
            src_id, src = rng.choice(originals)
            emit(doc_id, src)
            truth["exact"].append([src_id, doc_id])
        elif kind < 0.95:
            emit(doc_id, rng.choice(JUNK)(rng))
            truth["junk"].append(doc_id)
        else:  # invalid UTF-8 inside an otherwise fine document, or a line that is not JSON at all
            text = " ".join(rng.sample(nya, 6))
            if rng.random() < 0.5:
                url = f"https://site{n % 997}.mw/{doc_id}"
                raw = json.dumps({"id": doc_id, "text": text, "url": url}, ensure_ascii=False).encode()
                raw = raw.replace(b"a", b"\xff\xfe", 2)
                truth["invalid"].append(doc_id)
            else:
                raw = b"\x00\x01garbage{" + bytes(rng.randrange(128, 256) for _ in range(50))
                truth["not_json"].append(doc_id)
            emit(doc_id, "", raw)
    for f in files:
        f.close()
    truth["bytes"], truth["records"] = size, n
    return truth


def run_langadapt(corpus_dir: Path, run_dir: Path, workers: int, shards: int) -> float:
    from langadapt.corpus import flow as corpus
    from langadapt.recipe import Recipe
    from langadapt.rundir import RunDir

    recipe = Recipe.from_dict(
        {
            "name": "bench-corpus",
            "run_dir": str(run_dir),
            "model": {"base": "builtin:smollm2-135m"},
            "corpus": {
                "target": {"path": str(corpus_dir / "*.jsonl"), "language": "nya", "group_field": "url_domain"},
                "workers": workers,
                "tasks": shards,
            },
            "train": {"replay_ratio": 0},
        }
    )
    t0 = time.time()
    corpus.run(recipe, RunDir(run_dir), force=True)
    return time.time() - t0


def decodable_copy(corpus_dir: Path, out: Path) -> Path:
    """The corpus without its undecodable lines: datatrove's JsonlReader gives up on the rest of a file at the
    first invalid UTF-8 byte, so on the dirty files the stock run would read a fraction of the records."""
    out.mkdir(parents=True, exist_ok=True)
    for f in sorted(corpus_dir.glob("*.jsonl")):
        with open(f, "rb") as src, open(out / f.name, "wb") as dst:
            for line in src:
                try:
                    json.loads(line.decode("utf-8"))
                except (UnicodeDecodeError, ValueError):
                    continue
                dst.write(line)
    return out


def run_stock(corpus_dir: Path, out: Path, workers: int, shards: int) -> tuple[float, int]:
    """datatrove's own blocks with the same steps and settings."""
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.dedup.minhash import (
        MinhashDedupBuckets,
        MinhashDedupCluster,
        MinhashDedupFilter,
        MinhashDedupSignature,
    )
    from datatrove.pipeline.filters import (
        FineWebQualityFilter,
        GopherQualityFilter,
        GopherRepetitionFilter,
        LambdaFilter,
    )
    from datatrove.pipeline.formatters import PIIFormatter
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.writers import JsonlWriter

    from langadapt.corpus.dedup import minhash_config
    from langadapt.script import make_word_tokenizer

    tok = make_word_tokenizer()
    mh = minhash_config(5, 14, 8)
    stop = stop_words(corpus_dir)

    def is_nya(doc) -> bool:  # type: ignore[no-untyped-def]
        import pycld2

        try:
            _, _, details = pycld2.detect(doc.text[:20_000], isPlainText=True)
        except pycld2.error:
            return False
        return details[0][1] == "ny" and details[0][2] >= 50

    t0 = time.time()
    LocalPipelineExecutor(
        [
            JsonlReader(str(corpus_dir), glob_pattern="*.jsonl"),
            PIIFormatter(),
            LambdaFilter(is_nya),
            GopherRepetitionFilter(language=tok),
            GopherQualityFilter(language=tok, stop_words=stop),
            FineWebQualityFilter(language=tok),
            JsonlWriter(str(out / "filtered"), output_filename="${rank}.jsonl.gz"),
            MinhashDedupSignature(str(out / "sigs"), mh, language=tok),
        ],
        tasks=shards,
        workers=workers,
        logging_dir=str(out / "logs/1"),
    ).run()
    LocalPipelineExecutor(
        [MinhashDedupBuckets(input_folder=str(out / "sigs"), output_folder=str(out / "buckets"), config=mh)],
        tasks=mh.num_buckets,
        workers=workers,
        logging_dir=str(out / "logs/2"),
    ).run()
    LocalPipelineExecutor(
        [MinhashDedupCluster(input_folder=str(out / "buckets"), output_folder=str(out / "remove"), config=mh)],
        tasks=1,
        logging_dir=str(out / "logs/3"),
    ).run()
    LocalPipelineExecutor(
        [
            JsonlReader(str(out / "filtered"), glob_pattern="*.jsonl.gz"),
            MinhashDedupFilter(str(out / "remove")),
            JsonlWriter(str(out / "kept"), output_filename="${rank}.jsonl.gz"),
        ],
        tasks=shards,
        workers=workers,
        logging_dir=str(out / "logs/4"),
    ).run()
    seconds = time.time() - t0
    import gzip

    kept = sum(sum(1 for _ in gzip.open(f, "rt")) for f in (out / "kept").glob("*.jsonl.gz"))
    return seconds, kept


def stop_words(corpus_dir: Path) -> list[str]:
    """The stock Gopher filter's English stop words would drop every Chichewa document: give it the same
    corpus-derived stop words langadapt uses, so the comparison is of the machinery, not of a setting."""
    from langadapt.corpus.filters import stop_words_from

    texts = []
    with open(sorted(corpus_dir.glob("*.jsonl"))[0], encoding="utf-8", errors="replace") as f:
        for line in f:
            try:
                texts.append(json.loads(line)["text"])
            except (ValueError, KeyError):
                continue
            if len(texts) >= 2000:
                break
    return stop_words_from(texts)


def quality(run_dir: Path, truth: dict) -> dict:
    import pyarrow.parquet as pq

    from langadapt.corpus.filters import FILTERS
    from langadapt.rundir import read_json

    out = run_dir / "corpus"
    stats = read_json(out / "stats.json")
    dropped = pq.read_table(out / "dropped" / "nya.parquet", columns=["id", "reason", "step"]).to_pylist()
    by_id = {r["id"]: r for r in dropped}
    before_dedup = {"read", "length", "lid", "script"} | {
        e.name for e in FILTERS.entries() if e.obj.kind == "quality"
    }  # a pair one of whose documents an earlier step dropped says nothing about dedup

    def reached_dedup(doc_id: str) -> bool:
        return by_id.get(doc_id, {}).get("step") not in before_dedup

    def removed(doc_id: str) -> bool:
        return by_id.get(doc_id, {}).get("step") in ("exact-dedup", "near-dedup")

    near_found = {r["id"] for r in dropped if r["reason"] == "near_duplicate"}
    pairs = [(a, b, e) for a, b, e in truth["near"] if reached_dedup(a) and reached_dedup(b)]
    found = [(a, b, e) for a, b, e in pairs if removed(a) or removed(b)]
    recall_by_edit = {
        k: sum(1 for *_, e in found if e == k) / max(sum(1 for *_, e in pairs if e == k), 1) for k in (1, 2, 3)
    }
    planted = {x for a, b, _ in truth["near"] for x in (a, b)} | {x for a, b in truth["exact"] for x in (a, b)}
    exact_pairs = [(a, b) for a, b in truth["exact"] if reached_dedup(a) and reached_dedup(b)]
    exact_found = sum(1 for a, b in exact_pairs if removed(a) or removed(b))
    other_removed = sum(1 for i in truth["other"] if by_id.get(i, {}).get("step") in ("lid", "script"))
    junk_removed = sum(1 for i in truth["junk"] if i in by_id)
    s = stats["sources"]["target"]
    nya = stats["languages"]["nya"]
    return {
        "records": s["records"],
        "kept": s["kept"],
        "every_line_of_the_files_accounted": s["records"] == truth["records"]
        and s["records"] == s["kept"] + sum(sum(r.values()) for r in s["dropped"].values()),
        "near_pairs_reaching_dedup": f"{len(pairs)} of {len(truth['near'])}",
        "near_recall": len(found) / max(len(pairs), 1),
        "near_recall_by_edits_per_100_words": recall_by_edit,
        "near_precision": len(near_found & planted) / max(len(near_found), 1),
        "exact_recall": exact_found / max(len(exact_pairs), 1),
        "other_language_removed": other_removed / max(len(truth["other"]), 1),
        "junk_removed": junk_removed / max(len(truth["junk"]), 1),
        "invalid_utf8_records_repaired": f"{nya['repaired'].get('invalid_utf8', 0)} of {len(truth['invalid'])}",
        "non_json_lines_dropped_unparseable": f"{nya['dropped'].get('read:unparseable', 0)} of {len(truth['not_json'])}",
        "dropped_by_step": {k: sum(v.values()) for k, v in s["dropped"].items()},
        "pii_replaced": nya["pii_replaced"],
        "boilerplate": nya["boilerplate"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=int, default=100)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--shards", type=int, default=8)
    ap.add_argument("--work", default="", help="work folder (default: $LANGADAPT_CACHE/bench-corpus)")
    args = ap.parse_args()
    if importlib.util.find_spec("orjson") is None:
        sys.exit("the stock datatrove pipeline reads JSONL with orjson: pip install 'langadapt[corpus-bench]'")
    from langadapt.models.loading import cache_dir

    work = Path(args.work) if args.work else cache_dir() / "bench-corpus"
    corpus_dir = work / f"dirty-{args.mb}mb"
    truth_file = corpus_dir / "truth.json"
    if not truth_file.exists() or "not_json" not in json.loads(truth_file.read_text()):
        shutil.rmtree(corpus_dir, ignore_errors=True)
        t0 = time.time()
        truth = generate(corpus_dir, args.mb, args.shards)
        truth_file.write_text(json.dumps(truth))
        print(f"generated {truth['bytes'] / 2**20:.1f} MB, {truth['records']} records in {time.time() - t0:.0f}s")
    truth = json.loads(truth_file.read_text())
    mb = truth["bytes"] / 2**20
    shutil.rmtree(work / "stock", ignore_errors=True)
    clean_dir = decodable_copy(corpus_dir, work / "stock-input")
    stock_mb = sum(f.stat().st_size for f in clean_dir.glob("*.jsonl")) / 2**20
    for f in [*corpus_dir.glob("*.jsonl"), *clean_dir.glob("*.jsonl")]:  # both runs start from the page cache
        f.read_bytes()
    stock_s, stock_kept = run_stock(clean_dir, work / "stock", args.workers, args.shards)
    ours_s = run_langadapt(corpus_dir, work / "run", args.workers, args.shards)
    q = quality(work / "run", truth)
    ours = mb / ours_s / args.workers
    stock = stock_mb / stock_s / args.workers
    print(f"corpus: {mb:.1f} MB, {truth['records']} records, {args.shards} shards, {args.workers} workers")
    print(
        f"stock datatrove: {stock_s:.1f} s on {stock_mb:.1f} MB (decodable lines), {stock_kept} documents kept, {stock:.3f} MB/s per core"
    )
    print(f"langadapt:       {ours_s:.1f} s, {q['kept']} documents kept, {ours:.3f} MB/s per core")
    for key, value in q.items():
        print(f"  {key}: {value}")
    print(f"ratio: {ours / stock:.2f}")


if __name__ == "__main__":
    main()
