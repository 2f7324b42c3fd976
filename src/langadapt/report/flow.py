"""Stage 6, report: one self-contained HTML page a person reads first.

It answers, in this order: what did adaptation buy on the target language and what did it
cost the source language (a summary in plain words, then bits per byte and every task
with its spread over seeds, the source language beside the target), what do the models
write when they continue held-out text (`samples_section.py`), how did training go,
what did the tokenizer and the corpus look like. Plots are PNGs embedded in the page, so
`report/index.html` can be mailed or archived alone. The tokenizer and corpus sections
come from their own modules (`tokenizer_section.py`, `corpus_section.py`) when present.
"""

from __future__ import annotations

import html
import importlib
import importlib.util
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from langadapt.report import distill_section
from langadapt.report.blocks import png as _png
from langadapt.report.blocks import table as _table
from langadapt.report.compare import model_rows, sizing_note
from langadapt.report.samples_section import render as samples_html
from langadapt.report.summary import metric_names, summary_sentences, task_rows
from langadapt.report.training import mix_sentence, mix_table, phase_table, throughput_sentence, training_sentence
from langadapt.rundir import RunDir, StageContext, read_json
from langadapt.stage import run_stage

if TYPE_CHECKING:
    from langadapt.recipe import Recipe

log = logging.getLogger(__name__)
NAME = "report"
STYLE = """
body { font-family: system-ui, sans-serif; max-width: 62rem; margin: 2rem auto; padding: 0 1rem; color: #222; }
table { border-collapse: collapse; margin: 0.5rem 0 1.5rem; }
th, td { border: 1px solid #ccc; padding: 0.3rem 0.6rem; text-align: left; font-variant-numeric: tabular-nums; }
th { background: #f3f3f3; } img { max-width: 100%; } .note { color: #555; font-size: 0.9rem; }
.summary { background: #f6f8fa; border-left: 4px solid #2a7ae2; padding: 0.6rem 1rem; }
.better { color: #1a7f37; } .worse { color: #b42318; } .warn { color: #b42318; }
table.samples td { white-space: pre-wrap; vertical-align: top; width: 14rem; }
"""


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _models(results: dict[str, Any]) -> list[str]:
    return list(results.get("models", {"base": "", "adapted": ""}))


def bpb_plot(results: dict[str, Any]) -> str:
    """Each set's (pseudo) bits per byte, one bar per model."""
    plt = _plt()
    names, models = list(results["bits_per_byte"]), _models(results)
    fig, ax = plt.subplots(figsize=(6.5, 3.2))
    w = 0.8 / len(models)
    for k, m in enumerate(models):
        vals = [
            results["bits_per_byte"][n].get("models", {}).get(m, results["bits_per_byte"][n].get(m, 0)) for n in names
        ]
        ax.bar([i - 0.4 + w * (k + 0.5) for i in range(len(names))], vals, w, label=m)
    ax.set_xticks(range(len(names)), names)
    ax.set_ylabel(f"{metric_names(results)} (lower is better)")
    ax.legend()
    return _png(fig)


def task_plot(task: str, rows: list[dict[str, Any]], models: list[str]) -> str:
    """Bars per (language, setting), one per model, with the spread over seeds as error bars."""
    plt = _plt()
    keys = sorted({(r["language"], r["setting"]) for r in rows}, key=lambda k: (k[1] != "in-language", k))
    fig, ax = plt.subplots(figsize=(6.5, 3.2))
    w = 0.8 / len(models)
    for k, m in enumerate(models):
        by = {(r["language"], r["setting"]): r for r in rows if r["model"] == m}
        xs = [i - 0.4 + w * (k + 0.5) for i in range(len(keys))]
        ax.bar(
            xs,
            [by[key]["mean"] if key in by else 0 for key in keys],
            w,
            label=m,
            yerr=[by[key]["std"] if key in by else 0 for key in keys],
            capsize=3,
        )
    ax.set_xticks(range(len(keys)), [f"{lang}\n{s}" for lang, s in keys], fontsize=8)
    ax.set_ylabel(f"{task}: {rows[0]['metric']} (higher is better)")
    ax.legend(fontsize=8)
    return _png(fig)


