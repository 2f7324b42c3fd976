"""Stage 6, report: one self-contained HTML page a person reads first.

It answers: did adaptation help the target language, what did it cost the source language
(in-domain and out-of-domain), what did the tokenizer change, and how did training go.
Plots are PNGs embedded in the page, so `report/index.html` can be mailed or archived alone.
"""

from __future__ import annotations

import html
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from langadapt.report.blocks import png as _png
from langadapt.report.blocks import table as _table
from langadapt.rundir import RunDir, StageContext, read_json
from langadapt.stage import run_stage

if TYPE_CHECKING:
    from langadapt.recipe import Recipe

log = logging.getLogger(__name__)
NAME = "report"


def _plots(results: dict[str, Any], steps: list[dict[str, Any]], tok: dict[str, Any]) -> dict[str, str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = {}
    names = list(results["bits_per_byte"])
    fig, ax = plt.subplots(figsize=(6.5, 3.2))
    x = range(len(names))
    ax.bar([i - 0.2 for i in x], [results["bits_per_byte"][n]["base"] for n in names], 0.4, label="base")
    ax.bar([i + 0.2 for i in x], [results["bits_per_byte"][n]["adapted"] for n in names], 0.4, label="adapted")
    ax.set_xticks(list(x), names)
    ax.set_ylabel("bits per byte (lower is better)")
    ax.legend()
    out["bpb"] = _png(fig)

    if steps:
        fig, ax = plt.subplots(figsize=(6.5, 3.2))
        ax.plot([s["step"] for s in steps], [s["loss"] for s in steps], label="all", color="0.3")
        langs = sorted({k[5:] for s in steps for k in s if k.startswith("loss_")})
        for lang in langs:
            pts = [(s["step"], s[f"loss_{lang}"]) for s in steps if f"loss_{lang}" in s]
            ax.plot(*zip(*pts), ".", ms=3, alpha=0.7, label=lang)
        ax.set_xlabel("step")
        ax.set_ylabel("training loss (nats/token)")
        ax.legend()
        out["loss"] = _png(fig)

    held = tok.get("heldout", {})
    if held:
        langs = list(held)
        fig, ax = plt.subplots(figsize=(6.5, 3.0))
        x = range(len(langs))
        ax.bar([i - 0.2 for i in x], [held[l]["base"].get("fertility", 0) for l in langs], 0.4, label="base tokenizer")
        ax.bar(
            [i + 0.2 for i in x],
            [held[l]["adapted"].get("fertility", 0) for l in langs],
            0.4,
            label="adapted tokenizer",
        )
        ax.set_xticks(list(x), langs)
        ax.set_ylabel("tokens per word (lower is better)")
        ax.legend()
        out["fertility"] = _png(fig)
    return out


def render(recipe: "Recipe", rd: RunDir) -> str:
    results = read_json(rd.require("eval", "results.json") / "results.json")
    tok = read_json(rd.path("tokenizer") / "metrics.json")
    corpus = read_json(rd.path("corpus") / "stats.json")
    init = read_json(rd.path("init") / "init_report.json")
    train_dir = rd.path("train")
    steps = [json.loads(l) for l in (train_dir / "metrics.jsonl").read_text().splitlines() if l.strip()]
    summary = read_json(train_dir / "summary.json")
    plots = _plots(results, steps, tok)
    title = recipe.report.title or recipe.name

    bpb_rows = []
    for name, r in results["bits_per_byte"].items():
        s = results["sets"][name]
        verdict = "better" if r["relative_change"] < 0 else "worse"
        bpb_rows.append(
            [
                name,
                s["kind"],
                f"{r['base']:.4f}",
                f"{r['adapted']:.4f}",
                f"{100 * r['relative_change']:+.1f}% ({verdict})",
                s["documents"],
                s["characters"],
                s["skipped_documents"],
            ]
        )
    tok_rows = []
    for lang, m in tok.get("heldout", {}).items():
        b, a = m["base"], m["adapted"]
        if b:
            tok_rows.append(
                [
                    lang,
                    f"{b['fertility']:.2f} → {a['fertility']:.2f}",
                    f"{b['bytes_per_token']:.2f} → {a['bytes_per_token']:.2f}",
                    f"{b['continued_word_ratio']:.2f} → {a['continued_word_ratio']:.2f}",
                    f"{b['unk_rate']:.4f} → {a['unk_rate']:.4f}",
                ]
            )
    corpus_rows = []
    for lang, s in corpus["languages"].items():
        dropped = ", ".join(f"{k}: {v}" for k, v in {**s["dropped"], **s["skipped_while_reading"]}.items()) or "none"
        corpus_rows.append(
            [
                lang,
                s["records_read"],
                s["train"]["documents"],
                s["heldout"]["documents"],
                dropped,
                " ".join(s["heldout"]["groups"][:12]) + (" …" if len(s["heldout"]["groups"]) > 12 else ""),
            ]
        )
    img = lambda key, alt: f'<img alt="{alt}" src="{plots[key]}">' if key in plots else ""  # noqa: E731
    last = steps[-1] if steps else {}
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)} - langadapt report</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 60rem; margin: 2rem auto; padding: 0 1rem; color: #222; }}
table {{ border-collapse: collapse; margin: 0.5rem 0 1.5rem; }}
th, td {{ border: 1px solid #ccc; padding: 0.3rem 0.6rem; text-align: left; font-variant-numeric: tabular-nums; }}
th {{ background: #f3f3f3; }} img {{ max-width: 100%; }} .note {{ color: #555; font-size: 0.9rem; }}
</style></head><body>
<h1>{html.escape(title)}</h1>
<p>Base model <code>{html.escape(recipe.model.base)}</code> adapted to <b>{html.escape(corpus["target"])}</b>
{("with replay of <b>" + html.escape(corpus["replay"]) + "</b>") if corpus.get("replay") else ""}:
tokenizer <code>{html.escape(recipe.tokenizer.method)}</code> (+{tok.get("added_tokens", 0)} tokens),
init <code>{html.escape(recipe.init.method)}</code>, training <code>{html.escape(recipe.train.method)}</code>
for {summary["steps"]} steps.</p>
<h2>Before and after</h2>
<p class="note">Bits per byte on held-out text: lower is better, and comparable across tokenizers.</p>
{_table(["set", "kind", "base", "adapted", "change", "documents", "characters", "documents not evaluated"], bpb_rows)}
{img("bpb", "bits per byte before and after")}
<h2>Training</h2>
<p>{len(steps)} logged steps; final loss {last.get("loss", "n/a")}; {summary["trainable_parameters"] / 1e6:.2f}M of
{summary["total_parameters"] / 1e6:.1f}M parameters trained.</p>
{img("loss", "training loss")}
<h2>Tokenizer</h2>
{_table(["language", "fertility (tokens/word)", "bytes/token", "continued-word ratio", "UNK rate"], tok_rows)}
{img("fertility", "fertility before and after")}
<p class="note">Init: {init["copied_rows"]} rows copied from the base model, {init["initialised_rows"]} new rows
by <code>{html.escape(init["method"])}</code>; tied output head: {init["tied_embeddings"]}.</p>
<h2>Corpus</h2>
{_table(["language", "records read", "train documents", "held-out documents", "dropped (reason: count)", "held-out groups"], corpus_rows)}
<p class="note">Generated by langadapt from <code>recipe.yaml</code> in this run directory; numbers are in
<code>eval/results.json</code>, <code>tokenizer/metrics.json</code>, <code>train/metrics.jsonl</code>.</p>
</body></html>
"""


def _build(recipe: "Recipe", rd: RunDir, ctx: StageContext) -> None:
    page = render(recipe, rd)
    (ctx.out / "index.html").write_text(page, encoding="utf-8")


def inputs(recipe: "Recipe", rd: RunDir) -> dict[str, Any]:
    return {
        "eval": rd.fingerprint_of("eval"),
        "train": rd.fingerprint_of("train"),
        "config": recipe.to_dict()["report"],
    }


def run(recipe: "Recipe", rd: RunDir, force: bool = False) -> Path:
    return run_stage(NAME, recipe, rd, inputs(recipe, rd), _build, force)
