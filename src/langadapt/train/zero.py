"""DeepSpeed ZeRO (`train.sharding: zero1 | zero2 | zero3`), configured as accelerate configures it.

ZeRO splits the optimizer state (stage 1), and the gradients (2), and the weights (3) over
the processes. The DeepSpeed configuration comes from accelerate when it launched us with
one (`accelerate config` with DeepSpeed, `accelerate launch --use_deepspeed --zero_stage N`,
or a DeepSpeed JSON file through `--deepspeed_config_file`), read by accelerate's own
`DeepSpeedPlugin`; otherwise from the recipe's stage alone. What the recipe owns is then
written over it: the batch geometry (sequences per pass and accumulation), gradient clipping,
the optimizer (AdamW with its learning-rate schedule, from `train.*`) and the precision
(`train.precision`). In bf16 DeepSpeed's own bf16 mode is on (`bf16.enabled`, with
`communication_data_type: bf16`): the engine holds the model in bf16 (the frozen weights at
half the memory), reduces gradients in bf16 (half the traffic), and its optimizer keeps
float32 master weights and moments, which checkpoints store; the forward pass also runs
under the loop's autocast, as with every engine. In fp32 both stay off.

The engine is DeepSpeed's own (`deepspeed.initialize`), driven the way accelerate's
DeepSpeed wrapper drives it: the accumulation boundary is set before each backward pass,
`engine.backward` reduces (the loop scales each micro-batch's loss itself), and
`engine.step` clips, steps and zeroes the gradients. accelerate's own wrapper cannot be
used on a CPU (it drops its DeepSpeed configuration when asked for the CPU), and the loop
here is the same on every device.

Checkpoints hold full tensors, in the layout an unsharded run writes: each process's
partition of the fp32 weights and moments is gathered on rank 0 alone (`_gather_on_main`),
one parameter at a time, so no other process ever holds a full tensor of the state, and
restored through DeepSpeed's `safe_set_full_*` API. A run written by N ZeRO processes resumes
with M, with DDP, FSDP or one process, and the other way round.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from langadapt.errors import ConfigError
from langadapt.train.processes import Processes, env_flag, restore_trained, trainable

if TYPE_CHECKING:
    import torch

    from langadapt.train.config import TrainConfig

log = logging.getLogger(__name__)

ZERO_STAGES = {"zero1": 1, "zero2": 2, "zero3": 3}
# what the recipe decides, whatever a DeepSpeed configuration says (reported when it said otherwise)
OWNED = {
    "train_micro_batch_size_per_gpu": "train.micro_batch_size",
    "gradient_accumulation_steps": "train.batch_size / processes / micro_batch_size",
    "train_batch_size": "train.batch_size (or tokens_per_step / seq_len)",
    "gradient_clipping": "train.grad_clip",
}
# zero_optimization values accelerate fills from the model's hidden size when they say "auto"; langadapt
# also when they are not set
HIDDEN_SIZE_AUTO = {
    "reduce_bucket_size": lambda h: h * h,
    "stage3_prefetch_bucket_size": lambda h: int(0.9 * h * h),
    "stage3_param_persistence_threshold": lambda h: 10 * h,
}


def deepspeed_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("deepspeed") is not None


def accelerate_deepspeed_config() -> dict[str, Any] | None:
    """The DeepSpeed configuration accelerate launched us with, as its DeepSpeedPlugin reads it (None: none).

    Raises ConfigError when accelerate cannot read it (a missing or malformed JSON file).
    """
    if not env_flag("ACCELERATE_USE_DEEPSPEED"):
        return None
    path = os.environ.get("ACCELERATE_DEEPSPEED_CONFIG_FILE", "none")
    if path != "none":
        try:
            json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise ConfigError(
                [
                    f"train: accelerate's DeepSpeed config file {path} cannot be read as JSON ({e}); fix the file or "
                    "the path in `accelerate config`"
                ]
            ) from None
    from accelerate.utils import DeepSpeedPlugin

    try:
        return DeepSpeedPlugin().deepspeed_config
    except (ValueError, KeyError) as e:
        raise ConfigError([f"train: accelerate's DeepSpeed configuration is not usable: {e}"]) from None


def accelerate_zero_sharding(config: dict[str, Any] | None = None) -> str | None:
    """train.sharding as accelerate's DeepSpeed configuration (read when not given) asks for it.

    zero0 for stage 0; None when accelerate has no DeepSpeed configuration.
    """
    config = accelerate_deepspeed_config() if config is None else config
    if config is None:
        return None
    return f"zero{config.get('zero_optimization', {}).get('stage', 2)}"


def zero_problems(tr: "TrainConfig", sharding: str, precision: str, config: dict[str, Any] | None) -> list[str]:
    """What a ZeRO run of this recipe cannot do (`config`: accelerate's DeepSpeed configuration), before any work."""
    p = []
    if not deepspeed_installed():
        p.append(
            f"train.sharding {sharding}: runs DeepSpeed ZeRO, which is not installed; "
            "pip install 'langadapt[deepspeed]', or use train.sharding: full (FSDP2, part of torch)"
        )
    if precision == "fp16":
        p.append(
            f"train.sharding {sharding}: fp16 needs a loss scaler that sees every gradient, and ZeRO splits them; "
            "use train.precision: bf16 or fp32 (or FSDP, train.sharding: full, which scales fp16)"
        )
    config = config or {}
    zero = config.get("zero_optimization", {})
    for what in ("offload_optimizer", "offload_param"):
        if str(zero.get(what, {}).get("device", "none")).lower() not in ("none", "auto"):
            p.append(
                f"train: accelerate's DeepSpeed config asks for {what.replace('_', ' ')} to {zero[what]['device']}, "
                "which langadapt does not apply; shard over more processes (zero3) or train fewer weights, and "
                "set it to none in `accelerate config`"
            )
    for section, instead in (("optimizer", "train.lr, train.weight_decay"), ("scheduler", "train.warmup_steps")):
        if section in config:
            p.append(
                f"train: the DeepSpeed config has an '{section}' section; langadapt trains with its own AdamW and "
                f"learning-rate schedule ({instead}): remove the section"
            )
    for half in ("fp16", "bf16"):
        if str(config.get(half, {}).get("enabled", False)).lower() == "true" and half != precision:
            p.append(
                f"train: the DeepSpeed config enables {half} weights, but train.precision resolves to {precision}; "
                f"langadapt sets DeepSpeed's precision from train.precision (bf16 turns DeepSpeed's bf16 mode on): "
                f"set it there and remove '{half}' from the config"
            )
    filled = set(OWNED) | {f"zero_optimization.{k}" for k in HIDDEN_SIZE_AUTO}
    unknown = [k for k in _auto_values(config) if k not in filled and not k.startswith(("fp16.", "bf16."))]
    if unknown:
        p.append(f"train: DeepSpeed config values langadapt cannot fill are 'auto': {', '.join(unknown)}; give numbers")
    return p


def ds_config(
    tr: "TrainConfig",
    stage: int,
    rows: int,
    world: int,
    micro: int,
    hidden: int | None,
    precision: str = "fp32",
) -> dict[str, Any]:
    """The configuration handed to `deepspeed.initialize`: accelerate's (or a bare one), with the recipe's values.

    `precision` (train.precision, resolved): bf16 turns DeepSpeed's bf16 mode on, with gradients
    communicated in bf16; fp32 leaves both off (fp16 is refused before any work).
    """
    config = json.loads(json.dumps(accelerate_deepspeed_config() or {}, default=str))
    config.pop("fp16", None), config.pop("bf16", None), config.pop("communication_data_type", None)
    if precision == "bf16":
        config.update(bf16={"enabled": True}, communication_data_type="bf16")
    owned = {
        "train_micro_batch_size_per_gpu": micro,
        "gradient_accumulation_steps": rows // world // micro,
        "train_batch_size": rows,
        "gradient_clipping": float(tr.grad_clip),
    }
    replaced = [
        f"{k}={config[k]} -> {v} ({OWNED[k]})" for k, v in owned.items() if config.get(k, "auto") not in ("auto", v)
    ]
    if replaced:
        log.warning("DeepSpeed config values the recipe decides were replaced: %s", "; ".join(replaced))
    zero = {**config.get("zero_optimization", {}), "stage": stage}
    for key, size in HIDDEN_SIZE_AUTO.items():
        if zero.get(key, "auto") != "auto" or (key.startswith("stage3") and stage < 3):
            continue
        if hidden is not None:
            zero[key] = size(hidden)  # unset is auto: DeepSpeed's own 5e8-element buckets cost gigabytes
        elif key in zero:
            raise ConfigError([f"train: DeepSpeed zero_optimization.{key} is auto; give it a number"])
    config.update(owned, zero_optimization=zero, zero_allow_untested_optimizer=True, steps_per_print=2**31)
    left = _auto_values(config)
    if left:
        raise ConfigError([f"train: DeepSpeed config values langadapt cannot fill are 'auto': {', '.join(left)}"])
    return config


def _auto_values(config: dict[str, Any], prefix: str = "") -> list[str]:
    out = []
    for key, value in config.items():
        if isinstance(value, dict):
            out += _auto_values(value, f"{prefix}{key}.")
        elif value == "auto":
            out.append(prefix + key)
    return out


def setup_zero(
    module: "torch.nn.Module",
    model: Any,
    make_optimizer: Callable[[Any], Any],
    device: "torch.device",
    sharding: str,
    cfg: "TrainConfig",
    rows: int,
    micro: int,
) -> tuple["ZeroProcesses", Any, Any]:
    """(processes, engine, its optimizer): `model` (inside `module`) wrapped by a DeepSpeed ZeRO engine."""
    import deepspeed
    import torch
    import torch.distributed as dist

    from langadapt.train.objectives import output_head
    from langadapt.train.precision import resolve_precision

    if device.type == "cuda":
        torch.cuda.set_device(device)
    deepspeed.init_distributed(dist_backend="nccl" if device.type == "cuda" else "gloo")  # env:// as launched
    world, stage = dist.get_world_size(), ZERO_STAGES[sharding]
    hidden = getattr(getattr(model, "config", None), "hidden_size", None)
    config = ds_config(cfg, stage, rows, world, micro, hidden, resolve_precision(cfg.precision, device))
    optimizer = make_optimizer(model)
    name_of = {id(p): n for n, p in model.named_parameters()}
    groups = [[name_of[id(p)] for p in g["params"]] for g in optimizer.param_groups]
    if stage == 3:
        # the fused causal loss reads the output head's weight outside the head's own forward
        # pass: ZeRO-3 gathers it for the whole forward and backward pass of the loss module
        head = output_head(model)
        for t in head[1:3] + head[4:] if head is not None else ():
            if isinstance(t, torch.nn.Parameter):
                deepspeed.zero.register_external_parameter(module, t)
    # in bf16 mode the engine casts the model to bf16 and makes its fp32 master weights from that;
    # they are set from the fp32 weights themselves (held here by reference, not copied)
    exact = {n: p.data for n, p in model.named_parameters() if p.requires_grad} if config.get("bf16") else {}
    engine, ds_optimizer, _, _ = deepspeed.initialize(model=module, optimizer=optimizer, config=config)
    if exact:
        from deepspeed.utils import safe_set_full_fp32_param

        params = dict(model.named_parameters())
        for name, value in exact.items():
            safe_set_full_fp32_param(params[name], value.to(engine.device))
        exact.clear()
    procs = ZeroProcesses(dist.get_rank(), world, sharding=sharding, engine=engine, groups=groups)
    return procs, engine, ds_optimizer


class ZeroProcesses(Processes):
    """Processes whose gradients, steps and checkpoints go through a DeepSpeed ZeRO engine."""

    def __init__(self, rank: int, world_size: int, *, sharding: str, engine: Any, groups: list[list[str]]) -> None:
        super().__init__(rank, world_size, sharding=sharding)
        self.engine = engine
        self.groups = groups  # trainable parameter names per optimizer group: the unsharded optimizer's order

    def no_sync(self, module: Any, last: bool) -> Any:
        self.engine.set_gradient_accumulation_boundary(last)  # reduce and step only after the last micro-batch
        return contextlib.nullcontext()

    def backward(self, loss: "torch.Tensor", scaler: Any) -> None:
        self.engine.backward(loss, scale_wrt_gas=False)  # the loop already weighs each micro-batch

    def step(self, opt: Any, scaler: Any, params: list[Any], grad_clip: float) -> None:
        self.engine.step()  # clips (gradient_clipping), steps, zeroes the gradients

    def gather(self, t: "torch.Tensor") -> "torch.Tensor":
        """As `Processes.gather`, through the engine's device (NCCL moves CUDA tensors only)."""
        return super().gather(t.to(self.engine.device)).cpu()

    def release(self, module: Any) -> None:
        pass  # ZeRO-3 partitions the weights again after every forward pass

    def _params(self, model: Any) -> dict[str, Any]:
        return dict(model.named_parameters())

    def _order(self) -> list[str]:
        return [n for group in self.groups for n in group]

    def full_state(self, model: Any, opt: Any) -> tuple[dict[str, "torch.Tensor"], dict[str, Any]]:
        """Full fp32 weights and optimizer state of the trainable parameters for rank 0 ({} elsewhere).

        Collective: every process sends its partition of each tensor to rank 0, which alone
        assembles the full tensor (`_gather_on_main`); the others never hold one.
        """
        import torch

        params, base = self._params(model), opt.optimizer
        keys, step = _state_keys(base)
        _optimizer_internals(opt)
        weights, state = {}, {}
        for i, name in enumerate(self._order()):
            p = params[name]
            full = _gather_on_main(p, None, self.is_main)
            moments = {k: _gather_on_main(p, k, self.is_main) for k in keys}
            if self.is_main:
                weights[name] = full
                if step is not None:
                    state[i] = {"step": torch.tensor(step), **moments}
        if not self.is_main:
            return {}, {}
        groups, index = [], 0
        for names, g in zip(self.groups, base.param_groups):
            groups.append(
                {**{k: v for k, v in g.items() if k != "params"}, "params": list(range(index, index + len(names)))}
            )
            index += len(names)
        return weights, {"state": state, "param_groups": groups}

    def load_full_state(
        self, model: Any, opt: Any, weights: dict[str, "torch.Tensor"], optimizer: dict[str, Any]
    ) -> None:
        """Restore `full_state`'s output (every process reads the checkpoint and keeps its own partition)."""
        import deepspeed
        import torch
        from deepspeed.utils import safe_set_full_fp32_param, safe_set_full_optimizer_state

        params, base = self._params(model), opt.optimizer
        for name, value in weights.items():
            p = params[name]
            safe_set_full_fp32_param(p, value.to(p.device))  # the optimizer's fp32 master copy
            with deepspeed.zero.GatheredParameters([p], modifier_rank=0, enabled=hasattr(p, "ds_id")):
                with torch.no_grad():
                    p.copy_(value.to(p.device, p.dtype))  # the weight the forward pass reads
        saved = optimizer.get("state", {})
        if saved:
            first = next(iter(saved.values()))
            step = float(first["step"])
            moments = [k for k in first if k != "step"]
            _optimizer_internals(
                opt, lambda flat: {"step": torch.tensor(step), **{k: torch.zeros_like(flat) for k in moments}}
            )
            for i, name in enumerate(self._order()):
                for k in moments:
                    if i in saved:
                        safe_set_full_optimizer_state(params[name], saved[i][k].to(params[name].device), k)
        for g, g_saved in zip(base.param_groups, optimizer.get("param_groups", [])):
            g.update({k: v for k, v in g_saved.items() if k != "params"})

    def copy_weights(self, sharded: Any, model: Any) -> None:
        """The trained fp32 weights into `model` on every process (all must call it)."""
        from deepspeed.utils import safe_get_full_fp32_param

        restore_trained(model, {n: safe_get_full_fp32_param(p) for n, p in trainable(sharded)})


DEEPSPEED_CHECKED = "0.19.8"  # the DeepSpeed whose optimizer internals `_optimizer_internals` was checked against


def _local_part(p: Any, key: str | None) -> tuple["torch.Tensor | None", int]:
    """This process's part of the fp32 weight (key None) or of one optimizer moment of `p`, flat, and its offset
    in the flattened full tensor; (None, 0) when this process holds none of it.

    ZeRO-3: the process's partition (`safe_get_local_*`, DeepSpeed's API), every partition the
    same length, in rank order, the last one padded. ZeRO-1/2: the fragment of the parameter that
    falls in this process's flat partition, at `_hp_mapping.lp_fragment_address`, as DeepSpeed's
    own `get_full_hp_param` reads it (before it all-reduces a full-size buffer on every process).
    """
    if hasattr(p, "ds_id"):
        from deepspeed.utils import safe_get_local_fp32_param, safe_get_local_optimizer_state

        part = safe_get_local_fp32_param(p) if key is None else safe_get_local_optimizer_state(p, key)
        return part.flatten(), part.numel() * _rank()  # as DeepSpeed's `_fp32_state_allgather` places it
    mapping = p._hp_mapping
    if mapping is None:
        return None, 0
    return mapping.get_hp_fragment(key).flatten(), mapping.lp_fragment_address.start


def _rank() -> int:
    import torch.distributed as dist

    return dist.get_rank()


def _gather_on_main(p: Any, key: str | None, is_main: bool) -> "torch.Tensor | None":
    """The full fp32 tensor of `p` (its weight, or moment `key`) on rank 0's CPU, None elsewhere (collective).

    Each process sends (offset, length) and its part padded to the longest part; only rank 0
    receives and assembles. No process but rank 0 allocates anything of the full tensor's size.
    """
    import torch
    import torch.distributed as dist

    part, offset = _local_part(p, key)
    device = p.device if p.device.type != "meta" else torch.device("cpu")
    if part is None:
        part = torch.zeros(0, dtype=torch.float32, device=device)
    where = torch.tensor([offset, part.numel()], dtype=torch.long, device=part.device)
    spans = [torch.zeros_like(where) for _ in range(dist.get_world_size())]
    dist.all_gather(spans, where)  # two numbers per process: every process needs the longest length
    longest = max(int(s[1]) for s in spans)
    padded = torch.zeros(longest, dtype=torch.float32, device=part.device)
    padded[: part.numel()] = part.detach().float()
    received = [torch.empty_like(padded) for _ in spans] if is_main else None
    dist.gather(padded, received, dst=0)
    if not is_main:
        return None
    shape = tuple(p.ds_shape) if hasattr(p, "ds_id") else tuple(p.shape)
    full = torch.zeros(math.prod(shape), dtype=torch.float32)
    for (start, length), values in zip((s.tolist() for s in spans), received):  # type: ignore[arg-type]
        end = min(start + length, full.numel())  # ZeRO-3's last partition is padded
        if end > start:
            full[start:end] = values[: end - start].cpu()
    return full.view(shape)


def _optimizer_internals(opt: Any, create_state: Callable[["torch.Tensor"], dict[str, Any]] | None = None) -> None:
    """The one place that reaches into DeepSpeed's ZeRO optimizer beyond its public API.

    - `create_state`: ZeRO's inner optimizer creates its state (for this process's flat fp32
      partitions, `fp32_partitioned_groups_flat` in ZeRO-3, `single_partition_of_fp32_groups`
      in ZeRO-1/2) at its first step; a resumed run needs it before then, so it is made here.
    - Then, ZeRO-1/2: every parameter's view of the optimizer state is pointed at that state, in
      every group. DeepSpeed links them once, after the first group's first step, when the other
      groups have no state yet (so `safe_get_full_optimizer_state` fails for them); linking again
      (`_lazy_init_hp_params_optimizer_state`) once every group has stepped, or after the state
      is created on resume, fixes that. ZeRO-3 reads the optimizer's state directly.

    Checked against DeepSpeed `DEEPSPEED_CHECKED`; tests/test_train_distributed.py fails when the
    installed DeepSpeed is another version or lacks these attributes.
    """
    if create_state is not None:
        flats = getattr(opt, "fp32_partitioned_groups_flat", None)  # ZeRO-3 (by sub-group)
        for flat in flats if flats is not None else opt.single_partition_of_fp32_groups:  # ZeRO-1/2
            opt.optimizer.state[flat] = create_state(flat)
    if hasattr(opt, "_lazy_init_hp_params_optimizer_state"):
        opt._hp_optimizer_states_linked = False
        opt._lazy_init_hp_params_optimizer_state()


def _state_keys(base: Any) -> tuple[list[str], float | None]:
    """The per-parameter tensors of the optimizer's state (exp_avg, exp_avg_sq) and its step count (None: no step yet)."""
    states = [s for s in base.state.values() if s]
    if not states:
        return [], None
    first = states[0]
    return [k for k, v in first.items() if k != "step" and v.dim() > 0], float(first["step"])
