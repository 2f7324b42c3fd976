"""What training did, phase by phase: one description shared by the report page and the model card.

It reads the recipe's train section (the schedule) and `train/summary.json` (what was
trained: an early stop trains fewer steps than scheduled), so a two-phase run is described
as two phases, each with its method, steps, learning rate, embedding rows and trainable
parameters, never as the recipe's top-level `train.method` for every step. Plain text: the
page escapes it, the card writes it as Markdown.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from langadapt.train.config import TrainConfig

HEADER = ["phase", "method", "steps", "learning rate", "embedding rows trained", "trainable parameters", "loss"]


@dataclass(frozen=True)
class Phase:
    name: str
    method: str
    steps: int  # trained
    scheduled_steps: int
    lr: float
    rows: str  # the embedding rows that trained, in words
    trainable_parameters: int | None
    total_parameters: int | None
    loss: str  # fused, or plain (reason); "" when the summary does not say


def phases(train: "TrainConfig", summary: dict[str, Any]) -> list[Phase]:
    """Each phase of the schedule with what the summary says it trained (one phase without train.phases)."""
    done = summary.get("phases") or [summary]
    out = []
    if train.phases:
        schedule = [
            (p.name or p.method, p.method, p.max_steps, p.lr or train.lr, p.embeddings or train.embeddings)
            for p in train.phases
        ]
    else:
        schedule = [(train.method, train.method, train.max_steps, train.lr, train.embeddings)]
    for i, (name, method, scheduled, lr, embeddings) in enumerate(schedule):
        s = done[i] if i < len(done) else {}
        out.append(
            Phase(
                name=name,
                method=method,
                steps=int(s.get("steps", scheduled)),
                scheduled_steps=int(s.get("scheduled_steps", scheduled)),
                lr=float(s.get("lr", lr)),
                rows=_rows(s, embeddings),
                trainable_parameters=s.get("trainable_parameters"),
                total_parameters=s.get("total_parameters"),
                loss=str(s.get("loss", "")),
            )
        )
    return out


def _rows(s: dict[str, Any], embeddings: str) -> str:
    trained, total = s.get("embedding_rows_trained"), s.get("embedding_rows")
    if trained is None or total is None:  # a summary from before rows were counted: the recipe's setting
        return {"all": "every row", "new": "new rows", "none": "none"}.get(embeddings, embeddings)
    if trained == total:
        return f"every row ({total:,})"
    return f"{trained:,} of {total:,}" if trained else "none"


def _steps(p: Phase) -> str:
    if p.steps < p.scheduled_steps:
        return f"{p.steps} of {p.scheduled_steps} (stopped early)"
    return str(p.steps)


def _params(p: Phase) -> str:
    if p.trainable_parameters is None or p.total_parameters is None:
        return "-"
    return f"{p.trainable_parameters / 1e6:.2f}M of {p.total_parameters / 1e6:.1f}M"


def phase_table(train: "TrainConfig", summary: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """(header, one row per phase): name, method, steps trained, learning rate, embedding rows, parameters, loss."""
    rows = [
        [p.name, p.method, _steps(p), f"{p.lr:g}", p.rows, _params(p), p.loss or "-"] for p in phases(train, summary)
    ]
    return HEADER, rows


def training_sentence(train: "TrainConfig", summary: dict[str, Any]) -> str:
    """'lora for 40 steps at lr 0.001', or each phase in turn: what was trained, in one sentence."""
    parts = []
    for p in phases(train, summary):
        steps = (
            f"{p.steps} steps"
            if p.steps == p.scheduled_steps
            else f"{p.steps} of {p.scheduled_steps} steps (stopped early)"
        )
        parts.append(
            f"{p.method} for {steps} at lr {p.lr:g}"
            if not train.phases
            else f"{p.name} ({p.method}, {steps}, lr {p.lr:g})"
        )
    if not train.phases:
        return parts[0]
    total = sum(p.steps for p in phases(train, summary))
    return f"{len(parts)} phases, {total} steps: " + ", then ".join(parts)


def _speed(s: dict[str, Any]) -> str | None:
    """'1,234 tokens/s (0.255 GFLOP each), 0.000315 model TFLOP/s per device, MFU 23.1%' for one phase, or None."""
    seconds = s.get("train_step_seconds")
    if not seconds or "model_tflops" not in s:
        return None
    parts = []
    if s.get("tokens_this_session"):
        parts.append(f"{s['tokens_this_session'] / seconds:,.0f} tokens/s")
    if s.get("model_flops_per_token"):
        parts[-1:] = [f"{parts[-1]} ({s['model_flops_per_token'] / 1e9:.3g} GFLOP each)" if parts else ""]
    parts.append(f"{s['model_tflops']:.3g} model TFLOP/s per device")
    if "mfu" in s:
        parts.append(f"MFU {100 * s['mfu']:.1f}%")
    return ", ".join(p for p in parts if p)


def throughput_sentence(train: "TrainConfig", summary: dict[str, Any]) -> str:
    """How fast the training steps ran: tokens/s, model TFLOP/s and MFU, each phase in turn ('' without figures).

    Over the optimizer steps of the session that finished each phase (data waits, held-out
    evaluation and checkpoints excluded); MFU is named with the peak it is against (on a CPU,
    its measured matmul peak), or said to be missing where the device's peak is not known.
    """
    done = summary.get("phases") or [summary]
    names = [p.name for p in phases(train, summary)]
    speeds = [(names[i] if i < len(names) else str(i + 1), _speed(s)) for i, s in enumerate(done)]
    if not any(speed for _, speed in speeds):
        return ""
    if len(done) == 1:
        text = f"Training steps ran at {speeds[0][1]}"
    else:
        text = "Training steps ran at " + "; ".join(f"{n}: {speed or 'not measured'}" for n, speed in speeds)
    against = {s.get("mfu_against") for s in done if _speed(s)}
    if against == {None}:
        text += " (MFU not reported: no peak FLOP/s is known for this device; set train.peak_tflops)"
    elif len(against) == 1:
        label = against.pop()
        text += f" {label}" if len(done) == 1 else f" (each MFU {label})"
    else:
        text += " (each phase's MFU against the peak of the device that trained it)"
    return text + "."


MIX_HEADER = [
    "source",
    "side",
    "language",
    "weight",
    "share of side",
    "tokens per epoch",
    "epochs planned",
    "epochs seen",
]


def mix_table(summary: dict[str, Any]) -> tuple[list[str], list[list[str]]] | None:
    """(header, one row per source) of the training mix in `train/summary.json`; None for a run without one."""
    mix = summary.get("mix")
    if not mix:
        return None
    rows = [
        [
            s["name"],
            s["role"],
            s["language"],
            f"{s['weight']:g}",
            f"{100 * s['share_of_side']:.1f}%",
            f"{s['tokens']:,}",
            f"{s['planned_epochs']:.2f}",
            f"{s['epochs_seen']:.2f}" if "epochs_seen" in s else "-",
        ]
        for s in mix["sources"]
    ]
    return MIX_HEADER, rows


def mix_sentence(summary: dict[str, Any]) -> str:
    """How the sources were mixed, in words ('' without a mix record)."""
    mix = summary.get("mix")
    if not mix:
        return ""
    method = mix["method"]
    how = (
        "one source per side"
        if method == "single source per side"
        else f"sources of a side mixed by {method} (train.mixing)"
    )
    return (
        f"Training drew {100 * (1 - mix['replay_ratio']):.0f}% of its sequences from the target side and "
        f"{100 * mix['replay_ratio']:.0f}% from the replay side, {how}; an epoch is counted in the tokens handed "
        f"out over the source's tokens (one separator per document included); warned past "
        f"{mix['warn_epochs']:g} epochs (train.mixing.warn_epochs)."
    )