def alignment_plot(rows: list[dict[str, Any]]) -> str:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 3.0))
    for r in rows:
        layers = r["extra"]["by_layer"]
        ax.plot(range(1, len(layers) + 1), layers, marker=".", label=f"{r['model']} {r['setting']}")
    ax.set_xlabel("layer")
    ax.set_ylabel("MEXA alignment")
    ax.legend(fontsize=8)
    return _png(fig)


def loss_plot(steps: list[dict[str, Any]]) -> str:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 3.2))
    ax.plot([s["step"] for s in steps], [s["loss"] for s in steps], label="all", color="0.3")
    langs = sorted({k[5:] for s in steps for k in s if k.startswith("loss_")})
    for lang in langs:
        pts = [(s["step"], s[f"loss_{lang}"]) for s in steps if f"loss_{lang}" in s]
        ax.plot(*zip(*pts), ".", ms=3, alpha=0.7, label=lang)
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats/token)")
    ax.legend()
    return _png(fig)


def eval_curve_plot(steps: list[dict[str, Any]]) -> str:
    """Held-out (pseudo) bits per byte measured during training (train.eval_every), per language."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 3.0))
    prefix = "pseudo_bpb_" if any(k.startswith("pseudo_bpb_") for s in steps for k in s) else "bpb_"
    for key in sorted({k for s in steps for k in s if k.startswith(prefix)}):
        pts = [(s["step"], s[key]) for s in steps if key in s]
        ax.plot(*zip(*pts), "o-", ms=3, label=key[len(prefix) :])
    ax.set_xlabel("step")
    ax.set_ylabel(f"held-out {'pseudo ' if prefix.startswith('pseudo') else ''}bits per byte")
    ax.legend()
    return _png(fig)


def factorised_phrase(summary: dict[str, Any]) -> str:
    """OFA's factorised embeddings: the parameters they held in training against the full-size matrices."""
    record = summary.get("factorised_embeddings")
    if not record:
        return ""
    emb = record["embedding_parameters"]
    return (
        f"; embeddings trained in factorised form (OFA, rank {record['rank']}): "
        f"{emb['factorised'] / 1e6:.2f}M parameters instead of {emb['full_size'] / 1e6:.2f}M "
        f"({100 * emb['saving']:.0f}% fewer), folded back to full size"
    )


