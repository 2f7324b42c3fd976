"""The training loop and its learning-rate schedule (its checkpoints: `checkpoints.py`)."""

from __future__ import annotations

import contextlib
import inspect
import json
import logging
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from langadapt.devices import autocast, describe_device, resolve_device
from langadapt.errors import ConfigError, OutOfDeviceMemoryError
from langadapt.train.checkpoints import latest_checkpoint, load_checkpoint, save_checkpoint, stopped_early
from langadapt.train.config import TrainConfig, effective_batch_size
from langadapt.train.data import (
    Prefetcher,
    TokenStream,
    batch_languages,
    document_positions,
    pair_rows,
    row_languages,
    row_with_segments,
)
from langadapt.train.distributed import resolve_sharding, setup
from langadapt.train.flops import Utilisation, device_peak, flops_per_token
from langadapt.train.heldout import HELDOUT_METRICS, heldout_bpb, heldout_metric, heldout_pseudo_bpb, heldout_samples
from langadapt.train.objectives import OBJECTIVES, Objective, is_masked, prepare_loss
from langadapt.train.precision import frozen_dtype, grad_scaler, resolve_precision
from langadapt.train.processes import launched_world_size, training_copy
from langadapt.train.tracking import MetricsLog
from langadapt.train.trainable import low_precision_trainable

if TYPE_CHECKING:
    import torch

    from langadapt.recipe import Recipe
    from langadapt.train.mixing import MixPlan

log = logging.getLogger(__name__)


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warmup, then cosine decay to min_lr_ratio of the peak."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps)
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def _fmt_time(seconds: float) -> str:
    seconds = int(seconds)
    return (
        f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
        if seconds >= 3600
        else f"{seconds // 60}:{seconds % 60:02d}"
    )


def _optimizer(model: Any, cfg: TrainConfig) -> "torch.optim.Optimizer":
    """AdamW over the trainable weights: decayed, and embedding rows (own learning rate, no decay).

    It steps float32 weights only, unless the recipe asks for bf16 ones by name
    (`train.low_precision_master_weights`); `trainable.apply_method` casts them after the
    method wraps the model, so a bf16 weight here is a model that bypassed it.
    """
    import torch

    low = low_precision_trainable(model)
    if low and not cfg.low_precision_master_weights:
        raise ConfigError(
            [
                f"train: {len(low)} trainable weights are not float32 (e.g. {low[0]}); the optimizer steps float32 "
                "master copies (train.trainable.apply_method casts them when a method wraps the model) unless "
                "train.low_precision_master_weights is true"
            ]
        )
    emb, rest = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (emb if any(k in name for k in ("trainable_tokens", "embed", "lm_head", "langsamp")) else rest).append(p)
    groups = [{"params": rest, "weight_decay": cfg.weight_decay, "lr_scale": 1.0}]
    if emb:
        groups.append(
            {"params": emb, "weight_decay": 0.0, "lr_scale": (cfg.embedding_lr / cfg.lr) if cfg.embedding_lr else 1.0}
        )
    groups = [g for g in groups if g["params"]]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.95), **adamw_kernel(emb + rest))


def adamw_kernel(params: list[Any]) -> dict[str, bool]:
    """How AdamW runs its update: `fused` (one CUDA kernel for every tensor) when every weight is a
    floating-point CUDA tensor, else `foreach` (one call per operation over the list of tensors).

    The fused kernel reads and writes each weight and its two moments once per step instead of
    once per operation; it needs every tensor on a CUDA device. On a CPU, foreach computes
    exactly what the default per-tensor loop computes.
    """
    if params and all(p.device.type == "cuda" and p.is_floating_point() for p in params):
        return {"fused": True}
    return {"foreach": True}


