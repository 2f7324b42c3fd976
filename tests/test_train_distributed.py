"""Many processes on CPU (gloo): data parallel (DDP) and sharded (FSDP2 full and hybrid, DeepSpeed ZeRO 1-3).

2 processes follow the loss curve of 1 process with the same global batch, whatever the
strategy; a run killed under 2 processes resumes and finishes with 1; a 1-process
checkpoint resumes sharded, and the checkpoints are the same files either way. The fast
tests check that what cannot run is refused before any work.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import target_docs, tiny_recipe_dict

from langadapt.errors import ConfigError

WORKER = Path(__file__).with_name("train_ddp_worker.py")
# fp32: the runs compared here compute the same thing; in bf16 FSDP and DeepSpeed hold bf16 weights for the
# passes, which a single process under autocast does not (test_sharded_state_in_bf16_... covers bf16)
TRAIN = {
    "max_steps": 6,
    "batch_size": 4,
    "micro_batch_size": 1,
    "save_every": 2,
    "replay_ratio": 0.0,
    "precision": "fp32",
}
NEW_IDS = [300, 301, 302, 303]  # rows that train beside LoRA, through the fused loss's tied head
TOLERANCE = 2e-3


needs_deepspeed = pytest.mark.skipif(
    importlib.util.find_spec("deepspeed") is None, reason="DeepSpeed is not installed (langadapt[deepspeed])"
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _train(tmp_path: Path, spec: dict, name: str, processes: int, nodes: int = 1, expect_rc: int = 0) -> list[dict]:
    """Run the worker as 1 plain process, or under torchrun: `nodes` launchers of processes/nodes each."""
    spec_file = tmp_path / f"{name}.json"
    spec_file.write_text(json.dumps(spec))
    run = [sys.executable, "-m", "torch.distributed.run"]
    if processes == 1:
        cmds = [[sys.executable, str(WORKER), str(spec_file)]]
    elif nodes == 1:
        cmds = [[*run, "--standalone", f"--nproc_per_node={processes}", str(WORKER), str(spec_file)]]
    else:  # several "nodes" on this machine: one launcher each, meeting at a static rendezvous
        port, per_node = _free_port(), processes // nodes
        cmds = [
            [*run, f"--nnodes={nodes}", f"--node_rank={n}", f"--nproc_per_node={per_node}"]
            + ["--master_addr=127.0.0.1", f"--master_port={port}", str(WORKER), str(spec_file)]
            for n in range(nodes)
        ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    procs = [subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) for c in cmds]
    for proc in procs:
        _, err = proc.communicate(timeout=600)
        ranks = "\n".join(line for line in err.splitlines() if line.startswith("[rank"))  # the workers' tracebacks
        assert proc.returncode == expect_rc or (expect_rc and proc.returncode != 0), (ranks or err)[-3000:]
    metrics = Path(spec["out"]) / "metrics.jsonl"
    return [json.loads(line) for line in metrics.read_text().splitlines()]


def _same_losses(expected: list[dict], got: list[dict]) -> None:
    assert [r["step"] for r in got] == [r["step"] for r in expected][: len(got)]
    for a, b in zip(expected, got):
        assert b["loss"] == pytest.approx(a["loss"], abs=TOLERANCE), (a, b)


def _summary(out: Path) -> dict:
    return json.loads((out / "summary.json").read_text())


@pytest.fixture(scope="module")
def specs(corpus_files, tiny_model, tmp_path_factory) -> dict[str, dict]:
    """Worker specs: LoRA with trainable new rows, and full fine-tuning (the tied head trains)."""
    texts = [d["text"] for d in target_docs()]
    out = {}
    for method, extra in (("lora", {"new_ids": NEW_IDS}), ("full", {})):
        run_dir = tmp_path_factory.mktemp(method) / "run"
        recipe = tiny_recipe_dict(corpus_files, tiny_model, run_dir, train={**TRAIN, "method": method})
        out[method] = {"model": str(tiny_model), "texts": texts, "recipe": recipe, **extra}
    return out


@pytest.fixture(scope="module")
def one_process(specs, tmp_path_factory) -> dict[str, tuple[Path, list[dict]]]:
    """The 1-process runs every multi-process run is compared with: (output folder, metrics) per method."""
    tmp = tmp_path_factory.mktemp("one")
    return {
        method: (tmp / method, _train(tmp, {**spec, "out": str(tmp / method)}, method, 1))
        for method, spec in specs.items()
    }


def _with_sharding(spec: dict, sharding: str) -> dict:
    recipe = {**spec["recipe"], "train": {**spec["recipe"]["train"], "sharding": sharding}}
    return {**spec, "recipe": recipe}


@pytest.mark.slow
def test_two_processes_match_one_then_resume_with_one(specs, one_process, tmp_path):
    spec, (_, one) = specs["lora"], one_process["lora"]
    two = _train(tmp_path, {**spec, "out": str(tmp_path / "two")}, "two", 2)
    assert [r["step"] for r in two] == list(range(1, 7))
    _same_losses(one, two)
    assert _summary(tmp_path / "two")["sharding"] == "none"

    # killed right after checkpoint 4 under 2 processes, resumed and finished by 1
    out = tmp_path / "killed"
    _train(tmp_path, {**spec, "out": str(out), "die_after": 4}, "killed", 2, expect_rc=1)
    assert (out / "checkpoints" / "step-000004").is_dir() and not (out / "summary.json").exists()
    resumed = _train(tmp_path, {**spec, "out": str(out)}, "resumed", 1)
    summary = _summary(out)
    assert summary["resumed_from_step"] == 4 and summary["processes"] == 1
    assert [r["step"] for r in resumed] == list(range(1, 7))
    _same_losses(one, resumed)


@pytest.mark.slow
@pytest.mark.parametrize("sharding", ["full", pytest.param("zero3", marks=needs_deepspeed)])
def test_sharding_the_weights_matches_one_process_and_resumes_its_checkpoint(specs, one_process, tmp_path, sharding):
    """Full fine-tuning (the fused loss reads and trains the tied head) with the weights themselves split
    over 2 processes: FSDP2 full sharding, DeepSpeed ZeRO-3."""
    spec, (one_out, one) = _with_sharding(specs["full"], sharding), one_process["full"]
    sharded = _train(tmp_path, {**spec, "out": str(tmp_path / "sharded")}, "sharded", 2)
    assert [r["step"] for r in sharded] == list(range(1, 7))
    _same_losses(one, sharded)
    assert _summary(tmp_path / "sharded")["sharding"] == sharding
    _same_checkpoint(one_out / "checkpoints" / "step-000004", tmp_path / "sharded" / "checkpoints" / "step-000004")
    _same_final_weights(one_out, tmp_path / "sharded")

    # the 1-process run's checkpoint 4, resumed by 2 sharded processes
    out = tmp_path / "from-one"
    shutil.copytree(one_out, out)
    shutil.rmtree(out / "checkpoints" / "step-000006")
    (out / "summary.json").unlink()
    resumed = _train(tmp_path, {**spec, "out": str(out)}, "from-one", 2)
    summary = _summary(out)
    assert summary["resumed_from_step"] == 4 and summary["sharding"] == sharding
    _same_losses(one, resumed)


@pytest.mark.slow
def test_mlm_heldout_pseudo_bits_per_byte_runs_through_the_sharded_engine(corpus_files, tiny_encoder, tmp_path):
    """An encoder trained under FSDP full sharding over 2 processes: its held-out figure during training is the
    eval stage's pseudo bits per byte of the weights it hands back (the head gathered through the engine)."""
    import torch
    from safetensors.torch import load_file

    from langadapt.models.loading import load_model, load_tokenizer
    from langadapt.recipe import Recipe
    from langadapt.scoring.pppl import score
    from langadapt.train.data import heldout_documents

    texts = [d["text"] for d in target_docs()]
    train = {**TRAIN, "method": "full", "objective": "mlm", "max_steps": 2, "eval_every": 2, "eval_tokens": 96}
    recipe = tiny_recipe_dict(
        corpus_files, tiny_encoder, tmp_path / "run", tokenizer={"method": "keep"}, train={**train, "sharding": "full"}
    )
    spec = {"model": str(tiny_encoder), "texts": texts[8:], "heldout": texts[:8], "recipe": recipe}
    rows = _train(tmp_path, {**spec, "out": str(tmp_path / "mlm")}, "mlm", 2)
    assert _summary(tmp_path / "mlm")["sharding"] == "full" and "bpb_nya" not in rows[-1]
    model, tok = load_model(str(tiny_encoder)), load_tokenizer(str(tiny_encoder))
    model.load_state_dict(load_file(tmp_path / "mlm" / "final.safetensors"), strict=False)
    model.tie_weights()
    with torch.no_grad():
        expected = score(model, tok, heldout_documents(texts[:8], tok, 96), Recipe.from_dict(recipe).eval)
    assert rows[-1]["pseudo_bpb_nya"] == pytest.approx(expected["bits_per_byte"], abs=5e-4)