def _img(src: str, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="{src}">'


def bpb_section(results: dict[str, Any]) -> str:
    models, metric = _models(results), metric_names(results)
    pseudo = (
        "; an encoder's figure is its pseudo-log-likelihood per byte (every token scored with itself masked), "
        "not comparable with a decoder's bits per byte"
        if "pseudo" in metric
        else ""
    )
    rows = []
    for name, r in results["bits_per_byte"].items():
        s = results["sets"][name]
        cls = "better" if r["relative_change"] < 0 else "worse"
        others = [f"{r['models'][m]:.4f}" for m in models[2:] if m in r.get("models", {})]
        rows.append(
            [
                name,
                s["language"],
                s["kind"],
                f"{r['base']:.4f}",
                f"{r['adapted']:.4f}",
                *others,
                (cls, f"{100 * r['relative_change']:+.1f}%"),
                s["documents"],
                s["characters"],
                s["skipped_documents"],
            ]
        )
    header = [
        "set",
        "language",
        "kind",
        "base",
        "adapted",
        *models[2:],
        "change",
        "documents",
        "characters",
        "documents not evaluated",
    ]
    return (
        f"<h2>{metric[0].upper()}{metric[1:]}</h2>\n<p class='note'>Held-out text: lower is better, and comparable "
        f"across tokenizers{pseudo}.</p>\n"
        + _rich_table(header, rows)
        + _img(bpb_plot(results), f"{metric} per set and model")
    )


def _rich_table(header: list[str], rows: list[list[Any]]) -> str:
    """Like blocks.table, but a cell may be (css class, text) to colour a change."""
    th = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = []
    for r in rows:
        cells = []
        for c in r:
            if isinstance(c, tuple):
                cells.append(f"<td class='{c[0]}'>{html.escape(str(c[1]))}</td>")
            else:
                cells.append(f"<td>{html.escape(str(c))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{th}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def tasks_section(results: dict[str, Any]) -> str:
    rows, about = results.get("tasks", []), results.get("task_data", {})
    if not rows:
        return ""
    models = _models(results)
    parts = [
        "<h2>Tasks</h2>",
        "<p class='note'>Every task runs on the source language too, so a loss there (forgetting) shows "
        "beside the target's gain. Values are mean ± standard deviation over seeds; a difference no larger than "
        "the two standard deviations together is marked 'within spread' and not counted as a change.</p>",
    ]
    for task in dict.fromkeys(r["task"] for r in rows):
        mine = [r for r in rows if r["task"] == task]
        info = about.get(task, {})
        header, body = task_rows(mine, models)
        parts.append(f"<h3>{html.escape(task)} ({html.escape(mine[0]['kind'])})</h3>")
        desc = [f"data: {info.get('data', '')}"]
        if info.get("protocol"):
            desc.append(
                f"protocol: {info['protocol']} over {info['seeds']} seeds, layer {info['layer']}, "
                f"{info['pooling']} pooling"
            )
        if info.get("test_examples"):
            desc.append(
                f"of the data set's {info['test_examples']} test examples, {info['test_examples_from_heldout_groups']} "
                "come from groups held out of adaptation"
            )
        if info.get("skipped"):
            desc.append("left out: " + ", ".join(f"{k}: {v}" for k, v in info["skipped"].items()))
        parts.append(
            f"<p class='note'>{html.escape('; '.join(desc))}.<br>{html.escape(info.get('provenance', ''))}</p>"
        )
        parts.append(_rich_table(header, body))
        if mine[0]["kind"] == "alignment":
            parts.append(_img(alignment_plot(mine), f"{task}: alignment per layer"))
        elif mine[0]["kind"] != "lm-eval":
            parts.append(_img(task_plot(task, mine, models), f"{task} per language and model"))
    return "\n".join(parts)


def models_section(recipe: "Recipe", rd: RunDir, results: dict[str, Any], summary: dict[str, Any]) -> str:
    """Base, adapted and from scratch side by side: parameters, training compute, held-out figures."""
    if "parameters" not in results:  # evaluated before models' sizes were recorded
        return ""
    ref_file = rd.path("reference") / "summary.json"
    reference = read_json(ref_file) if "scratch" in results["parameters"] and ref_file.is_file() else None
    header, rows = model_rows(results, summary, reference, recipe.train.method == "scratch")
    note = sizing_note(reference if reference is not None else summary)
    return (
        "<h2>Models side by side</h2>\n<p class='note'>Parameters, the training this run did (model FLOPs per "
        "trained token times tokens trained; the base's pretraining is not counted) and each held-out set's "
        f"{html.escape(metric_names(results))}.</p>\n"
        + _table(header, rows)
        + (f"<p class='note'>{html.escape(note)}</p>" if note else "")
    )


def _section_module(name: str) -> Any:
    """A report section written as its own module, when this installation has it."""
    full = f"langadapt.report.{name}"
    return importlib.import_module(full) if importlib.util.find_spec(full) else None


def tokenizer_html(rd: RunDir, tok: dict[str, Any]) -> str:
    mod = _section_module("tokenizer_section")
    if mod is not None:
        return mod.render(rd)
    rows = [
        [lang, f"{m['base']['fertility']:.2f} → {m['adapted']['fertility']:.2f}"]
        for lang, m in tok.get("heldout", {}).items()
        if m.get("base")
    ]
    return "<h2>Tokenizer</h2>" + _table(["language", "fertility (tokens/word)"], rows)


def corpus_html(rd: RunDir, corpus: dict[str, Any]) -> str:
    mod = _section_module("corpus_section")
    if mod is not None:
        return mod.render(rd)
    rows = []
    for lang, s in corpus["languages"].items():
        dropped = ", ".join(
            f"{k}: {v}" for k, v in {**s.get("dropped", {}), **s.get("skipped_while_reading", {})}.items()
        )
        groups = s["heldout"]["groups"]
        rows.append(
            [
                lang,
                s["records_read"],
                s["train"]["documents"],
                s["heldout"]["documents"],
                dropped or "none",
                " ".join(groups[:12]) + (" …" if len(groups) > 12 else ""),
            ]
        )
    header = [
        "language",
        "records read",
        "train documents",
        "held-out documents",
        "dropped (reason: count)",
        "held-out groups",
    ]
    return "<h2>Corpus</h2>" + _table(header, rows)


def _languages(primary: str, summary: dict[str, Any], role: str) -> str:
    """The primary language of a side, and the other languages its sources trained (a corpus list)."""
    others = [s["language"] for s in summary.get("mix", {}).get("sources", []) if s["role"] == role]
    others = [lang for lang in dict.fromkeys(others) if lang != primary]
    return primary + (f" (training also on {', '.join(others)})" if others else "")


def pilots_plot(choice: dict[str, Any]) -> str:
    """replay_ratio auto: each pilot's measured replay-language drift with the fit, and the fit's predictions
    at the full schedule against the replay ratio, with the tolerance and the choice."""
    import numpy as np

    plt = _plt()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.4))
    drift = choice["fit"]["replay_drift"]

    def law(f: dict[str, Any], tokens: Any, rho: float) -> Any:
        return (f["base"] + f["per_share"] * rho) * (tokens / f["tokens_scale"]) ** f["exponent"]

    points = choice["points"]["replay"]
    for p in choice["pilots"]:
        rho = 1.0 - p["replay_ratio"]
        pts = [(t, v) for t, r, v in points if abs(r - rho) < 1e-9]
        if not pts:
            continue
        (line,) = left.plot(*zip(*pts), "o", ms=4, label=f"replay {p['replay_ratio']:g}")
        ts = np.linspace(0, max(t for t, _ in pts), 50)
        left.plot(ts, law(drift, ts, rho), "-", color=line.get_color(), lw=1)
    left.axhline(0, color="0.7", lw=0.8)
    left.set_xlabel("tokens trained (pilot)")
    left.set_ylabel(f"{choice['replay']} held-out {choice['metric'].replace('_', ' ')} change")
    left.legend(fontsize=8)
    rows = choice["predictions"]
    ratios = [r["replay_ratio"] for r in rows]
    right.plot(ratios, [r["predicted_drift"] for r in rows], "-", label=f"{choice['replay']} drift (predicted)")
    right.plot(ratios, [r["predicted_target_gain"] for r in rows], "--", label=f"{choice['target']} gain (predicted)")
    right.axhline(choice["forgetting_tolerance"], color="0.5", lw=1, ls=":", label="forgetting tolerance")
    if choice.get("chosen_replay_ratio") is not None:
        right.axvline(
            choice["chosen_replay_ratio"], color="#b42318", lw=1, label=f"chosen {choice['chosen_replay_ratio']:g}"
        )
    right.set_xlabel("replay ratio")
    right.set_ylabel(f"bits per byte after {choice['schedule_tokens']:,.0f} tokens")
    right.legend(fontsize=8)
    return _png(fig)


