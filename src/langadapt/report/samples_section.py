"""The report's generation samples: each held-out prompt, the text that follows it, and every
model's greedy continuation side by side (from the `samples` entry of `eval/results.json`)."""

from __future__ import annotations

import html
from typing import Any


def _continuation(c: dict[str, Any] | None) -> str:
    if c is None:
        return "<td></td>"
    end = f"ended by {c['stopped_by']}" if c["stopped_by"] else "stopped at the token limit"
    note = f"{c['new_tokens']} new tokens, {end}"
    return f"<td>{html.escape(c['text'])}<br><span class='note'>[{html.escape(note)}]</span></td>"


def _device(results: dict[str, Any]) -> str:
    """Where evaluation ran, in words: `cpu`, or `cuda:0 (NVIDIA H100 ...)`."""
    d = results.get("device") or {}
    if not isinstance(d, dict):
        return str(d)
    return f"{d.get('device', '?')}" + (f" ({d['name']})" if d.get("name") else "")


def _settings(samples: dict[str, Any], device: str) -> str:
    stops = "; ".join(f"{m}: {', '.join(t)}" for m, t in samples.get("stop_tokens", {}).items())
    return (
        f"The opening of up to {samples['count']} held-out documents per language (spread evenly over the set "
        f"evaluated above, the same in every run), continued by each model. Decoding: greedy (the most likely "
        f"token at every step, no sampling, no repetition penalty), at most {samples['max_new_tokens']} new tokens, "
        f"ending early at an end-of-text token ({stops}); {samples['precision']} on {device}. A prompt is the "
        f"document's first {samples['prompt_chars']} characters or fewer, cut at a word boundary, read after the "
        f"document separator as in scoring; 'held-out text' is how the document really goes on (its next "
        f"{samples['reference_chars']} characters or fewer, cut the same way). Lengths are in "
        "each model's own tokens, so a tokenizer with longer tokens in a language covers more of it."
    )


def render(results: dict[str, Any], models: list[str]) -> str:
    """The section's HTML, every text escaped; empty when the run made no samples (`eval.samples.count: 0`)."""
    samples = results.get("samples")
    if not samples:
        return ""
    if samples.get("none"):
        return f"<h2>Generation samples</h2>\n<p class='note'>None: {html.escape(samples['none'])}.</p>"
    parts = [
        "<h2>Generation samples</h2>",
        f"<p class='note'>{html.escape(_settings(samples, _device(results)))}</p>",
    ]
    header = "".join(f"<th>{html.escape(h)}</th>" for h in ["prompt", "held-out text", *models])
    for name, entry in samples["sets"].items():
        rows = []
        for p in entry["prompts"]:
            cells = [f"<td>{html.escape(p['prompt'])}</td>", f"<td>{html.escape(p['reference'])}</td>"]
            cells += [_continuation(p["continuations"].get(m)) for m in models]
            rows.append("<tr>" + "".join(cells) + "</tr>")
        parts.append(f"<h3>{html.escape(name)} ({html.escape(entry['language'])})</h3>")
        parts.append(f"<table class='samples'><thead><tr>{header}</tr></thead><tbody>{''.join(rows)}</tbody></table>")
    return "\n".join(parts)
