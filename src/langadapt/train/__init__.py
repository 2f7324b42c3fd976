"""Stage 4, train: continued pretraining of the initialised model, resumable.

One explicit loop you can read top to bottom: build the trainable model (a registered
method wraps peft), stream packed sequences of the target language with replay of the
source language mixed in at `replay_ratio`, step the optimizer, log one line per step,
checkpoint every `save_every` steps. A re-run after an interruption restores the newest
checkpoint (trainable weights, optimizer, data position, RNG) and continues; the finished
model is merged into a plain HF folder `train/final/` for evaluation and export, and the
adapter is kept separately in `train/adapter/`.
"""

from __future__ import annotations

import json
import logging
import math
import random
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from langadapt import corpus as corpus_stage
from langadapt.errors import ConfigError
from langadapt.models import doc_separator_id, load_model, load_tokenizer
from langadapt.recipe import Recipe, TrainConfig
from langadapt.registry import Registry
from langadapt.rundir import RunDir, StageContext, read_json, write_json
from langadapt.stage import run_stage

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel

log = logging.getLogger(__name__)
NAME = "train"

# -- objectives: (model, input_ids) -> per-token loss of shape (batch, seq_len - 1) -------

Objective = Callable[["PreTrainedModel", "torch.Tensor"], "torch.Tensor"]
OBJECTIVES: Registry[Objective] = Registry("objectives")


@OBJECTIVES.register("clm", help="causal language modelling: predict each next token")
def clm_loss(model: "PreTrainedModel", input_ids: "torch.Tensor") -> "torch.Tensor":
    import torch
    import torch.nn.functional as F

    logits = model(input_ids=input_ids).logits
    if logits.dtype != torch.float32:
        logits = logits.float()
    # shift the targets, not the logits: slicing (batch, seq, vocab) logits would copy them
    targets = torch.full_like(input_ids, -100)
    targets[:, :-1] = input_ids[:, 1:]
    loss = F.cross_entropy(logits.view(-1, logits.shape[-1]), targets.view(-1), reduction="none", ignore_index=-100)
    return loss.view(input_ids.shape)[:, :-1]


# -- methods: which weights train ----------------------------------------------------------

TrainMethod = Callable[["PreTrainedModel", TrainConfig, list[int]], "PreTrainedModel"]
TRAIN_METHODS: Registry[TrainMethod] = Registry("train-methods")


def _embedding_module_name(model: "PreTrainedModel") -> str:
    emb = model.get_input_embeddings()
    for name, module in model.named_modules():
        if module is emb:
            return name.split(".")[-1]
    raise ConfigError(["train: cannot find the model's input embedding module"])


def _check_targets(model: "PreTrainedModel", targets: tuple[str, ...]) -> None:
    names = {n.split(".")[-1] for n, _ in model.named_modules()}
    missing = [t for t in targets if t not in names]
    if missing:
        linear = sorted({n.split(".")[-1] for n, m in model.named_modules() if type(m).__name__ == "Linear"})
        raise ConfigError(
            [f"train.lora_targets: {', '.join(missing)} not in this model; its linear layers are: {', '.join(linear)}"]
        )


@TRAIN_METHODS.register("lora", help="LoRA (peft) on train.lora_targets, plus trainable rows for new tokens")
def lora(model: "PreTrainedModel", cfg: TrainConfig, new_ids: list[int]) -> "PreTrainedModel":
    from peft import LoraConfig, get_peft_model

    _check_targets(model, cfg.lora_targets)
    tokens = {_embedding_module_name(model): new_ids} if (cfg.train_new_embeddings and new_ids) else None
    config = LoraConfig(
        r=cfg.lora_rank,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=list(cfg.lora_targets),
        trainable_token_indices=tokens,
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config)


@TRAIN_METHODS.register(
    "new-rows", help="only the embedding rows of new tokens train (peft trainable tokens); the rest is frozen"
)
def new_rows(model: "PreTrainedModel", cfg: TrainConfig, new_ids: list[int]) -> "PreTrainedModel":
    from peft import TrainableTokensConfig, get_peft_model

    if not new_ids:
        raise ConfigError(["train.method new-rows: the tokenizer added no tokens; use tokenizer.method: extend"])
    return get_peft_model(
        model, TrainableTokensConfig(target_modules=[_embedding_module_name(model)], token_indices=new_ids)
    )


@TRAIN_METHODS.register("full", help="every weight trains (needs memory for optimizer state of the whole model)")
def full(model: "PreTrainedModel", cfg: TrainConfig, new_ids: list[int]) -> "PreTrainedModel":
    for p in model.parameters():
        p.requires_grad_(True)
    return model


# -- data ----------------------------------------------------------------------------------


