"""Sequence classification (topic, sentiment): a linear probe or full fine-tuning, per language.

Settings: `in-language` trains and tests in each language; `from <source>` trains on the
source language and tests on another one (zero-shot cross-lingual transfer).
Metrics: accuracy (headline) and macro-F1, from scikit-learn.
"""

from __future__ import annotations

import contextlib
import copy
from collections import defaultdict
from typing import TYPE_CHECKING, Any, Callable, Iterator

from langadapt.evaluate.embed import layer_index, pool
from langadapt.evaluate.tasks.base import TASKS, Kind, Score, TaskContext, summarise
from langadapt.evaluate.tasks.data import Example, TaskData, check_labels

if TYPE_CHECKING:
    from langadapt.evaluate.config import TaskConfig


def cap_per_label(examples: list[Example], k: int, key: Any = lambda e: e.label) -> list[Example]:
    """The first k examples of each label (all when k is 0); order is kept."""
    if not k:
        return examples
    seen: dict[str, int] = defaultdict(int)
    out = []
    for e in examples:
        if seen[key(e)] < k:
            seen[key(e)] += 1
            out.append(e)
    return out


def settings(ctx: TaskContext, cfg: "TaskConfig", data: TaskData) -> list[tuple[str, str, str]]:
    """(test language, setting label, training language) for every run the task makes."""
    out = []
    for lang in ctx.languages:
        if not data.select(lang, "test"):
            continue
        if cfg.transfer in ("in-language", "both") and data.select(lang, "train"):
            out.append((lang, "in-language", lang))
        src = cfg.source_language or ctx.source
        if cfg.transfer in ("cross-lingual", "both") and src and lang != src and data.select(src, "train"):
            out.append((lang, f"from {src}", src))
    return out


def subsample(n_labels: list[str], seed: int, n_seeds: int) -> list[int]:
    """Indices of a stratified 80% sample (all of them when there is one seed)."""
    if n_seeds == 1:
        return list(range(len(n_labels)))
    from sklearn.model_selection import train_test_split

    idx = list(range(len(n_labels)))
    try:
        kept, _ = train_test_split(idx, train_size=0.8, stratify=n_labels, random_state=seed)
    except ValueError:  # a label too rare to stratify: plain random sample
        kept, _ = train_test_split(idx, train_size=0.8, random_state=seed)
    return sorted(kept)


def probe_fit_predict(x_train: Any, y_train: list[str], x_test: Any, seed: int) -> list[str]:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    clf = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000, random_state=seed))
    clf.fit(x_train, y_train)
    return list(clf.predict(x_test))


LORA_RANK = 16  # finetune on a large model: LoRA of this rank (alpha twice it) on every linear layer
LORA_LR_SCALE = 10  # its weights train at this multiple of the task's lr, as the head does (LoRA wants larger steps)


def finetune_protocol(model: Any, cfg: "TaskConfig") -> str:
    """ "full" (a copy of the whole model trains) or "lora r=16" (adapters on the model itself) for `protocol: finetune`.

    Full AdamW keeps the copy, its gradients and two moments: four times the model's fp32
    size beside it, which stops fitting one GPU past 2-3B parameters.
    """
    n = sum(p.numel() for p in model.parameters())
    return "full" if n <= cfg.full_finetune_max_parameters else f"lora r={LORA_RANK}"


@contextlib.contextmanager
def _trainable(ctx: TaskContext, how: str) -> Iterator[tuple[Any, list[Any]]]:
    """(model to train, its trainable parameters): a deep copy, or LoRA put into the model itself and removed after.

    LoRA leaves the model's own weights untouched (peft's `unload` takes the layers out
    without merging them), so the other seeds, tasks and models see it as it was.
    """
    if how == "full":
        model = copy.deepcopy(ctx.model)
        yield model, list(model.parameters())
        return
    from peft import LoraConfig, get_peft_model

    flags = {n: p.requires_grad for n, p in ctx.model.named_parameters()}
    lora = LoraConfig(r=LORA_RANK, lora_alpha=2 * LORA_RANK, lora_dropout=0.0, target_modules="all-linear")
    wrapped = get_peft_model(ctx.model, lora)  # injects the layers into ctx.model's own modules
    try:
        yield ctx.model, [p for p in ctx.model.parameters() if p.requires_grad]
    finally:
        wrapped.unload()
        for n, p in ctx.model.named_parameters():
            p.requires_grad_(flags[n])
        ctx.model.eval()


