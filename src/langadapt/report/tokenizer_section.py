"""The report's tokenizer section: what the tokenizer method changed, per language, before and after.

Reads only `tokenizer/metrics.json`, so it renders for any finished tokenizer stage. The
table puts base and adapted side by side for every measure that stays comparable across
vocabularies; parity (tokens for a target text over tokens for its translation) gets its
own rows because it spans two languages.
"""

from __future__ import annotations

import html
from typing import Any

from langadapt.report.blocks import png, table
from langadapt.rundir import RunDir, read_json

MEASURES = (
    ("fertility", "tokens per word", "lower"),
    ("bytes_per_token", "bytes per token", "higher"),
    ("continued_word_ratio", "words split in pieces", "lower"),
    ("unk_rate", "UNK rate", "lower"),
    ("byte_fallback_rate", "byte-fallback rate", "lower"),
)
FACTS = (
    ("family", "tokenizer family"),
    ("base_vocab_size", "base vocabulary"),
    ("vocab_size", "adapted vocabulary"),
    ("added_tokens", "added tokens"),
    ("candidates_dropped_for_replay", "candidates dropped: would change the replay language"),
    ("shared_tokens", "tokens shared with the base (rows kept)"),
    ("removed_tokens", "removed tokens"),
    ("romanised_tokens", "romanised tokens"),
)


def _fmt(x: Any) -> str:
    if isinstance(x, float):
        return f"{x:.3f}"
    return "-" if x is None else str(x)


def _change(before: Any, after: Any) -> str:
    if not isinstance(before, (int, float)) or not isinstance(after, (int, float)) or not before:
        return "-"
    return f"{100 * (after - before) / before:+.1f}%"


def _plot(held: dict[str, Any]) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    langs = [lang for lang in held if held[lang]["base"]]
    fig, ax = plt.subplots(figsize=(6.5, 3.0))
    x = range(len(langs))
    ax.bar([i - 0.2 for i in x], [held[g]["base"]["fertility"] for g in langs], 0.4, label="base tokenizer")
    ax.bar([i + 0.2 for i in x], [held[g]["adapted"]["fertility"] for g in langs], 0.4, label="adapted tokenizer")
    ax.set_xticks(list(x), langs)
    ax.set_ylabel("tokens per word (lower is better)")
    ax.legend()
    return png(fig)


def render(rd: RunDir) -> str:
    """HTML for the tokenizer section (a heading, the facts, per-language table, parity, a plot)."""
    m = read_json(rd.path("tokenizer") / "metrics.json")
    facts = [[label, _fmt(m[key])] for key, label in FACTS if key in m]
    parts = [
        "<section class='tokenizer'>",
        f"<h2>Tokenizer: {html.escape(str(m.get('method', '')))}</h2>",
        table(["", ""], [["method", m.get("method", "")], *facts]),
    ]
    held = m.get("heldout", {})
    rows = []
    for lang, pair in held.items():
        base, adapted = pair.get("base") or {}, pair.get("adapted") or {}
        for key, label, better in MEASURES:
            if key in base:
                rows.append(
                    [
                        lang,
                        f"{label} ({better} is better)",
                        _fmt(base[key]),
                        _fmt(adapted.get(key)),
                        _change(base[key], adapted.get(key)),
                    ]
                )
    if rows:
        parts.append("<h3>Held-out text, per language</h3>")
        parts.append(table(["language", "measure", "base", "adapted", "change"], rows))
    parity = m.get("parity")
    if parity and parity.get("base"):
        ref = html.escape(str(parity.get("reference_language", "")))
        parts.append(f"<h3>Parity against {ref} on parallel text</h3>")
        parts.append(
            f"<p>Tokens for a target text over tokens for its {ref} translation (1.0: equal cost). "
            f"{parity['base']['pairs']} aligned documents ({html.escape(str(parity.get('pairs_from', '')))}).</p>"
        )
        prow = [
            [
                label,
                _fmt(parity["base"][key]),
                _fmt(parity["adapted"][key]),
                _change(parity["base"][key], parity["adapted"][key]),
            ]
            for key, label in (("parity", "mean per document"), ("parity_total", "total tokens"))
        ]
        parts.append(table(["parity", "base", "adapted", "change"], prow))
    if any(pair.get("base") for pair in held.values()):
        parts.append(f"<img alt='fertility per language, base and adapted tokenizer' src='{_plot(held)}'>")
    parts.append("</section>")
    return "\n".join(parts)