@dataclass
class TokenStream:
    """Documents of one language, shuffled per epoch, tokenised lazily and packed.

    Every document starts with the separator token; blocks are cut at seq_len without
    padding, so no token is dropped (the tail of the last epoch simply is not reached).
    """

    texts: list[str]
    tok: Any
    sep_id: int
    seq_len: int
    seed: int
    epoch: int = 0
    next_doc: int = 0
    buffer: list[int] = field(default_factory=list)
    documents_started: int = 0
    _order: list[int] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        self._shuffle()

    def _shuffle(self) -> None:
        self._order = list(range(len(self.texts)))
        random.Random(self.seed * 1_000_003 + self.epoch).shuffle(self._order)

    def next_block(self) -> list[int]:
        while len(self.buffer) < self.seq_len:
            if self.next_doc >= len(self._order):
                self.epoch += 1
                self.next_doc = 0
                self._shuffle()
            text = self.texts[self._order[self.next_doc]]
            self.next_doc += 1
            self.documents_started += 1
            self.buffer.extend([self.sep_id] + self.tok(text, add_special_tokens=False)["input_ids"])
        block, self.buffer = self.buffer[: self.seq_len], self.buffer[self.seq_len :]
        return block

    def state(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "next_doc": self.next_doc,
            "buffer": list(self.buffer),
            "documents_started": self.documents_started,
        }

    def restore(self, state: dict[str, Any]) -> None:
        self.epoch, self.next_doc = state["epoch"], state["next_doc"]
        self.buffer, self.documents_started = list(state["buffer"]), state["documents_started"]
        self._shuffle()


def batch_languages(step: int, batch_size: int, replay_ratio: float, seed: int) -> list[bool]:
    """Which sequences of a step are replay; a pure function of the step, so resumable."""
    rng = random.Random(seed * 7_919 + step)
    return [rng.random() < replay_ratio for _ in range(batch_size)]


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warmup, then cosine decay to min_lr_ratio of the peak."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps)
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


# -- checkpoints -----------------------------------------------------------------------------


def _trainable_state(model: "torch.nn.Module") -> dict[str, "torch.Tensor"]:
    return {n: p.detach().clone().contiguous() for n, p in model.named_parameters() if p.requires_grad}


def save_checkpoint(out: Path, step: int, model: Any, opt: Any, streams: dict[str, TokenStream], keep: int) -> None:
    import torch
    from safetensors.torch import save_file

    ckdir = out / "checkpoints"
    final = ckdir / f"step-{step:06d}"
    tmp = ckdir / f".step-{step:06d}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    save_file(_trainable_state(model), tmp / "trainable.safetensors")
    torch.save({"optimizer": opt.state_dict(), "torch_rng": torch.get_rng_state()}, tmp / "optimizer.pt")
    write_json(tmp / "state.json", {"step": step, "streams": {k: s.state() for k, s in streams.items()}})
    tmp.rename(final)
    for old in sorted(ckdir.glob("step-*"))[:-keep]:
        shutil.rmtree(old)


def latest_checkpoint(out: Path) -> Path | None:
    cks = sorted((out / "checkpoints").glob("step-*")) if (out / "checkpoints").is_dir() else []
    return cks[-1] if cks else None


def load_checkpoint(ck: Path, model: Any, opt: Any, streams: dict[str, TokenStream]) -> int:
    import torch
    from safetensors.torch import load_file

    state = load_file(ck / "trainable.safetensors")
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in state.items():
            params[name].copy_(value)
    blob = torch.load(ck / "optimizer.pt", weights_only=False)
    opt.load_state_dict(blob["optimizer"])
    torch.set_rng_state(blob["torch_rng"])
    meta = read_json(ck / "state.json")
    for k, s in streams.items():
        s.restore(meta["streams"][k])
    return int(meta["step"])


# -- the loop ----------------------------------------------------------------------------------


def _fmt_time(seconds: float) -> str:
    seconds = int(seconds)
    return (
        f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
        if seconds >= 3600
        else f"{seconds // 60}:{seconds % 60:02d}"
    )


def _optimizer(model: Any, cfg: TrainConfig) -> "torch.optim.Optimizer":
    import torch

    emb, rest = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (emb if ("trainable_tokens" in name or "embed" in name or "lm_head" in name) else rest).append(p)
    groups = [{"params": rest, "weight_decay": cfg.weight_decay, "lr_scale": 1.0}]
    if emb:
        groups.append(
            {"params": emb, "weight_decay": 0.0, "lr_scale": (cfg.embedding_lr / cfg.lr) if cfg.embedding_lr else 1.0}
        )
    groups = [g for g in groups if g["params"]]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.95))