SHARD_WORKER = Path(__file__).with_name("shard_worker.py")


@pytest.mark.slow
@pytest.mark.parametrize("sharding", ["full", pytest.param("zero3", marks=needs_deepspeed)])
def test_sharded_state_in_bf16_stays_fp32_and_is_gathered_on_rank_0_alone(tiny_model, tmp_path, sharding):
    """2 processes in bf16: FSDP2 gathers bf16 weights for the passes (its policy: bf16 parameters, fp32
    reduction) while the sharded weights stay fp32; DeepSpeed runs its bf16 mode with bf16 communication and
    fp32 masters equal to the fp32 weights. A checkpoint's full tensors reach rank 0 alone: rank 1's
    `full_state` holds none, and rank 0's equal the initial weights, and after a step DeepSpeed's own
    all-reduced weights and moments. Under FSDP rank 1 builds its model on the meta device (no weights) and
    receives rank 0's: every weight and buffer, and the losses, are then those of the model loaded whole."""
    spec = tmp_path / "spec.json"
    spec.write_text(
        json.dumps(
            {"model": str(tiny_model), "sharding": sharding, "precision": "bf16", "out": str(tmp_path), "meta": True}
        )
    )
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run([*cmd, str(SHARD_WORKER), str(spec)], capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    main, other = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    if sharding == "full":
        assert (main["meta"], other["meta"]) == (False, True)
        for seen in (main, other):
            assert seen["dtensors"] and seen["sharded"] == ["DTensor:torch.float32"]
            assert seen["policy"] == ["torch.bfloat16", "torch.float32"]
            assert seen["forward_read"] == ["torch.bfloat16"]  # the gathered weights a pass reads
            assert seen["weights_match"] and seen["buffers_match"] and seen["loss_match"]
            assert seen["fused"] is True and seen["loss_choice"] == "fused"
    else:
        assert not main["meta"] and not other["meta"]  # DeepSpeed partitions a model it is given whole
        for seen in (main, other):
            assert seen["ds_config"] == {"bf16": {"enabled": True}, "communication_data_type": "bf16"}
        assert main["after"]["weights_equal"] and main["after"]["moments_equal"]
        assert main["after"]["tensors"] > main["before"]["tensors"]  # the moments, after a step
    assert main["before"]["initial_equal"] and main["before"]["tensors"] > 0
    assert other["before"] == other["after"] == {"tensors": 0, "elements": 0}


def _same_checkpoint(a: Path, b: Path) -> None:
    """Two checkpoints of the same step hold the same tensors in the same layout."""
    import torch
    from safetensors.torch import load_file

    wa, wb = load_file(a / "trainable.safetensors"), load_file(b / "trainable.safetensors")
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wb[k], wa[k], atol=1e-4, rtol=1e-3)
    oa = torch.load(a / "optimizer.pt", weights_only=True)["optimizer"]
    ob = torch.load(b / "optimizer.pt", weights_only=True)["optimizer"]
    assert oa["param_groups"] == ob["param_groups"]
    assert oa["state"].keys() == ob["state"].keys()
    for i, state in oa["state"].items():
        assert state.keys() == ob["state"][i].keys()
        for k, v in state.items():
            torch.testing.assert_close(ob["state"][i][k], v, atol=1e-5, rtol=1e-2)


