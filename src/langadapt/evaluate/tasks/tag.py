"""Token classification (NER, POS): a per-word linear probe or full fine-tuning.

A word's vector is the mean of its sub-tokens' hidden states at `layer`. Tags in IOB
form (B-/I- prefixes) are scored as entities with seqeval's F1 (CoNLL convention);
other tag sets (POS) by word accuracy from scikit-learn.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from langadapt.evaluate.embed import layer_index
from langadapt.evaluate.tasks.base import TASKS, Kind, Score, TaskContext, summarise
from langadapt.evaluate.tasks.classify import finetune_protocol, settings, subsample
from langadapt.evaluate.tasks.data import Example, TaskData, check_labels

if TYPE_CHECKING:
    from langadapt.evaluate.config import TaskConfig


def is_iob(tags: set[str]) -> bool:
    return any(t.startswith(("B-", "I-")) for t in tags)


def score(gold: list[list[str]], pred: list[list[str]], iob: bool) -> float:
    if iob:
        from seqeval.metrics import f1_score

        return float(f1_score(gold, pred, zero_division=0))
    from sklearn.metrics import accuracy_score

    return float(accuracy_score([t for s in gold for t in s], [t for s in pred for t in s]))


def _word_vectors(ctx: TaskContext, sentences: list[Example], layer: int, batch: int) -> Any:
    import numpy as np

    out = []
    for i in range(0, len(sentences), batch):
        chunk = [list(e.tokens) for e in sentences[i : i + batch]]
        out.extend(v.float().cpu().numpy() for v in ctx.encoder.words(chunk, layer))
    return out if out else [np.zeros((0, ctx.model.config.hidden_size))]


def _probe(
    ctx: TaskContext, cfg: "TaskConfig", train: list[Example], test: list[Example], seed: int, vecs: tuple[Any, Any]
) -> list[list[str]]:
    import numpy as np

    from langadapt.evaluate.tasks.classify import probe_fit_predict

    train_vecs, test_vecs = vecs
    keep = subsample(["x"] * len(train), seed, cfg.seeds)
    x = np.concatenate([train_vecs[i] for i in keep])
    y = [t for i in keep for t in train[i].tags]
    return _per_sentence(probe_fit_predict(x, y, np.concatenate(test_vecs), seed), test)


def _per_sentence(flat: list[str], sentences: list[Example]) -> list[list[str]]:
    """Split one tag per word, in order, back into the sentences' words."""
    out, k = [], 0
    for e in sentences:
        out.append(flat[k : k + len(e.tokens)])
        k += len(e.tokens)
    return out


def _finetune(
    ctx: TaskContext, cfg: "TaskConfig", train: list[Example], test: list[Example], labels: list[str], seed: int
) -> list[list[str]]:
    """Whole model + linear head on each word's mean sub-token state at `layer`; returns test tags."""
    import torch

    from langadapt.evaluate.tasks.classify import finetune

    layer = layer_index(ctx.model, cfg.layer)
    y = {lab: i for i, lab in enumerate(labels)}

    def features(enc: Any, batch: list[Example], grad: bool) -> Any:
        return torch.cat(enc.words([list(e.tokens) for e in batch], layer, grad=grad))

    flat = finetune(ctx, cfg, train, test, len(labels), seed, features, lambda b: [y[t] for e in b for t in e.tags])
    return _per_sentence([labels[k] for k in flat], test)


def run_tag(ctx: TaskContext, cfg: "TaskConfig", data: TaskData) -> list[Score]:
    name, rows = cfg.name or cfg.kind, []
    layer = layer_index(ctx.model, cfg.layer)
    for lang, setting, train_lang in settings(ctx, cfg, data):
        train, test = data.select(train_lang, "train"), data.select(lang, "test")
        if cfg.max_train_per_label:
            train = train[: cfg.max_train_per_label]
        if cfg.max_test_per_label:
            test = test[: cfg.max_test_per_label]
        check_labels(train, test, name, token_level=True)
        labels = sorted({t for e in train for t in e.tags})
        iob = is_iob(set(labels))
        gold = [list(e.tags) for e in test]
        vecs = None
        if cfg.protocol == "probe":
            vecs = (_word_vectors(ctx, train, layer, cfg.batch_size), _word_vectors(ctx, test, layer, cfg.batch_size))
        values = []
        for seed in range(cfg.seeds):
            if cfg.protocol == "probe":
                pred = _probe(ctx, cfg, train, test, seed, vecs)
            else:
                pred = _finetune(ctx, cfg, train, test, labels, seed)
            values.append(score(gold, pred, iob))
        mean, std = summarise(values)
        rows.append(
            Score(
                name,
                cfg.kind,
                ctx.label,
                lang,
                setting,
                "entity F1" if iob else "accuracy",
                mean,
                std,
                values,
                len(train),
                len(test),
                extra={
                    "labels": len(labels),
                    **({"finetune": finetune_protocol(ctx.model, cfg)} if cfg.protocol == "finetune" else {}),
                },
            )
        )
    return rows


TASKS.register(
    "tag",
    help="token classification (NER, POS) from CoNLL files: seqeval entity F1 for IOB tags, else word accuracy",
)(Kind(run_tag, token_level=True, builtin_data=("ner-fixture",)))
