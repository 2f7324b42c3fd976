"""Data-parallel training on CPU (gloo): 2 processes follow the loss curve of 1 process with the
same global batch, and a run killed under 2 processes resumes and finishes with 1."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import target_docs, tiny_recipe_dict

WORKER = Path(__file__).with_name("train_ddp_worker.py")


def _train(tmp_path: Path, spec: dict, name: str, processes: int, expect_rc: int = 0) -> list[dict]:
    spec_file = tmp_path / f"{name}.json"
    spec_file.write_text(json.dumps(spec))
    if processes == 1:
        cmd = [sys.executable, str(WORKER), str(spec_file)]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
        cmd += [str(WORKER), str(spec_file)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == expect_rc or (expect_rc and proc.returncode != 0), proc.stderr[-3000:]
    metrics = Path(spec["out"]) / "metrics.jsonl"
    return [json.loads(line) for line in metrics.read_text().splitlines()]


@pytest.mark.slow
def test_two_processes_match_one_then_resume_with_one(corpus_files, tiny_model, tmp_path):
    recipe = tiny_recipe_dict(
        corpus_files,
        tiny_model,
        tmp_path / "run",
        train={"max_steps": 6, "batch_size": 4, "micro_batch_size": 1, "save_every": 2, "replay_ratio": 0.0},
    )
    texts = [d["text"] for d in target_docs()]
    spec = {"model": str(tiny_model), "texts": texts, "recipe": recipe}

    one = _train(tmp_path, {**spec, "out": str(tmp_path / "one")}, "one", 1)
    two = _train(tmp_path, {**spec, "out": str(tmp_path / "two")}, "two", 2)
    assert [r["step"] for r in two] == [r["step"] for r in one] == list(range(1, 7))
    for a, b in zip(one, two):
        assert b["loss"] == pytest.approx(a["loss"], abs=2e-3), (a, b)

    # killed right after checkpoint 4 under 2 processes, resumed and finished by 1
    out = tmp_path / "killed"
    _train(tmp_path, {**spec, "out": str(out), "die_after": 4}, "killed", 2, expect_rc=1)
    assert (out / "checkpoints" / "step-000004").is_dir() and not (out / "summary.json").exists()
    resumed = _train(tmp_path, {**spec, "out": str(out)}, "resumed", 1)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["resumed_from_step"] == 4 and summary["processes"] == 1
    assert [r["step"] for r in resumed] == list(range(1, 7))
    for a, b in zip(one, resumed):
        assert b["loss"] == pytest.approx(a["loss"], abs=2e-3), (a, b)