def _same_final_weights(a: Path, b: Path) -> None:
    """The trained weights two runs hand back to their caller."""
    import torch
    from safetensors.torch import load_file

    wa, wb = load_file(a / "final.safetensors"), load_file(b / "final.safetensors")
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wb[k], wa[k], atol=1e-4, rtol=1e-3)


@pytest.mark.slow
def test_hybrid_sharding_over_two_nodes_resumes_with_one_process(specs, one_process, tmp_path):
    """2 launchers of 1 process each (nodes of 1): replicated across nodes, sharded within; killed, resumed by 1."""
    spec, (_, one) = _with_sharding(specs["lora"], "hybrid"), one_process["lora"]
    out = tmp_path / "hybrid"
    before = _train(tmp_path, {**spec, "out": str(out), "die_after": 4}, "hybrid", 2, nodes=2, expect_rc=1)
    assert [r["step"] for r in before] == [1, 2, 3, 4] and not (out / "summary.json").exists()
    _same_losses(one, before)
    resumed = _train(tmp_path, {**spec, "out": str(out)}, "resumed", 1)
    summary = _summary(out)
    assert summary["resumed_from_step"] == 4 and summary["processes"] == 1 and summary["sharding"] == "none"
    _same_losses(one, resumed)


@pytest.mark.slow
@needs_deepspeed
@pytest.mark.parametrize("stage", ["zero1", "zero2"])
def test_zero_matches_one_process_then_resumes_with_one(specs, one_process, tmp_path, stage):
    """LoRA and new rows under DeepSpeed ZeRO over 2 processes; killed after checkpoint 4, finished by 1."""
    spec, (one_out, one) = _with_sharding(specs["lora"], stage), one_process["lora"]
    out = tmp_path / stage
    before = _train(tmp_path, {**spec, "out": str(out), "die_after": 4}, stage, 2, expect_rc=1)
    assert [r["step"] for r in before] == [1, 2, 3, 4] and not (out / "summary.json").exists()
    assert f"2 process(es), sharding {stage}" in (out / "log-rank0.txt").read_text()
    _same_losses(one, before)
    _same_checkpoint(one_out / "checkpoints" / "step-000004", out / "checkpoints" / "step-000004")
    resumed = _train(tmp_path, {**spec, "out": str(out)}, "resumed", 1)
    summary = _summary(out)
    assert summary["resumed_from_step"] == 4 and summary["processes"] == 1 and summary["sharding"] == "none"
    _same_losses(one, resumed)