def pilots_html(summary: dict[str, Any]) -> str:
    """The compute the run took (pilots included) and, for replay_ratio auto, the pilots, the fit and the choice."""
    parts = []
    if "training_flops" in summary:
        text = f"Model FLOPs: {summary['training_flops']:.3g} in the training steps"
        if "pilot_flops" in summary:
            text += f", {summary['pilot_flops']:.3g} in the replay-ratio pilots, {summary['total_flops']:.3g} in all"
        parts.append(f"<p class='note'>{html.escape(text)} (held-out evaluations not counted).</p>")
    choice = summary.get("pilots")
    if choice:
        drift = choice["fit"]["replay_drift"]
        chosen = next(r for r in choice["predictions"] if r["replay_ratio"] == choice["chosen_replay_ratio"])
        ratios = ", ".join(f"{p['replay_ratio']:g}" for p in choice["pilots"])
        parts.append(
            "<h3>Replay ratio chosen from pilots</h3><p class='note'>"
            + html.escape(
                f"{len(choice['pilots'])} pilot runs of {choice['pilot_steps']} steps from the same initialised model "
                f"at replay ratios {ratios}; their held-out "
                f"curves fitted as change = (u + v x target share) x (tokens / schedule's tokens)^c "
                f"({choice['replay']} drift: u = {drift['base']:.4f}, v = {drift['per_share']:.4f}, "
                f"c = {drift['exponent']:.2f}, rmse {drift['rmse']:.4f}). Chosen: replay ratio "
                f"{choice['chosen_replay_ratio']:g}, the smallest "
                f"whose predicted {choice['replay']} drift over the whole schedule ({chosen['predicted_drift']:.4f}) "
                f"is within the tolerance ({choice['forgetting_tolerance']:g}); predicted {choice['target']} gain "
                f"{chosen['predicted_target_gain']:.4f}. Details: train/pilots/choice.json."
            )
            + "</p>"
            + _img(pilots_plot(choice), "replay-ratio pilots, fit and choice")
        )
    return "\n".join(parts)


