"""The student's shape and its initialisation from the teacher: chosen layers, kept vocabulary rows.

Nothing here is new weights: the student is the teacher with layers left out and the rows of
tokens outside the trimmed vocabulary removed (BiStil's initialisation). Its config is the
teacher's with `num_hidden_layers` and `vocab_size` changed (and per-layer lists such as
`layer_types` cut to the kept layers), so it loads with the same transformers class.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

from langadapt.errors import ConfigError

if TYPE_CHECKING:
    import torch
    from transformers import PretrainedConfig, PreTrainedModel

    from langadapt.distill.config import DistillConfig

# config entries that hold one value per layer and follow the kept layers
PER_LAYER_KEYS = ("layer_types", "no_rope_layers", "sliding_window_pattern_list")


def student_layers(cfg: "DistillConfig", n_layers: int) -> tuple[int, ...]:
    """The teacher layers the student keeps (0-based, increasing); ConfigError for a choice the teacher lacks."""
    if cfg.layers:
        bad = [i for i in cfg.layers if not 0 <= i < n_layers]
        if bad:
            raise ConfigError(
                [
                    f"distill.layers: the teacher has {n_layers} layers (0..{n_layers - 1}); it has no layer "
                    f"{', '.join(map(str, bad))}"
                ]
            )
        if list(cfg.layers) != sorted(set(cfg.layers)):
            raise ConfigError(
                [
                    f"distill.layers: {list(cfg.layers)} must be increasing, each layer once (the student keeps their order)"
                ]
            )
        return tuple(cfg.layers)
    k = cfg.layers_every
    if not 1 <= k <= n_layers:
        raise ConfigError(
            [f"distill.layers_every: {k} is not a layer step of a teacher with {n_layers} layers (1..{n_layers})"]
        )
    return tuple(range(k - 1, n_layers, k))


def layer_list(model: Any) -> tuple[str, Any]:
    """(state-dict prefix, ModuleList) of the model's transformer layers: the one list as long as the config says."""
    import torch

    n = model.config.num_hidden_layers
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) == n and n > 0:
            return name, module
    raise ConfigError([f"distill: {type(model).__name__} has no list of {n} transformer layers to choose from"])


def student_config(teacher: "PretrainedConfig", layers: tuple[int, ...], vocab_size: int) -> "PretrainedConfig":
    config = copy.deepcopy(teacher)
    for key in PER_LAYER_KEYS:
        value = getattr(config, key, None)
        if isinstance(value, (list, tuple)) and len(value) == teacher.num_hidden_layers:
            setattr(config, key, [value[i] for i in layers])
    config.num_hidden_layers = len(layers)
    config.vocab_size = vocab_size
    return config


def build_student(teacher: "PreTrainedModel", kept_ids: list[int], layers: tuple[int, ...]) -> "PreTrainedModel":
    """The student: teacher layers `layers` (in order), and of every vocabulary-sized tensor the rows `kept_ids`.

    Student token i is teacher token kept_ids[i]; its input embedding, output row (tied or
    not) and output bias are the teacher's. Every other weight (final norm, position and
    type embeddings, the MLM head's transform) is copied as it is.
    """
    import torch

    vocab = teacher.config.vocab_size
    prefix, _ = layer_list(teacher)
    rows = torch.tensor(kept_ids, dtype=torch.long)
    where = {old: new for new, old in enumerate(layers)}
    state = {}
    for key, value in teacher.state_dict().items():
        if key.startswith(prefix + "."):
            index, rest = key[len(prefix) + 1 :].split(".", 1)
            if int(index) not in where:
                continue
            key = f"{prefix}.{where[int(index)]}.{rest}"
        if value.ndim >= 1 and value.shape[0] == vocab:
            value = value.index_select(0, rows.to(value.device))
        state[key] = value.clone()
    config = student_config(teacher.config, layers, len(kept_ids))
    student = type(teacher)(config).to(next(teacher.parameters()).dtype)
    missing, unexpected = student.load_state_dict(state, strict=False)
    tied = {k for k in missing if k in _tied_keys(student)}
    if set(missing) - tied or unexpected:
        raise RuntimeError(f"student weights do not match its class: missing {missing}, unexpected {unexpected}")
    student.tie_weights()
    return student


def _tied_keys(model: Any) -> set[str]:
    keys = set(getattr(model, "_tied_weights_keys", None) or ())
    return keys | {k for k in model.state_dict() if any(k.endswith(t) for t in keys)}


def parameter_count(model: "torch.nn.Module") -> int:
    """Distinct parameters (a tied head counted once)."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def projected_parameters(teacher: "PreTrainedModel", layers: tuple[int, ...], vocab_size: int) -> int:
    """The student's parameter count, from the teacher's weights, without building it."""
    vocab = teacher.config.vocab_size
    prefix, _ = layer_list(teacher)
    total = 0
    for name, p in {id(p): (n, p) for n, p in teacher.named_parameters()}.values():
        if name.startswith(prefix + "."):
            if int(name[len(prefix) + 1 :].split(".", 1)[0]) not in layers:
                continue
        if p.ndim >= 1 and p.shape[0] == vocab:
            total += p.numel() // vocab * vocab_size
        else:
            total += p.numel()
    return total
