"""Checks of the evaluate section of a recipe that need the stage's parts (registries, files, the model).

`validation.py` runs them with every other section's; `config.py` holds the section itself and imports
only mechanics.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from langadapt.config import ModelConfig
from langadapt.devices import device_problems, eval_precision_problems
from langadapt.evaluate.config import PROTOCOLS, REFERENCES, TRANSFERS, SamplesConfig
from langadapt.evaluate.embed import POOLINGS
from langadapt.evaluate.tasks.base import TASKS, data_problems
from langadapt.models.loading import base_problems
from langadapt.sources.reading import source_problems

if TYPE_CHECKING:
    from langadapt.recipe import Recipe


def check(recipe: "Recipe") -> list[str]:
    """Problems with the eval section."""
    e, p = recipe.eval, []
    if e.reference not in REFERENCES:
        p.append(f"eval.reference: '{e.reference}' is not one of: scratch, or '' (none)")
    if e.max_chars < 100:
        p.append("eval.max_chars: must be >= 100")
    if e.context_length < 16:
        p.append("eval.context_length: must be >= 16")
    if not 0 < e.stride <= e.context_length:
        p.append("eval.stride: must be in (0, eval.context_length]")
    names = [s.name or s.language for s in e.extra_sets]
    for i, src in enumerate(e.extra_sets):
        p.extend(source_problems(src, f"eval.extra_sets[{i}]"))
        if not src.name:
            p.append(f"eval.extra_sets[{i}].name: give each extra set a name, e.g. {src.language}-ood")
    if len(set(names)) != len(names):
        p.append("eval.extra_sets: names must be unique")
    p.extend(task_problems(recipe))
    p.extend(samples_problems(e.samples))
    p.extend(device_problems(e.device, "eval.device"))
    p.extend(eval_precision_problems(e.precision, e.device, "eval.precision"))

    for i, m in enumerate(e.compare):
        p.extend(f"eval.compare[{i}]: {msg.split(': ', 1)[1]}" for msg in base_problems(ModelConfig(base=m)))
    return p


def samples_problems(s: SamplesConfig) -> list[str]:
    """Problems with eval.samples: counts and lengths out of range."""
    p = []
    if s.count < 0:
        p.append("eval.samples.count: must be >= 0 (0: no generation samples)")
    if s.count > 0 and s.max_new_tokens < 1:
        p.append("eval.samples.max_new_tokens: must be >= 1 (or turn samples off with eval.samples.count: 0)")
    if s.count > 0 and s.prompt_chars < 10:
        p.append("eval.samples.prompt_chars: must be >= 10, enough text for a model to continue")
    return p


def task_problems(recipe: "Recipe") -> list[str]:
    """Problems with eval.tasks that are visible before any work (names, ranges, files)."""

    p: list[str] = []
    names = [t.name or t.kind for t in recipe.eval.tasks]
    for i, t in enumerate(recipe.eval.tasks):
        key = f"eval.tasks[{i}]"
        if t.kind not in TASKS:
            p.append(f"{key}.kind: {TASKS.unknown_message(t.kind)}")
            continue
        if t.transfer not in TRANSFERS:
            p.append(f"{key}.transfer: '{t.transfer}' is not one of {', '.join(TRANSFERS)}")
        if t.protocol not in PROTOCOLS:
            p.append(f"{key}.protocol: '{t.protocol}' is not one of {', '.join(PROTOCOLS)}")
        if t.pooling not in POOLINGS:
            p.append(f"{key}.pooling: '{t.pooling}' is not one of {', '.join(POOLINGS)}")
        if t.layer not in ("middle", "last") and not t.layer.lstrip("-").isdigit():
            p.append(f"{key}.layer: '{t.layer}' is not middle, last or an integer")
        if t.seeds < 1:
            p.append(f"{key}.seeds: must be >= 1")
        if t.protocol == "finetune" and (t.epochs < 1 or t.lr <= 0):
            p.append(f"{key}: finetune needs epochs >= 1 and lr > 0")
        if t.full_finetune_max_parameters < 0:
            p.append(f"{key}.full_finetune_max_parameters: must be >= 0 (0: always LoRA)")
        if min(t.max_train_per_label, t.max_test_per_label, t.max_pairs) < 0 or t.batch_size < 1:
            p.append(f"{key}: caps must be >= 0 and batch_size >= 1")
        for s in t.subsets:
            if "=" not in s:
                p.append(f"{key}.subsets: '{s}' is not language=configuration")
        p.extend(data_problems(t, key))
    if len(set(names)) != len(names):
        p.append("eval.tasks: task names must be unique (set name: on tasks of the same kind)")
    return p