def train_loop(
    model: Any,
    streams: dict[str, TokenStream],
    target: str,
    replay: str | None,
    recipe: "Recipe",
    out: Path,
    *,
    device: "torch.device | None" = None,
    objective: "Objective | None" = None,
    mix: "MixPlan | None" = None,
    evaluate_first: bool = False,
) -> dict[str, Any]:
    """Train `model` for recipe.train.max_steps optimizer steps (resuming from the newest checkpoint).

    `evaluate_first`: with train.eval_every, also measure the held-out figures before the first step
    (a row of step 0 in metrics.jsonl).

    `mix`: the sources of each side and their shares (`mixing.py`); without one (or with one source
    per side) the streams are keyed by language and a row is the target's or the replay's.

    `objective` defaults to train.objective from the registry; one that needs more than the
    model (mlm: its masking plan) is built by the caller with it bound.

    Each step draws its sequences (the replay mix is a function of the step), runs them in
    micro-batches under the precision's autocast, accumulates gradients, clips and steps.
    """
    import numpy as np
    import torch

    cfg = recipe.train
    device = device or resolve_device(cfg.device)
    precision = resolve_precision(cfg.precision, device, frozen_dtype(model))  # auto follows bf16/fp16 frozen weights
    sharding = resolve_sharding(cfg.sharding)
    if sharding == "none":
        trained = model
        if not getattr(model, "is_loaded_in_4bit", False):  # a 4-bit base was placed on its device as it loaded
            model.to(device)
    loss_path = prepare_loss(cfg.objective, model, len(next(iter(streams.values())).tok))  # fused, or plain and why
    if sharding != "none":
        # FSDP and ZeRO shard a model in place and cannot undo it; the caller (phase merges,
        # saving the final model) needs a plain one, so a copy is sharded (onto the device, block
        # by block) and its trained weights are written back at the end
        trained = training_copy(model)
    prepare_model(trained, cfg)
    objective = objective or OBJECTIVES.get(cfg.objective)
    sep_id = next(iter(streams.values())).sep_id
    takes = inspect.signature(objective).parameters
    use_positions = "position_ids" in takes and cfg.packed_attention == "document"
    # what the objective reads from the ids that only the host computes (mlm: the tokenizer's word boundaries)
    host_inputs = getattr(objective, "host_inputs", None)

    def positions(ids: "torch.Tensor") -> dict[str, Any]:
        return {"position_ids": document_positions(ids, sep_id)} if use_positions else {}

    scaler = grad_scaler(device, precision)
    rows = effective_batch_size(cfg)
    local_rows = rows // launched_world_size()
    micro = cfg.micro_batch_size or auto_micro_batch(local_rows, cfg.seq_len, device, precision)
    procs, loss_module, opt = setup(
        trained, objective, lambda m: _optimizer(m, cfg), device, rows, micro, sharding, cfg
    )
    # model FLOPs per token (from the unsharded model: what trains is set on it) and the device's peak
    flops = flops_per_token(model, cfg.seq_len, cfg.mlm_probability if is_masked(cfg.objective) else 1.0)
    peak, peak_line = device_peak(device, precision, cfg.peak_tflops) if procs.is_main else (None, "")
    utilisation = Utilisation(flops, peak, procs.world_size)
    procs.wait()  # rank 0 has prepared the stage's folder before anyone reads its checkpoints
    start, end, stopped_at = 0, cfg.max_steps, 0
    ck = latest_checkpoint(out)
    metrics_path = out / "metrics.jsonl"
    if ck is not None:
        start = load_checkpoint(ck, trained, opt, streams, procs)
        if stopped_early(ck):  # stopped early before an interruption: complete, nothing more to train
            end = stopped_at = start
        log.info("resuming from %s (step %d) on %s", ck.name, start, device)
        if procs.is_main:
            lines = metrics_path.read_text().splitlines() if metrics_path.exists() else []
            metrics_path.write_text("".join(l + "\n" for l in lines if json.loads(l)["step"] <= start))
    elif metrics_path.exists() and procs.is_main:
        metrics_path.unlink()
    procs.wait()
    log.info(
        "train: %s, %s, %d sequences of %d tokens per step (micro-batch %d), %d process(es), sharding %s, loss %s",
        device,
        precision,
        rows,
        cfg.seq_len,
        micro,
        procs.world_size,
        procs.sharding,
        loss_path,
    )
    if procs.is_main:
        log.info(
            "%s; model FLOPs per token %.3g (forward %.3g, backward %.3g)",
            peak_line,
            flops.total,
            flops.forward,
            flops.backward,
        )
    loss_module.train()

    # a pair or code-switching objective draws a share of the target's rows from a stream of its own (pairs, switched text)
    target_stream = getattr(objective, "target_stream", None)
    use_segments = "segments" in takes  # what each position of a row is (train/pairs.py), drawn with the row
    # LangSAMP: each position's language, drawn with the row (train/langsamp.py)
    language_index = getattr(objective, "language_index", None) if "languages" in takes else None

    def draw(step: int) -> tuple["torch.Tensor", list[str], dict[str, dict[str, Any]], tuple[Any, Any]]:
        """The step's sequences (the replay mix is a function of the step), the streams' state after them, and
        their segments and per-position languages when the objective takes them."""
        is_replay = batch_languages(step, rows, cfg.replay_ratio if replay else 0.0, recipe.seed)
        if mix is not None and mix.mixed:
            langs = mix.row_sources(is_replay, step, recipe.seed)  # stream keys: the sources' names
        else:
            langs = [replay if r else target for r in is_replay]
        if target_stream:  # validation: an objective with a stream of its own trains on one source per side
            langs = pair_rows(step, langs, target, target_stream, objective.target_share, recipe.seed)  # type: ignore[union-attr]
        segments = languages = None
        if use_segments or language_index is not None:
            drawn, places = [], []
            for lang in langs:
                ids, seg = row_with_segments(streams[lang])  # type: ignore[index]
                drawn.append((ids, seg))
                if language_index is not None:  # read right after the row: a stream of pairs knows its last row's
                    places.append(row_languages(streams[lang], seg, language_index))  # type: ignore[index]
            batch = torch.from_numpy(np.stack([ids for ids, _ in drawn]))
            segments = torch.from_numpy(np.stack([seg for _, seg in drawn])) if use_segments else None
            languages = torch.from_numpy(np.stack(places)) if places else None
        else:
            batch = torch.from_numpy(np.stack([streams[lang].next_block() for lang in langs]))  # type: ignore[index]
        if device.type == "cuda":  # page-locked: the copy to the GPU can run beside the host
            batch = batch.pin_memory()
        return batch, langs, {k: s.state() for k, s in streams.items()}, (segments, languages)  # type: ignore[return-value]

    def prepared(step: int) -> tuple["torch.Tensor", list[str], dict[str, dict[str, Any]], dict[str, Any]]:
        """`draw`, and this process's rows with every per-row input the objective takes, computed on the host
        (in the data thread, while the previous step trains) and pinned for copies that do not wait."""
        batch, langs, states, (segments, languages) = draw(step)
        mine = batch[procs.share(rows)]
        inputs: dict[str, Any] = {"input_ids": mine}
        if segments is not None:
            inputs["segments"] = segments[procs.share(rows)]
        if languages is not None:
            inputs["languages"] = languages[procs.share(rows)]
        if use_positions:
            inputs["position_ids"] = document_positions(mine, sep_id)
        if host_inputs is not None:
            inputs.update(host_inputs(mine))
        if device.type == "cuda":
            inputs = {k: v.pin_memory() if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}
        return batch, langs, states, inputs

    def seeds(step: int) -> Callable[[int], int] | None:
        """An objective's random draws (mlm: its masking) for a micro-batch starting at local row `s`, a
        function of the run's seed, the step and the batch row: a resumed run draws as an uninterrupted one."""
        if "seed" not in takes:
            return None
        first = procs.share(rows).start
        return lambda s: micro_batch_seed(recipe.seed, step, first + s)

    data = Prefetcher(prepared, start, end)
    tracker = MetricsLog(metrics_path, cfg.log_to, recipe.name, recipe.to_dict()["train"]) if procs.is_main else None
    samples = heldout_samples(streams, cfg) if cfg.eval_every else {}

    def evaluate() -> dict[str, float]:
        """The held-out figures of every language under the current weights (every process takes part)."""
        if is_masked(cfg.objective):
            out = heldout_pseudo_bpb(loss_module, trained, samples, recipe, device, precision)
        else:
            out = heldout_bpb(loss_module, samples, micro, device, precision, positions)
        procs.release(loss_module)
        return out

    if evaluate_first and samples and start == 0:  # the starting point of the curves (replay_ratio auto's pilots)
        first = {"step": 0, **evaluate()}
        if tracker is not None:
            tracker.write(first)
    metric = heldout_metric(cfg.objective)  # bpb_<lang>, or pseudo_bpb_<lang> for masked LMs
    best, evals_without_gain = math.inf, 0
    t0, tokens_done, done = time.time(), 0, start
    try:
        for step in range(start, end):
            lr = lr_at(step, cfg)
            for g in opt.param_groups:
                g["lr"] = lr * g["lr_scale"]
            batch, langs, stream_states, inputs = data.get(step)
            ts = time.time()
            with out_of_memory_advice(device, micro, cfg, precision):
                row_losses = forward_backward(inputs, micro, loss_module, procs, device, precision, scaler, seeds(step))
                procs.step(opt, scaler, [p for p in trained.parameters() if p.requires_grad], cfg.grad_clip)
            done = step + 1
            tokens_done += batch.numel()
            # the step's one read of the device: each row's mean loss, every row of the global batch in order
            # (rows have equal lengths, so means of rows are means of tokens)
            losses = procs.gather(row_losses).tolist()
            step_s = time.time() - ts  # the step's forward, backward and update (the loss read waits for them)
            row: dict[str, Any] = {
                "step": done,
                "loss": round(sum(losses) / len(losses), 4),
                "lr": lr,
                "tokens_per_s": round(batch.numel() / step_s, 1),
                **utilisation.step(batch.numel(), step_s),  # model_tflops, mfu, mfu_against
                "elapsed_s": round(time.time() - t0, 2),  # wall time of this session, data included
            }
            for lang in sorted(set(langs)):  # type: ignore[type-var]
                of_lang = [x for x, l in zip(losses, langs) if l == lang]
                row[f"loss_{lang}"] = round(sum(of_lang) / len(of_lang), 4)
            if samples and (done % cfg.eval_every == 0 or done == cfg.max_steps):
                row.update(evaluate())
                if row[f"{metric}_{target}"] < best:
                    best, evals_without_gain = row[f"{metric}_{target}"], 0
                else:
                    evals_without_gain += 1
                stopped_at = (
                    done if cfg.early_stopping_patience and evals_without_gain >= cfg.early_stopping_patience else 0
                )
            if procs.is_main:
                _report(row, tracker, tokens_done, time.time() - t0, done - start, cfg.max_steps, utilisation)
            if (cfg.save_every and done % cfg.save_every == 0) or done == cfg.max_steps or stopped_at:
                save_checkpoint(
                    out, done, trained, opt, stream_states, cfg.keep_checkpoints, procs, stopped_early=bool(stopped_at)
                )
            if stopped_at:
                log.info(
                    "early stop at step %d: held-out %s %s did not improve in %d evaluations",
                    done,
                    target,
                    HELDOUT_METRICS[metric],
                    evals_without_gain,
                )
                break
    finally:
        data.close()
        if tracker is not None:
            tracker.close()
    if stopped_at and done > start:  # the prefetcher drew a step past the stop: back to where the stop's checkpoint is
        for k, s in streams.items():
            s.restore(stream_states[k])
    if trained is not model:
        procs.copy_weights(trained, model)

    return {
        "steps": done,  # trained: fewer than scheduled after an early stop
        "scheduled_steps": cfg.max_steps,
        "resumed_from_step": start,
        "tokens_this_session": tokens_done,
        "seconds_this_session": round(time.time() - t0, 1),
        "tokens": tokens_per_language(
            cfg,
            recipe.seed,
            target,
            replay,
            done,
            mix,
            streams,
            (target_stream, objective.target_share) if target_stream else None,  # type: ignore[union-attr]
        ),
        "precision": precision,
        "processes": procs.world_size,
        "sharding": procs.sharding,
        "micro_batch": micro,
        "loss": loss_path,
        **utilisation.summary(),  # model FLOPs per token, model TFLOP/s and MFU over this session's steps
        **({"stopped_early_at_step": stopped_at} if stopped_at else {}),
        **describe_device(device),
    }