def train_loop(
    model: Any, streams: dict[str, TokenStream], target: str, replay: str | None, recipe: Recipe, out: Path
) -> dict[str, Any]:
    import torch

    cfg = recipe.train
    objective = OBJECTIVES.get(cfg.objective)
    opt = _optimizer(model, cfg)
    start = 0
    ck = latest_checkpoint(out)
    metrics_path = out / "metrics.jsonl"
    if ck is not None:
        start = load_checkpoint(ck, model, opt, streams)
        log.info("resuming from %s (step %d)", ck.name, start)
        lines = metrics_path.read_text().splitlines() if metrics_path.exists() else []
        metrics_path.write_text("".join(l + "\n" for l in lines if json.loads(l)["step"] <= start))
    elif metrics_path.exists():
        metrics_path.unlink()
    model.train()
    t0, tokens_done = time.time(), 0
    for step in range(start, cfg.max_steps):
        lr = lr_at(step, cfg)
        for g in opt.param_groups:
            g["lr"] = lr * g["lr_scale"]
        is_replay = batch_languages(step, cfg.batch_size, cfg.replay_ratio if replay else 0.0, recipe.seed)
        langs = [replay if r else target for r in is_replay]
        batch = torch.tensor([streams[lang].next_block() for lang in langs], dtype=torch.long)  # type: ignore[index]
        ts = time.time()
        per_token = objective(model, batch)
        loss = per_token.mean()
        loss.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], cfg.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        done = step + 1
        tokens_done += batch.numel()
        row: dict[str, Any] = {
            "step": done,
            "loss": round(loss.item(), 4),
            "lr": lr,
            "tokens_per_s": round(batch.numel() / (time.time() - ts), 1),
        }
        for lang in set(langs):
            rows = [i for i, l in enumerate(langs) if l == lang]
            row[f"loss_{lang}"] = round(per_token[rows].mean().item(), 4)
        with open(metrics_path, "a") as f:
            f.write(json.dumps(row) + "\n")
        elapsed = time.time() - t0
        eta = elapsed / (done - start) * (cfg.max_steps - done)
        log.info(
            "step %d/%d | loss %.4f | lr %.2e | %.0f tok/s | elapsed %s | eta %s",
            done,
            cfg.max_steps,
            row["loss"],
            lr,
            tokens_done / elapsed,
            _fmt_time(elapsed),
            _fmt_time(eta),
        )
        if (cfg.save_every and done % cfg.save_every == 0) or done == cfg.max_steps:
            save_checkpoint(out, done, model, opt, streams, cfg.keep_checkpoints)
    return {
        "steps": cfg.max_steps,
        "resumed_from_step": start,
        "tokens_this_session": tokens_done,
        "seconds_this_session": round(time.time() - t0, 1),
        "tokens": tokens_per_language(cfg, recipe.seed, target, replay),
    }


def tokens_per_language(cfg: TrainConfig, seed: int, target: str, replay: str | None) -> dict[str, int]:
    """Tokens trained per language over the whole run (the mix is a function of the step)."""
    n_replay = (
        sum(sum(batch_languages(s, cfg.batch_size, cfg.replay_ratio, seed)) for s in range(cfg.max_steps))
        if replay
        else 0
    )
    out = {target: (cfg.max_steps * cfg.batch_size - n_replay) * cfg.seq_len}
    if replay:
        out[replay] = n_replay * cfg.seq_len
    return out


def _build(recipe: Recipe, rd: RunDir, ctx: StageContext) -> None:
    import torch

    cfg = recipe.train
    init_dir = rd.require("init", "config.json", "init_report.json")
    corpus_dir = rd.require("corpus", "stats.json")
    tok_metrics = read_json(rd.require("tokenizer", "metrics.json") / "metrics.json")
    target, replay = corpus_stage.languages(rd)
    if cfg.replay_ratio == 0:
        replay = None
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(recipe.seed)

    tok = load_tokenizer(str(init_dir))
    model = load_model(str(init_dir), recipe.model.dtype)
    new_ids = list(tok_metrics.get("new_token_ids", []))
    model = TRAIN_METHODS.get(cfg.method)(model, cfg, new_ids)
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    n_all = sum(p.numel() for p in model.parameters())
    log.info("train: method %s, %.2fM of %.1fM parameters trainable", cfg.method, n_train / 1e6, n_all / 1e6)

    sep = doc_separator_id(tok)
    streams = {}
    for lang in (target, replay):
        if lang:
            texts = [d.text for d in corpus_stage.read_docs(corpus_dir / lang / "train.parquet")]
            streams[lang] = TokenStream(texts, tok, sep, cfg.seq_len, recipe.seed + len(streams))
    summary = train_loop(model, streams, target, replay, recipe, ctx.out)

    # the merged model is what evaluation and export read; the adapter stays for those who want it
    if hasattr(model, "merge_and_unload"):
        model.save_pretrained(ctx.out / "adapter")
        model = model.merge_and_unload()
    model.save_pretrained(ctx.out / "final")
    tok.save_pretrained(ctx.out / "final")
    summary.update(
        method=cfg.method,
        trainable_parameters=n_train,
        total_parameters=n_all,
        streams={
            k: {"epochs_completed": s.epoch, "documents_started": s.documents_started, "documents": len(s.texts)}
            for k, s in streams.items()
        },
    )
    write_json(ctx.out / "summary.json", summary)


def inputs(recipe: Recipe, rd: RunDir) -> dict[str, Any]:
    cfg = recipe.to_dict()["train"]
    cfg.pop("threads")  # how many cores ran it does not change what it computes
    return {
        "init": rd.fingerprint_of("init"),
        "corpus": rd.fingerprint_of("corpus"),
        "config": cfg,
        "dtype": recipe.model.dtype,
        "seed": recipe.seed,
    }


def run(recipe: Recipe, rd: RunDir, force: bool = False) -> Path:
    return run_stage(NAME, recipe, rd, inputs(recipe, rd), _build, force)
