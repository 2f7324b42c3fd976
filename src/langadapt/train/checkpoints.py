"""Resumable checkpoints of a training run: trainable weights, optimizer, RNG and data position.

Written atomically by rank 0 (a temporary folder renamed into place), read back by every
process onto whatever device and process count the resumed run has.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from langadapt.rundir import read_json, write_json
from langadapt.train.data import TokenStream
from langadapt.train.processes import Processes


def _rng_state() -> dict[str, Any]:
    import torch

    state = {"torch_rng": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda_rng"] = torch.cuda.get_rng_state()
    return state


def save_checkpoint(
    out: Path,
    step: int,
    model: Any,
    opt: Any,
    stream_states: dict[str, dict[str, Any]],
    keep: int,
    procs: Processes | None = None,
    stopped_early: bool = False,
) -> None:
    """Trainable weights (safetensors), optimizer and RNG (tensors only), data position (JSON), atomically.

    Everything is stored on the CPU as full tensors, so a run may resume on another device,
    with another number of processes, sharded or not. Every process calls it (sharded
    weights are gathered for rank 0, which alone writes) and returns once the files exist.
    `stopped_early` marks the checkpoint of an early stop: training is complete there.
    """
    import torch
    from safetensors.torch import save_file

    procs = procs or Processes()
    weights, optimizer = procs.full_state(model, opt)
    if procs.is_main:
        ckdir = out / "checkpoints"
        final = ckdir / f"step-{step:06d}"
        tmp = ckdir / f".step-{step:06d}.tmp"
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        save_file(weights, tmp / "trainable.safetensors")
        torch.save({"optimizer": optimizer, **_rng_state()}, tmp / "optimizer.pt")
        state = {"step": step, "streams": stream_states, **({"stopped_early": True} if stopped_early else {})}
        write_json(tmp / "state.json", state)
        tmp.rename(final)
        for old in sorted(ckdir.glob("step-*"))[:-keep]:
            shutil.rmtree(old)
    procs.wait()


def latest_checkpoint(out: Path) -> Path | None:
    cks = sorted((out / "checkpoints").glob("step-*")) if (out / "checkpoints").is_dir() else []
    return cks[-1] if cks else None


def stopped_early(ck: Path) -> bool:
    """Whether a checkpoint is where training stopped early (the training it belongs to is complete)."""
    return bool(read_json(ck / "state.json").get("stopped_early"))


def load_checkpoint(
    ck: Path, model: Any, opt: Any, streams: dict[str, TokenStream], procs: Processes | None = None
) -> int:
    """Restore a checkpoint onto the model's current device (which may differ from the one that wrote it).

    Every process calls it. Under sharding rank 0 reads the full tensors and the engine sends
    each process its shards; the others map the optimizer file only for its RNG state.
    """
    import torch
    from safetensors.torch import load_file

    procs = procs or Processes()
    reads = procs.is_main or procs.mesh is None
    weights = load_file(ck / "trainable.safetensors") if reads else {}
    blob = torch.load(ck / "optimizer.pt", map_location="cpu", weights_only=True, mmap=not reads)
    procs.load_full_state(model, opt, weights, blob["optimizer"] if reads else {})
    torch.set_rng_state(blob["torch_rng"])
    if "cuda_rng" in blob and torch.cuda.is_available():
        torch.cuda.set_rng_state(blob["cuda_rng"])
    meta = read_json(ck / "state.json")
    for k, s in streams.items():
        s.restore(meta["streams"][k])
    return int(meta["step"])
