"""Downstream tasks, retrieval and alignment: what a model is worth beyond bits per byte.

A task kind is registered by name in `TASKS` and scores one model on one task's data,
returning rows of `Score`; the eval stage runs every task on every model (base, adapted,
and any others compared) and on every language, the source language included, so that
forgetting shows next to the target's gain.

Fixed protocols, so numbers are comparable across runs:

- probe (default, cheap): the model is frozen; sentence vectors are the mean (or last
  token) of one hidden layer (`layer`, default the middle one); a standardised logistic
  regression (scikit-learn, C=1, L2) is trained per seed on a stratified 80% sample of
  the training set (the seed picks the sample), and scored on the whole test set.
- finetune: the whole model plus a linear head on the pooled states of `layer` trains
  with AdamW (`lr`, the head 10x), `epochs` passes of batch `batch_size`; the seed sets
  the head's init and the data order. Costly: meant for real runs, not the demo. A model
  above `full_finetune_max_parameters` (default 1B) trains LoRA (rank 16, every linear
  layer, at 10x `lr`) and the head instead of a full copy; `extra.finetune` records which.

Scores are mean and standard deviation over `seeds` runs (population std, ddof=0).
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass, field
from importlib import resources
from typing import TYPE_CHECKING, Any, Callable

from langadapt.evaluate.tasks import bible
from langadapt.evaluate.tasks.data import TaskData, read_hub, read_local, task_files
from langadapt.registry import Registry

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from langadapt.evaluate.config import TaskConfig
    from langadapt.evaluate.embed import Encoder


@dataclass
class TaskContext:
    """One model, and the languages to score it on."""

    label: str  # base, adapted, or a compared model
    model: "PreTrainedModel"
    tok: "PreTrainedTokenizerBase"
    encoder: "Encoder"
    languages: list[str]
    source: str | None  # source language: cross-lingual training language, retrieval pivot
    path: str = ""  # where the model was loaded from (lm-eval loads it itself)


@dataclass
class Score:
    task: str
    kind: str
    model: str
    language: str
    setting: str  # in-language | from <lang> | <lang>→<lang> | <lang>↔<lang>
    metric: str
    mean: float
    std: float = 0.0
    seeds: list[float] = field(default_factory=list)
    n_train: int = 0
    n_test: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def summarise(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.pstdev(values) if len(values) > 1 else 0.0)


TaskKind = Callable[[TaskContext, "TaskConfig", TaskData], list[Score]]


@dataclass(frozen=True)
class Kind:
    run: TaskKind
    token_level: bool  # reads CoNLL (words and tags) instead of texts and labels
    builtin_data: tuple[str, ...]  # builtin:NAME data sets that fit this kind


TASKS: Registry[Kind] = Registry("tasks")

BUILTIN_DATA = {
    "bible-topic": "8-way topic classification by Bible book genre, Chichewa and English (built from the offline Bibles)",
    "bible-bitext": "aligned Chichewa-English verses from books the demo holds out (retrieval, alignment)",
    "ner-fixture": "a small hand-written IOB NER set in English and Chichewa, for tests and examples",
}


def load_data(cfg: "TaskConfig", languages: list[str]) -> TaskData:
    kind = TASKS.get(cfg.kind)
    if cfg.data.startswith("builtin:"):
        return builtin_data(cfg.data[len("builtin:") :])
    if cfg.data.startswith("hf:"):
        return read_hub(cfg.data[3:], cfg, languages, kind.token_level)
    return read_local(cfg.data, cfg, kind.token_level)


def builtin_data(name: str) -> TaskData:
    if name == "bible-topic":
        return bible.topic_set()
    if name == "bible-bitext":
        return bible.bitext_set()
    folder = resources.files("langadapt").joinpath("data/eval/ner-fixture")
    data = read_local(str(folder), None, token_level=True)  # type: ignore[arg-type]
    data.provenance = "hand-written IOB NER fixture shipped with langadapt (data/eval/ner-fixture), CC0"
    return data


def data_problems(cfg: "TaskConfig", key: str) -> list[str]:
    """Data problems visible without reading it: unknown builtin name, no matching file, wrong kind."""
    if cfg.kind not in TASKS:
        return []
    kind = TASKS.get(cfg.kind)
    if cfg.kind == "lm-eval":
        return [] if cfg.harness_tasks else [f"{key}.harness_tasks: name at least one lm-evaluation-harness task"]
    if not cfg.data:
        return [
            f"{key}.data: required; e.g. builtin:{kind.builtin_data[0]}"
            if kind.builtin_data
            else f"{key}.data: required"
        ]
    if cfg.data.startswith("builtin:"):
        name = cfg.data[len("builtin:") :]
        if name not in kind.builtin_data:
            return [
                f"{key}.data: builtin:{name} does not fit kind {cfg.kind}; valid: "
                + ", ".join(f"builtin:{n}" for n in kind.builtin_data)
            ]
        return []
    if cfg.data.startswith("hf:"):
        return []
    if not task_files(cfg.data):
        return [f"{key}.data: no file matches '{cfg.data}'"]
    return []
