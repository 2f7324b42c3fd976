"""The report's corpus section: what the cleaning kept, dropped and why, and the thresholds it applied.

Reads only `corpus/stats.json` and `corpus/thresholds.json` of a finished corpus stage.
"""

from __future__ import annotations

import html
from typing import Any

from langadapt.report.blocks import png, table
from langadapt.rundir import RunDir, read_json


def render(rd: RunDir) -> str:
    """HTML fragment: per language, documents and characters through each step, drop reasons, language
    distribution, and the derived thresholds."""
    folder = rd.require("corpus", "stats.json")
    stats = read_json(folder / "stats.json")
    thresholds = read_json(folder / "thresholds.json") if (folder / "thresholds.json").exists() else {}
    parts = ["<h2>Corpus</h2>", _sources(stats)]
    for lang, s in stats["languages"].items():
        parts.append(f"<h3>{html.escape(lang)}</h3>")
        parts.append(_steps(s))
        parts.append(f'<img alt="documents per step, {html.escape(lang)}" src="{_steps_plot(lang, s)}">')
        parts.append(_reasons(s))
        parts.append(_languages(s))
        if lang in thresholds.get("languages", {}):
            parts.append(_thresholds(thresholds["languages"][lang]))
    return "\n".join(parts)


def _sources(stats: dict[str, Any]) -> str:
    rows = []
    for role, s in stats.get("sources", {}).items():
        dropped = sum(sum(r.values()) for r in s["dropped"].values())
        rows.append([role, s["language"], s["records"], s["kept"], dropped])
    return "<p>Every input record is kept or dropped with a reason (corpus/dropped/).</p>" + table(
        ["source", "language", "records", "kept", "dropped"], rows
    )


def _steps(s: dict[str, Any]) -> str:
    rows = [
        [r["step"], r["documents_in"], r["documents_out"], f"{r['characters_in']:,}", f"{r['characters_out']:,}"]
        for r in s.get("steps", [])
    ]
    extra = (
        f"<p>PII replaced: {s.get('pii_replaced') or 'none'}; boilerplate lines removed: "
        f"{s.get('boilerplate', {}).get('lines_removed', 0)}; repaired on reading: {s.get('repaired') or 'none'}; "
        f"train {s['train']['documents']} / held-out {s['heldout']['documents']} documents "
        f"({len(s['heldout'].get('groups', []))} groups held out).</p>"
    )
    return table(["step", "documents in", "documents out", "characters in", "characters out"], rows) + extra


def _steps_plot(lang: str, s: dict[str, Any]) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = s.get("steps", [])
    fig, ax = plt.subplots(figsize=(7, 2.6))
    ax.bar([r["step"] for r in steps], [r["documents_out"] for r in steps], color="#4a7bb7")
    ax.set_ylabel("documents left")
    ax.set_title(f"{lang}: documents after each step")
    ax.tick_params(axis="x", rotation=30)
    return png(fig)


def _reasons(s: dict[str, Any]) -> str:
    rows = [[reason.split(":", 1)[0], reason.split(":", 1)[-1], n] for reason, n in s.get("dropped", {}).items()]
    rows.sort(key=lambda r: -r[2])
    return "<h4>Drop reasons</h4>" + table(["step", "reason", "documents"], rows or [["-", "none", 0]])


def _languages(s: dict[str, Any]) -> str:
    rows = [[lang, n] for lang, n in s.get("language_id", {}).items()]
    return "<h4>Identified languages (all documents read)</h4>" + table(["language", "documents"], rows)


def _thresholds(t: dict[str, Any]) -> str:
    lid = t.get("language_id", {})
    head = (
        f"<h4>Thresholds ({html.escape(str(t.get('method')))})</h4><p>Language ID: "
        f"{html.escape(str(lid.get('identifier')))}, "
        f"{'supported' if lid.get('supported') else 'not supported: ' + html.escape(str(lid.get('used_instead')))}"
        f"{_confidence(lid) if lid.get('supported') else ''}; "
        f"script {html.escape(str(t.get('script') or '-'))}; stop words: "
        f"{html.escape(' '.join(t.get('stop_words', [])))}</p>"
    )
    rows = [
        [field, e["statistic"], _num(e["english"]), _num(e["value"]), e["how"]]
        for field, e in t.get("thresholds", {}).items()
    ]
    return head + table(["threshold", "statistic", "English", "applied", "how"], rows)


def _confidence(lid: dict[str, Any]) -> str:
    how = lid.get("min_confidence_how", "")
    return f", confidence at least {_num(lid.get('min_confidence', 0.0))}" + (f" ({html.escape(how)})" if how else "")


def _num(x: float) -> str:
    return f"{x:.4g}"
