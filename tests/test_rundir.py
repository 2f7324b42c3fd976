"""The run directory: atomic publication, skip on unchanged inputs, resumable partial output."""

from __future__ import annotations

import pytest

from langadapt.rundir import RunDir, fingerprint


def test_stage_publishes_only_on_success(tmp_path):
    rd = RunDir(tmp_path)
    with pytest.raises(RuntimeError):
        with rd.stage("corpus", "fp1", {}) as ctx:
            (ctx.out / "half.txt").write_text("x")
            raise RuntimeError("boom")
    assert not rd.path("corpus").exists() and rd.partial("corpus").exists()
    assert rd.manifest()["stages"]["corpus"]["status"] == "failed"
    assert not rd.is_complete("corpus")

    with rd.stage("corpus", "fp1", {"a": 1}) as ctx:
        assert ctx.resuming  # same fingerprint: the partial folder is handed back
        assert (ctx.out / "half.txt").exists()
        (ctx.out / "out.txt").write_text("done")
    assert rd.is_complete("corpus", "fp1") and not rd.is_complete("corpus", "fp2")
    assert (rd.path("corpus") / "out.txt").read_text() == "done"
    assert not rd.partial("corpus").exists()
    entry = rd.manifest()["stages"]["corpus"]
    assert entry["status"] == "complete" and "out.txt" in entry["outputs"] and entry["versions"]["torch"]


def test_changed_fingerprint_discards_partial_output(tmp_path):
    rd = RunDir(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        with rd.stage("train", "old", {}) as ctx:
            (ctx.out / "ckpt").write_text("x")
            raise KeyboardInterrupt
    assert rd.manifest()["stages"]["train"]["status"] == "interrupted"
    with rd.stage("train", "new", {}) as ctx:
        assert not ctx.resuming and not (ctx.out / "ckpt").exists()


def test_invalidate_from_removes_later_markers(tmp_path):
    rd = RunDir(tmp_path)
    for stage in ("corpus", "tokenizer", "init"):
        with rd.stage(stage, "fp", {}):
            pass
    rd.invalidate_from("tokenizer")
    assert rd.is_complete("corpus") and not rd.is_complete("tokenizer") and not rd.is_complete("init")
    assert rd.path("init").name == "model-init"


def test_fingerprint_is_stable_and_sensitive():
    assert fingerprint({"a": 1, "b": [1, 2]}) == fingerprint({"b": [1, 2], "a": 1})
    assert fingerprint({"a": 1}) != fingerprint({"a": 2})