# -- refused before any work ----------------------------------------------------------------------


def _problems(corpus_files, tiny_model, tmp_path, **train) -> list[str]:
    from langadapt.recipe import Recipe

    with pytest.raises(ConfigError) as err:
        Recipe.from_dict(tiny_recipe_dict(corpus_files, tiny_model, tmp_path / "run", train=train))
    return err.value.problems


def test_unknown_sharding_is_refused(corpus_files, tiny_model, tmp_path):
    problems = _problems(corpus_files, tiny_model, tmp_path, sharding="zero4")
    assert any(
        p.startswith("train.sharding: 'zero4' is not one of none, full, hybrid, zero1, zero2, zero3") for p in problems
    )


def test_an_accelerate_deepspeed_config_is_followed_or_refused(corpus_files, tiny_model, tmp_path, monkeypatch):
    from langadapt.recipe import Recipe
    from langadapt.train.distributed import requested_sharding

    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    for stage in ("1", "3"):  # accelerate launch --use_deepspeed --zero_stage N
        monkeypatch.setenv("ACCELERATE_DEEPSPEED_ZERO_STAGE", stage)
        recipe = Recipe.from_dict(tiny_recipe_dict(corpus_files, tiny_model, tmp_path / "run"))  # valid
        assert requested_sharding(recipe.train.sharding) == f"zero{stage}"
    problems = _problems(corpus_files, tiny_model, tmp_path, sharding="zero2")  # the recipe says otherwise
    assert any("configured for DeepSpeed (zero3)" in p and "make them agree" in p for p in problems)
    monkeypatch.setenv("ACCELERATE_DEEPSPEED_ZERO_STAGE", "0")
    assert any("stage 0, which shards nothing" in p for p in _problems(corpus_files, tiny_model, tmp_path))
    monkeypatch.setenv("ACCELERATE_DEEPSPEED_ZERO_STAGE", "2")
    monkeypatch.setenv("ACCELERATE_DEEPSPEED_OFFLOAD_OPTIMIZER_DEVICE", "cpu")
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "fp16")
    problems = _problems(corpus_files, tiny_model, tmp_path, precision="fp32")
    assert any("offload optimizer to cpu" in p and "does not apply" in p for p in problems)
    assert any("train.precision resolves to fp32" in p and "mixed precision fp16" in p for p in problems)


