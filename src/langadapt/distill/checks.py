"""Checks of the distill section: its values alone (validation, before any work) and against the run's teacher."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from langadapt.distill.config import HIDDEN_LOSSES
from langadapt.distill.student import student_layers
from langadapt.errors import ConfigError

if TYPE_CHECKING:
    from langadapt.recipe import Recipe


def check(recipe: "Recipe") -> list[str]:
    """Problems with the distill section that the recipe alone shows."""
    d, p = recipe.distill, []
    if d.layers_every < 1:
        p.append("distill.layers_every: must be >= 1")
    if d.vocab_size < 0 or d.vocab_min_count < 1:
        p.append("distill.vocab_size must be >= 0 and distill.vocab_min_count >= 1")
    if d.max_steps < 1 or d.lr <= 0 or d.warmup_steps < 0 or d.save_every < 0:
        p.append("distill: max_steps must be >= 1, lr > 0, warmup_steps and save_every >= 0")
    if d.temperature <= 0:
        p.append("distill.temperature: must be > 0")
    if d.hidden_loss not in HIDDEN_LOSSES:
        p.append(f"distill.hidden_loss: '{d.hidden_loss}' is not one of {', '.join(HIDDEN_LOSSES)}")
    weights = (d.kl_weight, d.hidden_weight, d.attention_weight)
    if min(weights) < 0 or d.kl_weight + d.hidden_weight == 0:
        p.append("distill: the loss weights must be >= 0, and kl_weight or hidden_weight > 0")
    if d.speed_tokens < 16:
        p.append("distill.speed_tokens: must be >= 16")
    return p


def teacher_problems(recipe: "Recipe", teacher: Any, trained: bool) -> list[str]:
    """The student asked for against the teacher's config: layers it has, and a student smaller than it.

    `teacher` is the trained model's config (None when `trained` is False: no trained model).
    """
    if not trained:
        return [
            "distill: the run has no trained model to distill (train/final/ of a finished train stage); "
            "train it first: langadapt run RECIPE (or langadapt train RECIPE)"
        ]
    d, p = recipe.distill, list(check(recipe))
    n = teacher.num_hidden_layers
    try:
        layers = student_layers(d, n)
    except ConfigError as e:
        return p + e.problems
    if d.vocab_size > teacher.vocab_size:
        p.append(
            f"distill.vocab_size: {d.vocab_size} is more than the teacher's {teacher.vocab_size} tokens; a student "
            "is smaller than its teacher"
        )
    elif len(layers) >= n and not 0 < d.vocab_size < teacher.vocab_size:
        p.append(
            f"distill: the student would keep all {n} of the teacher's layers and (up to) its whole vocabulary of "
            f"{teacher.vocab_size}, so it would not be smaller than its teacher; keep fewer layers "
            "(distill.layers_every >= 2 or distill.layers) or cap distill.vocab_size below the teacher's"
        )
    return p
