"""The report's distillation section: the student beside its teacher, from `distill/summary.json`."""

from __future__ import annotations

import html
from typing import Any

from langadapt.report.blocks import table
from langadapt.rundir import RunDir, read_json


def summary(rd: RunDir) -> dict[str, Any] | None:
    """The finished distill stage's summary, or None when the run has no student."""
    f = rd.path("distill") / "summary.json"
    return read_json(f) if rd.is_complete("distill") and f.is_file() else None


def render(rd: RunDir) -> str:
    s = summary(rd)
    if s is None:
        return ""
    unit = "pseudo bits/byte" if s["metric"] == "pseudo_bits_per_byte" else "bits/byte"
    t, st = s["inference"]["teacher"], s["inference"]["student"]
    rows: list[list[Any]] = [
        ["parameters", f"{s['teacher_parameters']:,}", f"{s['student_parameters']:,}"],
        ["layers", s["teacher_layers"], f"{len(s['student_layers'])} (teacher layers {s['student_layers']})"],
        ["vocabulary", f"{s['vocabulary']['teacher_tokens']:,}", f"{s['vocabulary']['student_tokens']:,}"],
    ]
    for name, r in s["bits_per_byte"].items():
        change = r["student"] / r["teacher"] - 1
        rows.append([f"{name} ({unit})", f"{r['teacher']:.4f}", f"{r['student']:.4f} ({100 * change:+.1f}%)"])
    rows.append(
        [
            f"inference tokens/s (forward passes of {t['tokens']} tokens)",
            f"{t['tokens_per_s']:,.0f}",
            f"{st['tokens_per_s']:,.0f} ({st['tokens_per_s'] / t['tokens_per_s']:.2f}x)",
        ]
    )
    losses = s["losses"]
    terms = (
        f"logit KL at temperature {losses['temperature']} (x{losses['kl_weight']}), hidden-state "
        f"{losses['hidden_loss']} (x{losses['hidden_weight']})"
    )
    if losses.get("attention_weight"):
        terms += f", attention KL (x{losses['attention_weight']})"
    return (
        "<h2>Distilled student</h2>"
        f"<p>The adapted model (the teacher, {s['parameter_ratio']:.2f}x the student's parameters) distilled into a student: "
        f"{html.escape(terms)}, {s['training']['steps']} steps on the corpus. Both scored on the same held-out "
        f"text and timed on the same machine ({html.escape(str(s['device'].get('device', '')))}).</p>"
        + table(["", "teacher", "student"], rows)
    )
