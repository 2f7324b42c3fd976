"""The training loop, its learning-rate schedule and its resumable checkpoints."""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from langadapt.rundir import read_json, write_json
from langadapt.train.config import TrainConfig
from langadapt.train.data import TokenStream, batch_languages
from langadapt.train.objectives import OBJECTIVES

if TYPE_CHECKING:
    import torch

    from langadapt.recipe import Recipe

log = logging.getLogger(__name__)


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warmup, then cosine decay to min_lr_ratio of the peak."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps)
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


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
    model: Any, streams: dict[str, TokenStream], target: str, replay: str | None, recipe: "Recipe", out: Path
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
