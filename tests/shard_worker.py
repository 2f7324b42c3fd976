"""One process of tests/test_train_distributed.py's sharded-state checks (run under torchrun, 2 processes).

python shard_worker.py SPEC.json
SPEC: model (a tiny HF folder), sharding (full, zero2 or zero3), precision (fp32 or bf16), out (a folder),
meta (optional: processes > 0 build the model on the meta device where `loads_on_meta` says so).
Each rank writes rank<N>.json with what it saw: whether its model was built on the meta device
and, then, whether the weights, buffers and losses it holds after sharding are the whole model's;
the sharded parameters' dtypes, FSDP's mixed precision policy and the dtype the forward pass
read, DeepSpeed's configuration, and what the checkpoint gathering left on this process (full
tensors or none), checked against the full tensors DeepSpeed's own all-reduce API gives every process.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from pathlib import Path


def main() -> None:
    import torch

    from langadapt.devices import autocast
    from langadapt.models.loading import load_model
    from langadapt.train import distributed, processes
    from langadapt.train.config import TrainConfig
    from langadapt.train.methods import TRAIN_METHODS
    from langadapt.train.objectives import FUSED_ATTRIBUTE, OBJECTIVES, prepare_loss

    spec = json.loads(Path(sys.argv[1]).read_text())
    torch.manual_seed(0)
    torch.set_num_threads(1)
    rank = int(os.environ["RANK"])
    cfg = dataclasses.replace(
        TrainConfig(), method="full", precision=spec["precision"], sharding=spec["sharding"], batch_size=4
    )
    meta = spec.get("meta", False) and distributed.loads_on_meta(cfg.sharding)  # rank 1 under FSDP
    base = distributed.meta_model(spec["model"], "float32") if meta else load_model(spec["model"])
    model = TRAIN_METHODS.get("full")(base, cfg, [])
    seen: dict = {"rank": rank, "meta": all(p.is_meta for p in model.parameters())}
    seen["loss_choice"] = prepare_loss("clm", model, 300)  # as the loop does before sharding
    reference = TRAIN_METHODS.get("full")(load_model(spec["model"]), cfg, [])  # the same model, loaded here
    initial = {n: p.detach().clone() for n, p in reference.named_parameters() if p.requires_grad}
    trained = processes.training_copy(model)
    device = torch.device("cpu")

    def optimizer(m):  # type: ignore[no-untyped-def]
        return torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-3)

    clm = OBJECTIVES.get("clm")
    procs, module, opt = distributed.setup(trained, clm, optimizer, device, 4, 1, spec["sharding"], cfg)
    if spec.get("meta"):  # what every process holds now, against the model loaded whole
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        whole = get_model_state_dict(module, options=StateDictOptions(full_state_dict=True))  # on every process
        mine = {k.removeprefix("model."): v for k, v in whole.items()}
        ref = reference.state_dict()
        seen["weights_match"] = mine.keys() == ref.keys() and all(torch.equal(mine[k], ref[k]) for k in ref)
        pairs = zip(trained.buffers(), reference.buffers(), strict=True)
        seen["buffers_match"] = all(torch.equal(a, b) for a, b in pairs)
        ids = torch.randint(0, 300, (2, 16), generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            gap = (module(ids) - clm(reference, ids)).abs().max().item()  # bf16 policy: weights gathered in bf16
            seen["loss_match"] = gap <= (1e-5 if spec["precision"] == "fp32" else 5e-2)
        procs.release(module)
        inner = trained.get_base_model() if hasattr(trained, "get_base_model") else trained
        seen["fused"] = inner.__dict__.get(FUSED_ATTRIBUTE)
    if spec["sharding"] == "full":
        from torch.distributed.tensor import DTensor

        seen["sharded"] = sorted({f"{type(p).__name__}:{p.dtype}" for p in module.parameters()})
        policy = module._get_fsdp_state()._mp_policy
        seen["policy"] = [str(policy.param_dtype), str(policy.reduce_dtype)]
        read: list[str] = []
        linear = next(m for m in trained.modules() if isinstance(m, torch.nn.Linear))
        linear.register_forward_pre_hook(lambda m, a: read.append(str(m.weight.dtype)))
        seen["dtensors"] = all(isinstance(p, DTensor) for p in module.parameters())
    else:
        seen["ds_config"] = {k: module.config.get(k) for k in ("bf16", "communication_data_type")}
    # the checkpoint's state before any step: the initial weights, gathered on rank 0 alone
    seen["before"] = _gathered(procs, trained, opt, initial)
    ids = torch.randint(0, 300, (2, 16), generator=torch.Generator().manual_seed(rank))
    with procs.no_sync(module, last=True):
        with autocast(device, spec["precision"]):
            loss = module(ids).float().mean()
        procs.backward(loss, None)
    procs.step(opt, None, [p for p in trained.parameters() if p.requires_grad], 1.0)
    if spec["sharding"] == "full":
        seen["forward_read"] = sorted(set(read))
        seen["grads"] = sorted({str(p.grad.dtype) for p in module.parameters() if p.grad is not None} or {"none"})
    seen["opt_state"] = len(opt.state)
    seen["after"] = _gathered(procs, trained, opt, None)
    Path(spec["out"], f"rank{rank}.json").write_text(json.dumps(seen))


def _gathered(procs, model, opt, expected):  # type: ignore[no-untyped-def]
    """What `full_state` returned here (tensor count and elements) and whether it equals the reference:
    `expected` weights, or the full tensors DeepSpeed's all-reduce API (ZeRO) assembles on every process."""
    import torch

    weights, optimizer = procs.full_state(model, opt)
    tensors = list(weights.values()) + [v for s in optimizer.get("state", {}).values() for v in s.values()]
    out = {"tensors": len(tensors), "elements": sum(t.numel() for t in tensors)}
    reference = expected
    moments = {}
    if hasattr(procs, "engine"):  # every process takes part in DeepSpeed's own collective gathering
        from deepspeed.utils import safe_get_full_fp32_param, safe_get_full_optimizer_state

        params = dict(model.named_parameters())
        reference = {n: safe_get_full_fp32_param(params[n]).cpu() for n in procs._order()}
        from langadapt.train.zero import _state_keys

        keys = _state_keys(opt.optimizer)[0]  # the moments full_state gathered (none before a step)
        for i, n in enumerate(procs._order()):
            for k in keys:
                moments[(i, k)] = safe_get_full_optimizer_state(params[n], k).cpu()
    if procs.is_main and reference is not None:
        out["weights_equal"] = weights.keys() == reference.keys() and all(
            torch.equal(weights[n], reference[n].to(weights[n].dtype)) for n in weights
        )
    if procs.is_main and expected is not None:
        out["initial_equal"] = weights.keys() == expected.keys() and all(
            torch.equal(weights[n], expected[n]) for n in weights
        )
    if procs.is_main and moments:
        out["moments_equal"] = all(torch.equal(optimizer["state"][i][k], v) for (i, k), v in moments.items())
    return out


if __name__ == "__main__":
    main()