def finetune(
    ctx: TaskContext,
    cfg: "TaskConfig",
    train: list[Example],
    test: list[Example],
    n_labels: int,
    seed: int,
    features: Callable[[Any, list[Example], bool], Any],
    targets: Callable[[list[Example]], list[int]],
) -> list[int]:
    """The fixed fine-tuning protocol: a copy of the whole model and a linear head, AdamW at `lr`
    (head at 10x), `epochs` over the shuffled training set; above `full_finetune_max_parameters`
    LoRA on the model itself instead of the copy (`finetune_protocol`), its weights at 10x `lr`
    like the head's. `features(encoder, batch, grad)` gives one row per scored unit (a sentence,
    a word) and `targets(batch)` their label ids; returns the predicted label id of every test
    unit, in order."""
    import random

    import torch

    torch.manual_seed(seed)
    how = finetune_protocol(ctx.model, cfg)
    with _trainable(ctx, how) as (model, params):
        enc = copy.copy(ctx.encoder)
        enc.model, enc._cache = model, {}
        head = torch.nn.Linear(model.config.hidden_size, n_labels).to(model.device)
        lr = cfg.lr if how == "full" else LORA_LR_SCALE * cfg.lr
        opt = torch.optim.AdamW([{"params": params, "lr": lr}, {"params": head.parameters(), "lr": 10 * cfg.lr}])
        order = list(range(len(train)))
        model.train()
        for _ in range(cfg.epochs):
            random.Random(seed).shuffle(order)
            for i in range(0, len(order), cfg.batch_size):
                batch = [train[j] for j in order[i : i + cfg.batch_size]]
                gold = torch.tensor(targets(batch), device=model.device)
                loss = torch.nn.functional.cross_entropy(head(features(enc, batch, True).float()), gold)
                opt.zero_grad()
                loss.backward()
                opt.step()
        model.eval()
        preds: list[int] = []
        with torch.no_grad():
            for i in range(0, len(test), cfg.batch_size):
                preds.extend(head(features(enc, test[i : i + cfg.batch_size], False).float()).argmax(-1).tolist())
    return preds


def _finetune_predict(
    ctx: TaskContext, cfg: "TaskConfig", train: list[Example], test: list[Example], labels: list[str], seed: int
) -> list[str]:
    """Whole model + linear head on the pooled `layer`; returns test predictions."""
    layer = layer_index(ctx.model, cfg.layer)
    y = {lab: i for i, lab in enumerate(labels)}

    def features(enc: Any, batch: list[Example], grad: bool) -> Any:
        states, real = enc.hidden([enc.token_ids(e.text) for e in batch], grad=grad)
        return pool(states, real, cfg.pooling)[layer]

    ids = finetune(ctx, cfg, train, test, len(labels), seed, features, lambda b: [y[e.label] for e in b])
    return [labels[k] for k in ids]


def run_classify(ctx: TaskContext, cfg: "TaskConfig", data: TaskData) -> list[Score]:
    from sklearn.metrics import accuracy_score, f1_score

    name, rows = cfg.name or cfg.kind, []
    layer = layer_index(ctx.model, cfg.layer)
    for lang, setting, train_lang in settings(ctx, cfg, data):
        train = cap_per_label(data.select(train_lang, "train"), cfg.max_train_per_label)
        test = cap_per_label(data.select(lang, "test"), cfg.max_test_per_label)
        check_labels(train, test, name, token_level=False)
        labels = sorted({e.label for e in train})
        gold = [e.label for e in test]
        if cfg.protocol == "probe":
            x_train = ctx.encoder.sentences([e.text for e in train], cfg.pooling)[:, layer]
            x_test = ctx.encoder.sentences([e.text for e in test], cfg.pooling)[:, layer]
        accs, f1s = [], []
        for seed in range(cfg.seeds):
            if cfg.protocol == "probe":
                keep = subsample([e.label for e in train], seed, cfg.seeds)
                pred = probe_fit_predict(x_train[keep], [train[i].label for i in keep], x_test, seed)
            else:
                pred = _finetune_predict(ctx, cfg, train, test, labels, seed)
            accs.append(float(accuracy_score(gold, pred)))
            f1s.append(float(f1_score(gold, pred, average="macro", labels=labels, zero_division=0)))
        mean, std = summarise(accs)
        f1_mean, f1_std = summarise(f1s)
        rows.append(
            Score(
                name,
                cfg.kind,
                ctx.label,
                lang,
                setting,
                "accuracy",
                mean,
                std,
                accs,
                len(train),
                len(test),
                extra={
                    "macro_f1": f1_mean,
                    "macro_f1_std": f1_std,
                    "labels": len(labels),
                    "chance": max(gold.count(lab) for lab in set(gold)) / len(gold),
                    **({"finetune": finetune_protocol(ctx.model, cfg)} if cfg.protocol == "finetune" else {}),
                },
            )
        )
    return rows


TASKS.register(
    "classify",
    help="sequence classification (topic, sentiment): accuracy and macro-F1, in-language and cross-lingual",
)(Kind(run_classify, token_level=False, builtin_data=("bible-topic",)))