# tokens per forward pass on a CPU when the recipe leaves micro_batch_size at 0, by precision
CPU_MICRO_TOKENS = {"fp32": 512, "bf16": 1024}


def auto_micro_batch(rows: int, seq_len: int, device: "torch.device", precision: str = "fp32") -> int:
    """Sequences per forward/backward pass when `train.micro_batch_size` is 0 (the largest divisor of `rows` that fits).

    On a CPU the saved activations grow with the tokens of a pass (about 1 GB per 256-token
    sequence for the demo's 30-layer model in fp32), and past a few hundred tokens a larger
    pass is no faster in fp32: its working set leaves the caches. Passes of about 512 tokens
    halve the demo's peak memory at no cost in speed. In bf16 (AMX) the activations autocast
    saves are half the size and the matrix units want larger products: passes of about 1,024
    tokens were 13% faster than 512 for the demo's model, at the peak memory of fp32's 512.
    A GPU takes the whole batch at once (set micro_batch_size when it does not fit).
    """
    if device.type != "cpu":
        return rows
    fit = max(1, CPU_MICRO_TOKENS.get(precision, CPU_MICRO_TOKENS["fp32"]) // seq_len)
    return max(d for d in range(1, min(rows, fit) + 1) if rows % d == 0)


def micro_batch_seed(seed: int, step: int, row: int) -> int:
    """A 64-bit seed for the random draws of the micro-batch starting at global row `row` of step `step`."""
    return (seed * 0x9E3779B97F4A7C15 + step * 0xBF58476D1CE4E5B9 + row * 0x94D049BB133111EB) % 2**64


def forward_backward(
    inputs: dict[str, Any],
    micro: int,
    loss_module: Any,
    procs: Any,
    device: "torch.device",
    precision: str,
    scaler: Any,
    seed: Callable[[int], int] | None = None,
) -> "torch.Tensor":
    """This process's rows of a step, in micro-batches: gradients accumulate, each row's mean loss comes back.

    `inputs` holds the rows' `input_ids` and whatever else the objective takes per row (position
    ids, mlm's word boundaries), made on the host; a value that is not a tensor goes to every
    micro-batch as it is. `seed(s)`, when given, seeds the objective's random draws for the
    micro-batch starting at row s. Nothing is read back from the device: copies to it do not wait
    (from pinned memory on a GPU) and the losses stay there, so the host queues the whole step
    without stopping; the caller reads the row losses once. The engine synchronises gradients
    only after the last micro-batch. Under autocast runs the forward pass alone; the backward
    pass follows the types the forward pass chose.
    """
    import torch

    n = len(inputs["input_ids"])
    row_losses = []
    for s in range(0, n, micro):
        part = {
            k: v[s : s + micro].to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v
            for k, v in inputs.items()
        }
        if seed is not None:
            part["seed"] = seed(s)
        ids = part.pop("input_ids")
        with procs.no_sync(loss_module, last=s + micro >= n):
            with autocast(device, precision):
                losses = loss_module(ids, **part)
            loss = losses.float().mean() * (len(ids) / n)  # rows have equal lengths: the batch mean
            procs.backward(loss, scaler)
        row_losses.append(losses.detach().float().mean(dim=1))
    return torch.cat(row_losses)


@contextlib.contextmanager
def out_of_memory_advice(device: "torch.device", micro: int, cfg: TrainConfig, precision: str) -> Any:
    """A device out-of-memory error in a training step, as one message: what the step held and what to lower."""
    import torch

    try:
        yield
    except torch.OutOfMemoryError:
        memory = ""
        if device.type == "cuda":
            total = torch.cuda.get_device_properties(device).total_memory
            memory = f"; peak {torch.cuda.max_memory_allocated(device) / 2**30:.1f} of {total / 2**30:.1f} GiB"
        lower = []
        if micro > 1:
            lower.append(
                f"train.micro_batch_size (now {micro}; the step accumulates gradients over micro-batches, so "
                "the batch stays the same)"
            )
        lower.append(f"train.seq_len (now {cfg.seq_len})")
        if not cfg.gradient_checkpointing:
            lower.append("set train.gradient_checkpointing: true (activations recomputed: less memory, more compute)")
        if cfg.method == "full":  # weights, gradients and two AdamW moments of every weight, all float32
            lower.append("train a LoRA method (train.method: lora) instead of full")
        raise OutOfDeviceMemoryError(
            f"out of memory on {device} in a training step: micro-batch of {micro} sequences x {cfg.seq_len} "
            f"tokens, precision {precision}, train.method {cfg.method}{memory}",
            hint="lower " + "; or ".join(lower),
        ) from None


def _report(
    row: dict[str, Any],
    tracker: Any,
    tokens: int,
    elapsed: float,
    steps: int,
    max_steps: int,
    utilisation: Utilisation,
) -> None:
    """One JSON line in metrics.jsonl (and the trackers asked for) and one log line per step.

    The line's tokens/s, model TFLOP/s and MFU are over the session so far (wall time, data and
    evaluation included); metrics.jsonl has each step's own (its optimizer step alone).
    """
    tracker.write(row)
    eta = elapsed / steps * (max_steps - row["step"])
    log.info(
        "step %d/%d | loss %.4f | lr %.2e | %.0f tok/s | %s | elapsed %s | eta %s",
        row["step"],
        max_steps,
        row["loss"],
        row["lr"],
        tokens / elapsed,
        utilisation.phrase(tokens, elapsed),
        _fmt_time(elapsed),
        _fmt_time(eta),
    )


def prepare_model(model: Any, cfg: TrainConfig) -> None:
    """Gradient checkpointing and torch.compile, as the recipe asks."""
    if cfg.gradient_checkpointing:
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        if not getattr(base, "supports_gradient_checkpointing", False):
            raise ConfigError([f"train.gradient_checkpointing: {type(base).__name__} does not support it"])
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if cfg.compile:
        # compile each transformer block in place: the same code serves every layer, the loss
        # and the adapters' wrappers stay eager, and a compile failure names one block
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        blocks = set(getattr(base, "_no_split_modules", None) or ())
        for module in base.modules():
            if type(module).__name__ in blocks:
                module.compile(dynamic=False)


def set_dropout(model: Any, p: float) -> int:
    """Every dropout of the model's layers to `p`: dropout modules and the rates attention kernels read.

    Attention implementations that call a fused kernel keep their rate as a float attribute
    (`dropout_prob`, `attention_dropout`) read at each forward pass; both kinds are set. The
    config is left alone, so a saved model keeps its own rates. Returns how many were set.
    """
    import torch

    n = 0
    for module in model.modules():
        if isinstance(module, torch.nn.modules.dropout._DropoutNd):
            module.p, n = p, n + 1
            continue
        for name, value in vars(module).items():
            if "dropout" in name and isinstance(value, float):
                setattr(module, name, p)
                n += 1
    return n


def tokens_per_language(
    cfg: TrainConfig,
    seed: int,
    target: str,
    replay: str | None,
    steps: int | None = None,
    mix: "MixPlan | None" = None,
    streams: dict[str, TokenStream] | None = None,
    stream: tuple[str, float] | None = None,
) -> dict[str, int]:
    """Tokens trained per language in the first `steps` steps (default: the whole schedule; the mix is a function of the step).

    With several sources per side (`mix`), each row's source is drawn again and counted under its stream's language.
    `stream`: (key, share) of an objective that draws a share of the target's rows from a stream of its own
    (pairs, code-switched or prefixed text); those rows' tokens are counted under its key, not the target's.
    """
    steps = cfg.max_steps if steps is None else steps
    rows = effective_batch_size(cfg)
    if mix is not None and mix.mixed and streams is not None:
        out: dict[str, int] = {}
        ratio = cfg.replay_ratio if replay else 0.0
        for s in range(steps):
            for name in mix.row_sources(batch_languages(s, rows, ratio, seed), s, seed):
                lang = streams[name].language or name
                out[lang] = out.get(lang, 0) + cfg.seq_len
        return out
    n_replay = n_stream = 0
    for s in range(steps):
        langs = [replay if r else target for r in batch_languages(s, rows, cfg.replay_ratio if replay else 0.0, seed)]
        n_replay += sum(1 for lang in langs if lang == replay)
        if stream is not None:
            n_stream += sum(1 for lang in pair_rows(s, langs, target, stream[0], stream[1], seed) if lang == stream[0])
    out = {target: (steps * rows - n_replay - n_stream) * cfg.seq_len}
    if replay:
        out[replay] = n_replay * cfg.seq_len
    if stream is not None:
        out[stream[0]] = n_stream * cfg.seq_len
    return out
