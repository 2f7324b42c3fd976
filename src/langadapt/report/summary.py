"""The report's plain-language summary and its task tables, from `eval/results.json` alone.

Shared by the HTML page, the CLI's results printout and the exported model card, so all
three say the same thing in the same words.
"""

from __future__ import annotations

from typing import Any


def _pct(before: float, after: float) -> str:
    change = (after - before) / before if before else 0.0
    verb = "fell" if change < 0 else "rose" if change > 0 else "stayed"
    return f"{verb} {abs(100 * change):.1f}% ({before:.3f} → {after:.3f})"


def _score(row: dict[str, Any]) -> str:
    spread = f" ± {row['std']:.3f}" if row.get("seeds") and len(row["seeds"]) > 1 else ""
    return f"{row['mean']:.3f}{spread}"


def _move(before: dict[str, Any], after: dict[str, Any]) -> str:
    if after["mean"] > before["mean"]:
        verb = "rose"
    elif after["mean"] < before["mean"]:
        verb = "fell"
    else:
        verb = "stayed at"
        return f"{verb} {_score(after)}"
    return f"{verb} from {_score(before)} to {_score(after)}"


def summary_sentences(results: dict[str, Any], target: str | None, replay: str | None) -> list[str]:
    """Sentences a reader gets without reading a table: target first, then the source language."""
    out = []
    order = {target: 0, replay: 1}
    sets = sorted(
        results.get("bits_per_byte", {}).items(), key=lambda kv: order.get(results["sets"][kv[0]]["language"], 2)
    )
    for name, r in sets:
        s = results["sets"][name]
        what = {"target-heldout": "held-out", "replay-heldout": "held-out", "extra": "evaluation-only"}.get(
            s["kind"], ""
        )
        out.append(f"{what} {s['language']} text ({name}): bits per byte {_pct(r['base'], r['adapted'])}".strip())
    if results.get("base_head_created") and sets:
        out.append(
            "the base model has no masked-LM head: its scores come from a head created untrained, so the change "
            "against it is mostly what training the head gave; a run whose phases train the head alone for as many "
            "steps is the baseline that shows what adaptation added"
        )
    rows = results.get("tasks", [])
    index = {(r["task"], r["language"], r["setting"], r["metric"], r["model"]): r for r in rows}
    seen = set()
    for r in sorted(rows, key=lambda r: (order.get(r["language"], 2), r["task"])):
        key = (r["task"], r["language"], r["setting"], r["metric"])
        if key in seen or r["kind"] == "alignment":
            continue
        seen.add(key)
        base, adapted = index.get((*key, "base")), index.get((*key, "adapted"))
        if not base or not adapted:
            continue
        where = f"in {r['language']}" if r["setting"] == "in-language" else f"{r['language']} ({r['setting']})"
        if r["kind"] == "retrieval":
            where = r["setting"]
        if r["kind"] == "lm-eval":
            where = r["setting"]
        out.append(f"{r['task']} {r['metric']} {where} {_move(base, adapted)}")
    return out


def task_rows(rows: list[dict[str, Any]], models: list[str]) -> tuple[list[str], list[list[Any]]]:
    """One table row per (language, setting, metric): each model's mean ± std, and adapted minus base."""
    keys = list(dict.fromkeys((r["language"], r["setting"], r["metric"]) for r in rows))
    index = {(r["language"], r["setting"], r["metric"], r["model"]): r for r in rows}
    header = ["language", "setting", "metric", *models, "adapted - base", "test examples"]
    body = []
    for key in keys:
        cells: list[Any] = list(key)
        for m in models:
            cells.append(_score(index[(*key, m)]) if (*key, m) in index else "-")
        b, a = index.get((*key, "base")), index.get((*key, "adapted"))
        if b and a:
            d = a["mean"] - b["mean"]
            cells.append(("better" if d > 0 else "worse" if d < 0 else "", f"{d:+.3f}"))
        else:
            cells.append("-")
        cells.append(next(index[(*key, m)]["n_test"] for m in models if (*key, m) in index))
        body.append(cells)
    return header, body
