"""The student's model card, and the teacher-beside-student table that the run's model card shares."""

from __future__ import annotations

from typing import Any


def student_card(summary: dict[str, Any]) -> str:
    """The student's model card: what it was distilled from, its size, held-out figures and speed beside the teacher's."""
    lines = [
        "# Distilled student",
        "",
        f"Distilled by langadapt from the adapted model `{summary['teacher']}`: layers {summary['student_layers']} of "
        f"the teacher's {summary['teacher_layers']}, a vocabulary of {summary['vocabulary']['student_tokens']:,} "
        f"tokens of the teacher's {summary['vocabulary']['teacher_tokens']:,}, trained "
        f"{summary['training']['steps']} steps on logit KL (temperature {summary['losses']['temperature']}) plus "
        f"hidden-state matching ({summary['losses']['hidden_loss']}).",
        "",
        *distill_table(summary),
    ]
    return "\n".join(lines) + "\n"


def distill_table(summary: dict[str, Any]) -> list[str]:
    """Markdown rows: parameters, held-out figures and inference speed of teacher and student."""
    unit = "pseudo bits/byte" if summary["metric"] == "pseudo_bits_per_byte" else "bits/byte"
    rows = [
        "| | teacher | student |",
        "|---|---:|---:|",
        f"| parameters | {summary['teacher_parameters']:,} | {summary['student_parameters']:,} |",
    ]
    for name, r in summary["bits_per_byte"].items():
        rows.append(f"| {name} ({unit}) | {r['teacher']:.4f} | {r['student']:.4f} |")
    t, s = summary["inference"]["teacher"], summary["inference"]["student"]
    rows.append(
        f"| inference tokens/s (forward, {t['tokens']} tokens) | {t['tokens_per_s']:,.0f} | {s['tokens_per_s']:,.0f} |"
    )
    return rows
