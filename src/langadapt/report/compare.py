"""Base, adapted and from-scratch side by side: parameters, training compute and held-out target bits per byte.

Training compute is the model FLOPs of the training this run did (`train/flops.py`: per
trained token, forward and backward as the trainable weights require) times the tokens
trained, summed over phases; the base model's pretraining happened elsewhere and is not
counted. Reads `eval/results.json`, `train/summary.json` and, when the run has a reference
model, `reference/summary.json`.
"""

from __future__ import annotations

from typing import Any

HEADER = ["model", "parameters", "trained here", "tokens trained", "training compute (FLOPs)"]


def training_flops(summary: dict[str, Any]) -> float | None:
    """Model FLOPs per token times tokens trained, over every phase; None when the summary lacks either."""
    total = 0.0
    for phase in summary.get("phases") or [summary]:
        per_token, tokens = phase.get("model_flops_per_token"), phase.get("tokens")
        if not per_token or not isinstance(tokens, dict):
            return None
        total += per_token * sum(tokens.values())
    return total


def _tokens(summary: dict[str, Any]) -> int:
    return sum(sum((p.get("tokens") or {}).values()) for p in summary.get("phases") or [summary])


def _count(n: float | None, unit: str = "") -> str:
    if n is None:
        return "n/a"
    for scale, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if n >= scale:
            return f"{n / scale:.3g}{suffix}{unit}"
    return f"{n:.0f}{unit}"


def model_rows(
    results: dict[str, Any],
    train: dict[str, Any],
    reference: dict[str, Any] | None,
    from_scratch_run: bool = False,
) -> tuple[list[str], list[list[str]]]:
    """One row per model: base, adapted (or this run's from-scratch model), and the reference from scratch;
    then each held-out set's figure."""
    params = results.get("parameters", {})
    sets = list(results.get("bits_per_byte", {}))
    header = HEADER + sets
    scores = {m: [results["bits_per_byte"][s].get("models", {}).get(m) for s in sets] for m in ("base", "adapted")}
    scores["scratch"] = [results["bits_per_byte"][s].get("models", {}).get("scratch") for s in sets]

    def figures(label: str) -> list[str]:
        return [f"{v:.4f}" if v is not None else "-" for v in scores[label]]

    rows = [["base", _count(params.get("base")), "no (pretrained elsewhere)", "-", "not counted", *figures("base")]]
    method = "; ".join(sorted({p.get("method", "") for p in train.get("phases") or [train]} - {""}))
    rows.append(
        [
            "from scratch (train.method scratch)" if from_scratch_run else "adapted",
            _count(params.get("adapted")),
            f"yes ({method}, {_count(train.get('trainable_parameters'))} trainable)",
            _count(_tokens(train)),
            _count(training_flops(train)),
            *figures("adapted"),
        ]
    )
    if reference is not None and "scratch" in params:
        about = reference.get("scratch", {})
        arch = about.get("architecture", {})
        rows.append(
            [
                "from scratch (eval.reference)",
                _count(params.get("scratch")),
                f"yes: {arch.get('layers')} x {arch.get('hidden')}, {arch.get('vocabulary')} vocabulary, "
                f"{about.get('epochs_trained')} epochs",
                _count(_tokens(reference)),
                _count(training_flops(reference)),
                *figures("scratch"),
            ]
        )
    return header, rows


def sizing_note(reference: dict[str, Any] | None) -> str:
    """How the from-scratch model was sized: bytes, byte premium and where it came from, the table's tier."""
    if not reference or "scratch" not in reference:
        return ""
    s = reference["scratch"]
    size, sched = s["size"], s["schedule"]
    capped = (
        f"; capped at {sched['steps']} steps (train.scratch.max_steps), {sched['epochs_scheduled']} epochs where "
        f"Goldfish trains 10"
        if sched.get("capped")
        else ""
    )
    return (
        f"The from-scratch model: {s['corpus_bytes']:,} bytes of cleaned target training text / byte premium "
        f"{s['byte_premium']:.3f} ({s['source']}) = {size['scaled_mb']:.2f} English-equivalent MB: Goldfish's "
        f"{size['tier']} tier{(', ' + size['note']) if size.get('note') else ''}; "
        f"{size['layers']} layers x {size['hidden']} hidden, {s['architecture']['config_class']}, batch "
        f"{size['batch_size']} x {s['seq_len']} tokens, learning rate {s['lr']:g}, {sched['steps']} steps{capped}."
    )