def mix_html(summary: dict[str, Any]) -> str:
    """The training mix: each source's share and epochs, and a warning for each source repeated too often."""
    table = mix_table(summary)
    if table is None:
        return ""
    warnings = summary["mix"].get("warnings", [])
    warned = "".join(f"<p class='warn'><b>Warning:</b> {html.escape(w)}</p>" for w in warnings)
    return f"<h3>Data mix</h3><p class='note'>{html.escape(mix_sentence(summary))}</p>{_table(*table)}{warned}"


def init_html(init: dict[str, Any]) -> str:
    parts = [
        f"<h2>Initialisation</h2><p class='note'>{init.get('copied_rows', '?')} rows copied from the base model, "
        f"{init.get('initialised_rows', '?')} new rows by <code>{html.escape(str(init.get('method', '')))}</code>; "
        f"tied output head: {init.get('tied_embeddings', '?')}.</p>"
    ]
    comparison = init.get("comparison")  # several init methods scored side by side, when the init stage made one
    if isinstance(comparison, list) and comparison and isinstance(comparison[0], dict):
        header = list(comparison[0])
        parts.append(_table(header, [[c.get(h, "") for h in header] for c in comparison]))
    return "\n".join(parts)


def render(recipe: "Recipe", rd: RunDir) -> str:
    results = read_json(rd.require("eval", "results.json") / "results.json")
    tok = read_json(rd.path("tokenizer") / "metrics.json")
    corpus = read_json(rd.path("corpus") / "stats.json")
    init_file = rd.path("init") / "init_report.json"
    init = read_json(init_file) if init_file.is_file() else {}
    train_dir = rd.path("train")
    steps = [json.loads(line) for line in (train_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    summary = read_json(train_dir / "summary.json")
    title = recipe.report.title or recipe.name
    sentences = summary_sentences(results, corpus.get("target"), corpus.get("replay"))
    last = steps[-1] if steps else {}
    seconds = results.get("seconds", {})
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)} - langadapt report</title>
<style>{STYLE}</style></head><body>
<h1>{html.escape(title)}</h1>
{_opening(recipe, corpus, tok, summary)}
<div class="summary"><b>In short.</b><ul>{"".join(f"<li>{html.escape(s)}</li>" for s in sentences)}</ul></div>
{bpb_section(results)}
{models_section(recipe, rd, results, summary)}
{tasks_section(results)}
{samples_html(results, _models(results))}
{distill_section.render(rd)}
<h2>Training</h2>
<p>{len(steps)} logged steps; final loss {last.get("loss", "n/a")}{factorised_phrase(summary)}.</p>
{_table(*phase_table(recipe.train, summary))}
<p class="note">{html.escape(throughput_sentence(recipe.train, summary))}</p>
{mix_html(summary)}
{pilots_html(summary)}
{_img(loss_plot(steps), "training loss") if steps else ""}
{_img(eval_curve_plot(steps), "held-out bits per byte during training") if any(k.startswith(("bpb_", "pseudo_bpb_")) for s in steps for k in s) else ""}
{tokenizer_html(rd, tok)}
{init_html(init)}
{corpus_html(rd, corpus)}
<p class="note">Evaluation took {sum(seconds.values()):.0f} s, {sum(results.get("cpu_seconds", {}).values()):.0f} CPU s ({html.escape(", ".join(f"{k} {v:.0f} s" for k, v in seconds.items()))}).
Generated by langadapt from <code>recipe.yaml</code> in this run directory; numbers are in
<code>eval/results.json</code>, <code>tokenizer/metrics.json</code>, <code>train/metrics.jsonl</code>.</p>
</body></html>
"""


def _opening(recipe: "Recipe", corpus: dict[str, Any], tok: dict[str, Any], summary: dict[str, Any]) -> str:
    """What the run did, in one paragraph: an adaptation, or (train.method scratch) a model trained from scratch."""
    target = html.escape(_languages(corpus["target"], summary, "target"))
    if recipe.train.method == "scratch":
        size = summary.get("scratch", {}).get("architecture", {})
        return (
            f"<p>A model trained from scratch on <b>{target}</b> (<code>train.method: scratch</code>): the family of "
            f"<code>{html.escape(recipe.model.base)}</code>, {size.get('layers')} layers x {size.get('hidden')} hidden, "
            f"a {html.escape(str(size.get('vocabulary')))} vocabulary of {size.get('vocab_size')} tokens; no "
            "adaptation. The base model is evaluated beside it.</p>"
        )
    replay = (
        f"with replay of <b>{html.escape(_languages(corpus['replay'], summary, 'replay'))}</b>"
        if corpus.get("replay")
        else ""
    )
    return (
        f"<p>Base model <code>{html.escape(recipe.model.base)}</code> adapted to <b>{target}</b>\n{replay}:\n"
        f"tokenizer <code>{html.escape(recipe.tokenizer.method)}</code> (+{tok.get('added_tokens', 0)} tokens),\n"
        f"init <code>{html.escape(recipe.init.method)}</code>, training "
        f"{html.escape(training_sentence(recipe.train, summary))}.</p>"
    )


def _build(recipe: "Recipe", rd: RunDir, ctx: StageContext) -> None:
    page = render(recipe, rd)
    (ctx.out / "index.html").write_text(page, encoding="utf-8")


def inputs(recipe: "Recipe", rd: RunDir) -> dict[str, Any]:
    out = {
        "eval": rd.fingerprint_of("eval"),
        "train": rd.fingerprint_of("train"),
        "config": recipe.to_dict()["report"],
        **({"distill": rd.fingerprint_of("distill")} if rd.is_complete("distill") else {}),
    }
    if recipe.eval.reference:
        out["reference"] = rd.fingerprint_of("reference")
    return out


def run(recipe: "Recipe", rd: RunDir, force: bool = False) -> Path:
    return run_stage(NAME, recipe, rd, inputs(recipe, rd), _build, force)
