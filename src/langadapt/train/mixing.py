"""Mixing several sources of text: each one's share of the training draw, and the epochs it is seen for.

`train.replay_ratio` first splits every batch between the target side and the replay side
(`data.batch_languages`, unchanged); the mixing then divides each side among its sources
(`corpus.target` / `corpus.replay` given as lists) by one of three rules:

- temperature (XLM-R, Conneau et al. 2020): p_i = q_i^alpha / sum_j q_j^alpha with q_i the source's
  share of the side's tokens, each term times the source's weight;
- unimax (Chung et al. 2023, "UniMax"): the side's token budget over the whole schedule shared
  uniformly (in proportion to the weights), smallest sources first, each source capped at N epochs
  and what a capped source leaves redistributed over the rest;
- weights: p_i = w_i / sum_j w_j.

Which source a row is drawn from is a pure function of the seed, the step and the row, like the
replay split, so a resumed run draws what an uninterrupted one would. A side with one source
makes no draw at all, so a recipe without lists trains exactly as before.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field
from typing import Any

from langadapt.train.config import MixingConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Source:
    """One source as the mix sees it: its stream's key, language, side and size."""

    name: str  # the key of its token stream (its language for a single source)
    language: str
    role: str  # target or replay
    tokens: int  # tokens of one epoch: every document plus its separator
    weight: float = 1.0


# -- the rules -------------------------------------------------------------------------------------


def temperature_shares(tokens: list[int], alpha: float, weights: list[float] | None = None) -> list[float]:
    """XLM-R's temperature sampling: p_i proportional to w_i * (n_i / sum n)^alpha."""
    weights = weights or [1.0] * len(tokens)
    total = sum(tokens)
    raw = [w * (n / total) ** alpha for n, w in zip(tokens, weights)]
    return [r / sum(raw) for r in raw]


def unimax_shares(
    tokens: list[int], budget: float, max_epochs: float, weights: list[float] | None = None
) -> list[float]:
    """UniMax (Chung et al. 2023, Algorithm 1) over sources instead of languages.

    Sources are visited from the smallest capacity per weight (n_i / w_i) up; each gets its
    weighted share of the budget still unallocated, at most `max_epochs` epochs of itself; what
    a capped source does not take stays in the budget for the sources after it. When every
    source is capped and budget remains, the remainder is shared by size (the caps are then
    exceeded: there is not enough text for the schedule). Returns each source's fraction of the budget.
    """
    weights = weights or [1.0] * len(tokens)
    if budget <= 0:  # nothing is drawn from this side: the weights alone
        return weight_shares(weights)
    order = sorted(range(len(tokens)), key=lambda i: tokens[i] / weights[i])
    alloc = [0.0] * len(tokens)
    left, weight_left = float(budget), sum(weights)
    for i in order:
        share = left * weights[i] / weight_left
        alloc[i] = min(share, max_epochs * tokens[i])
        left -= alloc[i]
        weight_left -= weights[i]
    if left > 1e-9 * budget:  # every source capped: the rest by size
        total = sum(tokens)
        alloc = [a + left * n / total for a, n in zip(alloc, tokens)]
    return [a / sum(alloc) for a in alloc]


def weight_shares(weights: list[float]) -> list[float]:
    return [w / sum(weights) for w in weights]


# -- the plan of a run -----------------------------------------------------------------------------


@dataclass
class MixPlan:
    """Every source's share of its side, and the draw of each row of a step."""

    sources: list[Source]
    shares: dict[str, float]  # a source's probability within its side
    replay_ratio: float
    method: str
    warn_epochs: float = 20.0
    planned_tokens: dict[str, float] = field(default_factory=dict)  # expected over the whole schedule

    def side(self, role: str) -> list[Source]:
        return [s for s in self.sources if s.role == role]

    @property
    def mixed(self) -> bool:
        return any(len(self.side(r)) > 1 for r in ("target", "replay"))

    def row_sources(self, is_replay: list[bool], step: int, seed: int) -> list[str]:
        """The source of each row of a step, given which rows are replay (a pure function of seed and step)."""
        target, replay = self.side("target"), self.side("replay")
        rng = random.Random(seed * 15_485_863 + step * 7_927 + 1)  # apart from the replay split's own draws
        out = []
        for r in is_replay:
            side = replay if r else target
            u = rng.random()  # one draw per row whatever its side, so every row's draw is fixed by its index
            out.append(side[0].name if len(side) == 1 else _pick(side, [self.shares[s.name] for s in side], u))
        return out

    def planned_epochs(self) -> dict[str, float]:
        return {s.name: self.planned_tokens.get(s.name, 0.0) / s.tokens for s in self.sources}

    def record(self) -> dict[str, Any]:
        """The plan as the summary stores it (epochs seen are added when training ends)."""
        epochs = self.planned_epochs()
        return {
            "method": self.method if self.mixed else "single source per side",
            "replay_ratio": self.replay_ratio,
            "warn_epochs": self.warn_epochs,
            "sources": [
                {
                    "name": s.name,
                    "language": s.language,
                    "role": s.role,
                    "weight": s.weight,
                    "tokens": s.tokens,
                    "share_of_side": round(self.shares[s.name], 6),
                    "planned_tokens": round(self.planned_tokens.get(s.name, 0.0)),
                    "planned_epochs": round(epochs[s.name], 4),
                }
                for s in self.sources
            ],
        }


def _pick(side: list[Source], probs: list[float], u: float) -> str:
    acc = 0.0
    for s, p in zip(side, probs):
        acc += p
        if u < acc:
            return s.name
    return side[-1].name  # rounding: u just under 1


def plan_mix(sources: list[Source], mixing: MixingConfig, replay_ratio: float, schedule_tokens: int) -> MixPlan:
    """Each source's share of its side under `mixing`, and the tokens the schedule is expected to draw from it.

    `schedule_tokens`: every training token of the schedule (steps x sequences x sequence length);
    a side's budget is its replay-ratio share of them.
    """
    shares: dict[str, float] = {}
    planned: dict[str, float] = {}
    for role, fraction in (("target", 1.0 - replay_ratio), ("replay", replay_ratio)):
        side = [s for s in sources if s.role == role]
        if not side:
            continue
        budget = schedule_tokens * fraction
        tokens, weights = [s.tokens for s in side], [s.weight for s in side]
        if len(side) == 1:
            p = [1.0]
        elif mixing.method == "temperature":
            p = temperature_shares(tokens, mixing.alpha, weights)
        elif mixing.method == "unimax":
            p = unimax_shares(tokens, budget, mixing.unimax_epochs, weights)
        else:
            p = weight_shares(weights)
        for s, share in zip(side, p):
            shares[s.name] = share
            planned[s.name] = budget * share
    return MixPlan(sources, shares, replay_ratio, mixing.method, mixing.warn_epochs, planned)


def repeat_warnings(epochs: dict[str, float], threshold: float, when: str) -> list[str]:
    """One sentence per source repeated for more than `threshold` epochs ('planned' or 'seen')."""
    return [
        f"source '{name}' is {when} for {n:.1f} epochs, more than train.mixing.warn_epochs ({threshold:g}): "
        "repeated this often, its text adds little and invites memorising; give more text, lower its weight "
        "or share, or train fewer steps"
        for name, n in epochs.items()
        if n > threshold
    ]
