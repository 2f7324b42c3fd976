"""The report's plain-language summary and its task tables, from `eval/results.json` alone.

Shared by the HTML page, the CLI's results printout and the exported model card, so all
three say the same thing in the same words.

When a task score changed is decided by one rule (`measurable`): a task scored over several
seeds changed only when the two ranges mean ± standard deviation (as the tables show them) do
not overlap, that is when |adapted - base| > std(base) + std(adapted); a smaller difference is
"no measurable change", because another draw of seeds could reverse it. A score without a
spread over seeds (retrieval, one seed) is reported as measured, with a note that nothing
says how much it would move. Every sentence also says what the figure rests on: the
documents and characters of a held-out set, the test examples of a task.
"""

from __future__ import annotations

from typing import Any


def _pct(before: float, after: float) -> str:
    change = (after - before) / before if before else 0.0
    verb = "fell" if change < 0 else "rose" if change > 0 else "stayed"
    return f"{verb} {abs(100 * change):.1f}% ({before:.3f} → {after:.3f})"


def _seeds(row: dict[str, Any]) -> int:
    return len(row.get("seeds") or [])


def _score(row: dict[str, Any]) -> str:
    spread = f" ± {row['std']:.3f}" if _seeds(row) > 1 else ""
    return f"{row['mean']:.3f}{spread}"


def has_spread(before: dict[str, Any], after: dict[str, Any]) -> bool:
    """Whether both scores come from several seeds, so their spread can tell a change from noise."""
    return _seeds(before) > 1 and _seeds(after) > 1


def measurable(before: dict[str, Any], after: dict[str, Any]) -> bool:
    """Whether a task score changed by more than its spread over seeds: the mean ± std ranges do not overlap.

    Scores without a spread over seeds (one seed, or a task without seeds) cannot be judged so and
    count as changed whenever they differ; the sentences say that nothing bounds their noise.
    """
    diff = abs(after["mean"] - before["mean"])
    if not has_spread(before, after):
        return diff > 0
    return diff > before["std"] + after["std"]


def _move(before: dict[str, Any], after: dict[str, Any]) -> str:
    examples = after.get("n_test") or before.get("n_test")
    on = f"{examples} test examples" if examples else "its test set"
    basis = f"{_seeds(after)} seeds, {on}" if has_spread(before, after) else f"one score on {on}"
    if after["mean"] == before["mean"]:
        return f"stayed at {_score(after)} ({basis})"
    if not has_spread(before, after):
        basis += ": no spread over seeds to judge the change by"
    elif not measurable(before, after):
        return (
            f"showed no measurable change ({_score(before)} → {_score(after)}: the difference is within the "
            f"spread over seeds; {basis})"
        )
    verb = "rose" if after["mean"] > before["mean"] else "fell"
    return f"{verb} from {_score(before)} to {_score(after)} ({basis})"


def _extent(s: dict[str, Any]) -> str:
    """What a held-out figure rests on: documents and characters scored."""
    if "documents" not in s:
        return ""
    return f"; {s['documents']} documents, {s['characters']:,} characters"


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
        out.append(
            f"{what} {s['language']} text ({name}{_extent(s)}): {metric_name(r)} {_pct(r['base'], r['adapted'])}".strip()
        )
    verdict = reference_sentence(results)
    if verdict:
        out.insert(1 if out else 0, verdict)
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


def _parameters(n: int | None) -> str:
    if not n:
        return "parameters not recorded"
    return f"{n / 1e6:.3g}M parameters" if n >= 1e6 else f"{n / 1e3:.3g}k parameters"


def reference_sentence(results: dict[str, Any]) -> str:
    """Whether adapting beat the model trained from scratch (eval.reference), by held-out target bits per byte."""
    for name, r in results.get("bits_per_byte", {}).items():
        scratch = r.get("models", {}).get("scratch")
        if scratch is None or results["sets"][name]["kind"] != "target-heldout":
            continue
        adapted, size = r["adapted"], results.get("parameters", {})
        verdict = "beat" if adapted < scratch else "did not beat"
        return (
            f"adapting {verdict} the model trained from scratch on the same text: held-out "
            f"{results['sets'][name]['language']} {metric_name(r)} {adapted:.3f} adapted against {scratch:.3f} from "
            f"scratch ({_parameters(size.get('adapted'))} against {_parameters(size.get('scratch'))})"
        )
    return ""


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
            if not measurable(b, a):  # within the spread over seeds: shown, not coloured as a change
                cells.append(("", f"{d:+.3f} (within spread)" if d else f"{d:+.3f}"))
            else:
                cells.append(("better" if d > 0 else "worse", f"{d:+.3f}"))
        else:
            cells.append("-")
        cells.append(next(index[(*key, m)]["n_test"] for m in models if (*key, m) in index))
        body.append(cells)
    return header, body


def metric_name(row: dict[str, Any]) -> str:
    """What a row of results["bits_per_byte"] measures: encoders' pseudo-likelihood is pseudo bits per byte."""
    return "pseudo bits per byte" if row.get("metric") == "pseudo_bits_per_byte" else "bits per byte"


def metric_names(results: dict[str, Any]) -> str:
    """The name of results["bits_per_byte"] as a whole (a table's title)."""
    names = {metric_name(r) for r in results.get("bits_per_byte", {}).values()}
    return names.pop() if len(names) == 1 else "bits per byte (pseudo bits per byte for encoders)"