def test_a_deepspeed_config_file_keeps_its_zero_settings_and_loses_what_the_recipe_decides(
    corpus_files, tiny_model, tmp_path, monkeypatch, caplog
):
    from langadapt.recipe import Recipe
    from langadapt.train.zero import ds_config

    file = tmp_path / "ds.json"
    file.write_text(
        json.dumps(
            {
                "zero_optimization": {"stage": 3, "overlap_comm": True, "reduce_bucket_size": "auto"},
                "gradient_accumulation_steps": 1,
                "train_micro_batch_size_per_gpu": "auto",
            }
        )
    )
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    monkeypatch.setenv("ACCELERATE_DEEPSPEED_CONFIG_FILE", str(file))
    recipe = Recipe.from_dict(tiny_recipe_dict(corpus_files, tiny_model, tmp_path / "run", train={"batch_size": 8}))
    config = ds_config(recipe.train, stage=3, rows=8, world=2, micro=2, hidden=64)
    assert config["zero_optimization"] == {
        "stage": 3,
        "overlap_comm": True,
        "reduce_bucket_size": 64 * 64,  # "auto", and unset: as accelerate fills "auto", from the hidden size
        "stage3_prefetch_bucket_size": int(0.9 * 64 * 64),
        "stage3_param_persistence_threshold": 10 * 64,
    }
    assert (config["train_micro_batch_size_per_gpu"], config["gradient_accumulation_steps"]) == (2, 2)
    assert config["train_batch_size"] == 8 and config["gradient_clipping"] == recipe.train.grad_clip
    assert "gradient_accumulation_steps=1 -> 2" in caplog.text  # replaced, and said so

    file.write_text(
        json.dumps(
            {
                "zero_optimization": {"stage": 2, "sub_group_size": "auto"},
                "optimizer": {"type": "Adam"},
                "bf16": {"enabled": True},
            }
        )
    )
    problems = _problems(corpus_files, tiny_model, tmp_path, precision="fp32")
    assert any("'optimizer' section" in p and "remove the section" in p for p in problems)
    assert any("enables bf16 weights, but train.precision resolves to fp32" in p for p in problems)
    assert any("cannot fill are 'auto': zero_optimization.sub_group_size" in p for p in problems)
    file.write_text("{not json")
    problems = _problems(corpus_files, tiny_model, tmp_path)
    assert len(problems) == 1 and "cannot be read as JSON" in problems[0] and str(file) in problems[0]


def test_zero_in_bf16_runs_deepspeeds_bf16_mode_with_bf16_communication(corpus_files, tiny_model, tmp_path):
    from langadapt.recipe import Recipe
    from langadapt.train import zero

    recipe = Recipe.from_dict(tiny_recipe_dict(corpus_files, tiny_model, tmp_path / "run", train={"batch_size": 8}))
    config = zero.ds_config(recipe.train, stage=2, rows=8, world=2, micro=2, hidden=64, precision="bf16")
    assert config["bf16"] == {"enabled": True} and config["communication_data_type"] == "bf16"
    assert "fp16" not in config
    fp32 = zero.ds_config(recipe.train, stage=2, rows=8, world=2, micro=2, hidden=64, precision="fp32")
    assert not {"bf16", "fp16", "communication_data_type"} & fp32.keys()
    # a DeepSpeed config that enables bf16 agrees with train.precision bf16, and is refused under fp32
    on = {"bf16": {"enabled": True}}
    assert not [p for p in zero.zero_problems(recipe.train, "zero2", "bf16", on) if "bf16" in p]
    assert any(
        "enables bf16 weights, but train.precision resolves to fp32" in p
        for p in zero.zero_problems(recipe.train, "zero2", "fp32", on)
    )


def test_zero_needs_deepspeed_and_cannot_scale_fp16(corpus_files, tiny_model, tmp_path, monkeypatch):
    from langadapt.recipe import Recipe
    from langadapt.train import zero

    monkeypatch.setattr(zero, "deepspeed_installed", lambda: False)
    recipe = Recipe.from_dict(tiny_recipe_dict(corpus_files, tiny_model, tmp_path / "run"))
    problems = zero.zero_problems(recipe.train, "zero2", "fp16", None)
    assert any("not installed" in p and "langadapt[deepspeed]" in p for p in problems)
    assert any("fp16 needs a loss scaler" in p and "bf16 or fp32" in p for p in problems)
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert any("langadapt[deepspeed]" in p for p in _problems(corpus_files, tiny_model, tmp_path, sharding="zero3"))


def test_hybrid_needs_whole_nodes_and_qlora_cannot_be_sharded(corpus_files, tiny_model, tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "6")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    problems = _problems(corpus_files, tiny_model, tmp_path, sharding="hybrid", method="qlora", batch_size=12)
    assert any("6 processes do not split into nodes of 4" in p for p in problems)
    assert any("qlora's 4-bit" in p and "train.method: lora" in p for p in problems)  # every problem at once
    monkeypatch.delenv("LOCAL_WORLD_SIZE")
    problems = _problems(corpus_files, tiny_model, tmp_path, sharding="hybrid", method="qlora", batch_size=12)
    assert any("LOCAL_WORLD_SIZE is not set" in p for p in problems)


