"""Where each step's metrics go: metrics.jsonl always; TensorBoard and Weights & Biases when asked.

`train.log_to: [tensorboard, wandb]`. Both are optional installs (`pip install
'langadapt[tensorboard]'`, `'langadapt[wandb]'`); a missing one is a validation error, not
a surprise at step 1000. Weights & Biases runs offline unless the user has logged in
(WANDB_API_KEY set or WANDB_MODE chosen), so a machine without network never blocks on it.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path
from typing import Any

SINKS = {"tensorboard": ("tensorboard", "tensorboard"), "wandb": ("wandb", "wandb")}  # name: (module, extra)


def sink_problems(names: tuple[str, ...]) -> list[str]:
    p = []
    for name in names:
        if name not in SINKS:
            p.append(f"train.log_to: '{name}' is not one of {', '.join(SINKS)}")
        elif importlib.util.find_spec(SINKS[name][0]) is None:
            p.append(f"train.log_to: {name} is not installed: pip install 'langadapt[{SINKS[name][1]}]'")
    return p


class MetricsLog:
    """Appends one JSON line per step to metrics.jsonl and mirrors the numbers to the asked-for trackers."""

    def __init__(self, path: Path, sinks: tuple[str, ...], run_name: str, config: dict[str, Any]) -> None:
        self.path = path
        self._writers: list[Any] = []
        if "tensorboard" in sinks:
            from torch.utils.tensorboard import SummaryWriter

            self._writers.append(("tensorboard", SummaryWriter(log_dir=str(path.parent / "tensorboard"))))
        if "wandb" in sinks:
            import wandb

            if not os.environ.get("WANDB_API_KEY") and "WANDB_MODE" not in os.environ:
                os.environ["WANDB_MODE"] = "offline"  # no account, no network: keep the run on disk
            run = wandb.init(project="langadapt", name=run_name, dir=str(path.parent), config=config, resume="allow")
            self._writers.append(("wandb", run))

    def write(self, row: dict[str, Any]) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")
        numbers = {k: v for k, v in row.items() if isinstance(v, (int, float)) and k != "step"}
        for kind, writer in self._writers:
            if kind == "tensorboard":
                for key, value in numbers.items():
                    writer.add_scalar(f"train/{key}", value, row["step"])
            else:
                writer.log(numbers, step=row["step"])

    def close(self) -> None:
        for kind, writer in self._writers:
            if kind == "tensorboard":
                writer.close()
            else:
                writer.finish()
