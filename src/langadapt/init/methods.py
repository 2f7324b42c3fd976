"""The registry of init methods and what every method is given.

A method returns one row per new token for one matrix (input embeddings, or an untied
output head in its own space); rows of tokens the base vocabulary already has are copied
by the stage, never by a method.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from langadapt.registry import Registry

if TYPE_CHECKING:
    import torch


@dataclass
class InitInputs:
    old: "torch.Tensor"  # (old_vocab, dim) rows of one matrix (input embeddings or output head)
    pieces: list[list[int]]  # per new token: its old-token decomposition (may be empty)
    generator: "torch.Generator"
    init_std: float


InitMethod = Callable[[InitInputs], "torch.Tensor"]
INIT_METHODS: Registry[InitMethod] = Registry("init-methods")