def test_an_accelerate_fsdp_config_is_followed_or_refused(corpus_files, tiny_model, tmp_path, monkeypatch):
    from langadapt.recipe import Recipe
    from langadapt.train.distributed import requested_sharding

    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    for strategy, sharding in (("FULL_SHARD", "full"), ("HYBRID_SHARD", "hybrid"), ("4", "hybrid")):
        monkeypatch.setenv("FSDP_SHARDING_STRATEGY", strategy)
        recipe = Recipe.from_dict(tiny_recipe_dict(corpus_files, tiny_model, tmp_path / "run"))  # valid
        assert requested_sharding(recipe.train.sharding) == sharding
    problems = _problems(corpus_files, tiny_model, tmp_path, sharding="full")  # the recipe says otherwise
    assert any("accelerate is configured for FSDP HYBRID_SHARD" in p and "make them agree" in p for p in problems)
    monkeypatch.setenv("FSDP_SHARDING_STRATEGY", "SHARD_GRAD_OP")
    monkeypatch.setenv("FSDP_OFFLOAD_PARAMS", "true")
    problems = _problems(corpus_files, tiny_model, tmp_path)
    assert any("SHARD_GRAD_OP is not supported" in p and "FULL_SHARD" in p for p in problems)
    assert any("offloading to the CPU" in p for p in problems)


def test_processes_after_rank_0_build_the_model_without_weights_under_fsdp(tiny_model, monkeypatch):
    from langadapt.models.loading import load_model
    from langadapt.train.distributed import loads_on_meta, meta_model

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    assert loads_on_meta("full") and loads_on_meta("hybrid")
    assert not loads_on_meta("none") and not loads_on_meta("zero3") and not loads_on_meta("zero1")
    monkeypatch.setenv("RANK", "0")
    assert not loads_on_meta("full")  # rank 0 loads the whole model: it sends it, and writes the final one
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert not loads_on_meta("full")
    empty, loaded = meta_model(str(tiny_model), "float32"), load_model(str(tiny_model))
    assert all(p.is_meta for p in empty.parameters()) and all(b.is_meta for b in empty.buffers())
    shapes = {n: (p.shape, p.dtype) for n, p in loaded.named_parameters()}
    assert {n: (p.shape, p.dtype) for n, p in empty.named_parameters()} == shapes
    assert empty.get_input_embeddings().weight is empty.get_output_embeddings().weight  # tied as loaded


def test_one_process_ignores_sharding():
    from langadapt.train.distributed import resolve_sharding

    assert os.environ.get("WORLD_SIZE", "1") == "1"
    assert resolve_sharding("full") == resolve_sharding("hybrid") == "none"


def test_deepspeed_internals_are_those_checked():
    """`zero._optimizer_internals` reads DeepSpeed's private optimizer attributes: they exist in the pinned version.

    The sources are read, not imported (importing DeepSpeed takes long on a CPU machine).
    """
    import importlib.util
    import re
    from importlib import metadata

    from langadapt.train.zero import DEEPSPEED_CHECKED

    pinned = re.search(r'"deepspeed==([0-9.]+)"', (Path(__file__).parents[1] / "pyproject.toml").read_text())
    assert pinned and pinned.group(1) == DEEPSPEED_CHECKED, "pin deepspeed at the version the internals were checked on"
    spec = importlib.util.find_spec("deepspeed")
    if spec is None:
        pytest.skip("deepspeed is not installed (pip install 'langadapt[deepspeed]')")
    assert metadata.version("deepspeed") == DEEPSPEED_CHECKED, (
        f"DeepSpeed {metadata.version('deepspeed')} is installed; train/zero.py's internals were checked on "
        f"{DEEPSPEED_CHECKED}"
    )
    zero = Path(spec.submodule_search_locations[0]) / "runtime" / "zero"
    zero12, zero3 = (zero / "stage_1_and_2.py").read_text(), (zero / "stage3.py").read_text()
    for name in (
        "self.single_partition_of_fp32_groups",
        "def _lazy_init_hp_params_optimizer_state",
        "_hp_optimizer_states_linked",
    ):
        assert name in zero12, name
    assert "self.fp32_partitioned_groups_flat" in zero3
    fragment = (Path(spec.submodule_search_locations[0]) / "utils" / "tensor_fragment.py").read_text()
    for name in ("lp_fragment_address", "def get_hp_fragment", "def safe_get_local_optimizer_state"):
        assert name in fragment, name  # what `zero._local_part` reads of a parameter's partition
