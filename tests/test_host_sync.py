"""The training step does not wait on the device: host reads of tensors in one step are counted.

On a GPU, every read of a device tensor by the host (`.item()`, `.cpu()`, `.tolist()`, `bool()`
of a tensor, a blocking copy between host and device) stalls the host until the device has
finished all the work queued before it, so the host can no longer queue the next kernels while
the device runs. A CPU run has nothing to stall, but the same reads happen in the same places:
a spy on those methods counts them in one real training step of a tiny model (the loop's
`forward_backward` and the step's bookkeeping, through `train_loop`), and the count must stay at
what the loop needs once per step. (A copy counts when it crosses devices, which only happens
on an accelerator: `pytest -m gpu` runs the same steps on CUDA.)
"""

from __future__ import annotations

import threading
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import english_lines, target_docs, tiny_recipe_dict

from langadapt.train import loop
from langadapt.train.processes import Processes

# One step may read the device once: the per-row losses of the step, moved to the host in one
# transfer (the per-language means are then computed there). The optimizer's own step is not
# counted (AdamW reads its step counters, which live on the host unless it runs fused).
STEP_SYNCS = 1

_READS = ("item", "cpu", "tolist", "numpy", "__bool__", "__int__", "__float__")


class SyncSpy:
    """Counts host reads of tensors made by the main thread while `active` (the data thread works on host data)."""

    def __init__(self) -> None:
        self.active = False
        self.calls: Counter[str] = Counter()
        self.where: Counter[str] = Counter()
        self._main = threading.get_ident()

    def _record(self, name: str) -> None:
        if self.active and threading.get_ident() == self._main:
            import traceback

            self.calls[name] += 1
            frame = traceback.extract_stack(limit=3)[0]  # the caller of the spied method
            self.where[f"{name} at {Path(frame.filename).name}:{frame.lineno}"] += 1

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        for name in _READS:
            original = getattr(torch.Tensor, name)

            def spy(t: torch.Tensor, *args: Any, _original: Any = original, _name: str = name, **kw: Any) -> Any:
                self._record(_name)
                return _original(t, *args, **kw)

            monkeypatch.setattr(torch.Tensor, name, spy)
        to = torch.Tensor.to

        def spy_to(t: torch.Tensor, *args: Any, **kw: Any) -> Any:
            target = _target_device(args, kw)
            if target is not None and target.type != t.device.type and not kw.get("non_blocking", False):
                self._record(f"to({target.type})")  # a blocking copy between host and device waits for the device
            return to(t, *args, **kw)

        monkeypatch.setattr(torch.Tensor, "to", spy_to)

    def report(self) -> str:
        return f"{self.total} host reads in one step:\n" + "\n".join(
            f"{n} x {w}" for w, n in sorted(self.where.items())
        )

    @property
    def total(self) -> int:
        return sum(self.calls.values())


def test_the_spy_counts_every_kind_of_read_on_the_main_thread_only(monkeypatch):
    spy = SyncSpy()
    spy.install(monkeypatch)
    t = torch.tensor([1.5])
    spy.active = True
    t.item(), t.cpu(), t.tolist(), t.numpy(), bool(t), int(t), float(t)
    t.to("cpu"), t.to(torch.float64)  # no copy between host and device
    reader = threading.Thread(target=lambda: t.item())  # the data thread's reads are of host data
    reader.start()
    reader.join()
    spy.active = False
    t.item()
    assert spy.total == 7, spy.report()


def _target_device(args: tuple[Any, ...], kw: dict[str, Any]) -> torch.device | None:
    target = kw.get("device", args[0] if args else None)
    if isinstance(target, torch.Tensor):
        target = target.device
    return torch.device(target) if isinstance(target, (str, torch.device)) else None


def _count_one_step(monkeypatch: pytest.MonkeyPatch, out: Path, run: Any) -> SyncSpy:
    """Run `run()` (a one-step `train_loop`), counting from the start of `forward_backward` to the step's report."""
    spy = SyncSpy()
    real_fb, real_report, real_step = loop.forward_backward, loop._report, Processes.step

    def forward_backward(*args: Any, **kw: Any) -> Any:
        spy.active = True
        return real_fb(*args, **kw)

    def report(*args: Any, **kw: Any) -> Any:
        spy.active = False
        return real_report(*args, **kw)

    def step(self: Processes, *args: Any, **kw: Any) -> Any:
        active, spy.active = spy.active, False
        try:
            return real_step(self, *args, **kw)
        finally:
            spy.active = active

    monkeypatch.setattr(loop, "forward_backward", forward_backward)
    monkeypatch.setattr(loop, "_report", report)
    monkeypatch.setattr(Processes, "step", step)
    spy.install(monkeypatch)
    out.mkdir(parents=True)
    run()
    assert not spy.active, "the step never reached its report"
    return spy


def _recipe(corpus_files: dict[str, Path], model: Path, out: Path, **train: Any) -> Any:
    from langadapt.recipe import Recipe

    base = {"max_steps": 1, "seq_len": 32, "batch_size": 4, "micro_batch_size": 2, "save_every": 0, "eval_every": 0}
    return Recipe.from_dict(tiny_recipe_dict(corpus_files, model, out, train={**base, **train}))


def _texts() -> list[str]:
    return [d["text"] for d in target_docs(seed=4)] + english_lines(20, seed=5)


DEVICES = [
    "cpu",
    pytest.param(
        "cuda",
        marks=[pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")],
    ),
]


@pytest.mark.parametrize("device", DEVICES)
def test_a_decoder_step_reads_the_device_once(corpus_files, tiny_model, tmp_path, monkeypatch, device):
    """clm through the fused chunked loss (chunks smaller than a micro-batch), LoRA, two micro-batches."""
    from langadapt.models.loading import doc_separator_id, load_model, load_tokenizer
    from langadapt.train import objectives
    from langadapt.train.data import TokenStream
    from langadapt.train.methods import TRAIN_METHODS

    recipe = _recipe(corpus_files, tiny_model, tmp_path / "run", method="lora", device=device)
    tok = load_tokenizer(str(tiny_model))
    torch.manual_seed(0)
    model = TRAIN_METHODS.get("lora")(load_model(str(tiny_model)), recipe.train, [])
    streams = {"nya": TokenStream(_texts(), tok, doc_separator_id(tok), recipe.train.seq_len, recipe.seed)}
    monkeypatch.setattr(objectives, "CHUNK_TOKENS", 16)  # several chunks per micro-batch
    summary: dict[str, Any] = {}
    out = tmp_path / "out"
    spy = _count_one_step(
        monkeypatch, out, lambda: summary.update(loop.train_loop(model, streams, "nya", None, recipe, out))
    )
    assert summary["loss"] == "fused" and summary["micro_batch"] == 2  # what the count is about
    assert spy.total <= STEP_SYNCS, spy.report()


@pytest.mark.parametrize("device", DEVICES)
def test_an_encoder_step_reads_the_device_once(corpus_files, tiny_encoder, tmp_path, monkeypatch, device):
    """mlm with whole-word masking of packed documents, two micro-batches."""
    from langadapt.models.loading import doc_separator_id, load_model, load_tokenizer
    from langadapt.train.data import TokenStream
    from langadapt.train.methods import TRAIN_METHODS
    from langadapt.train.mlm import MaskingPlan, masked_lm

    recipe = _recipe(corpus_files, tiny_encoder, tmp_path / "run", objective="mlm", method="full", device=device)
    tok = load_tokenizer(str(tiny_encoder))
    torch.manual_seed(0)
    model = TRAIN_METHODS.get("full")(load_model(str(tiny_encoder)), recipe.train, [])
    streams = {"nya": TokenStream(_texts(), tok, doc_separator_id(tok), recipe.train.seq_len, recipe.seed)}
    objective = masked_lm(MaskingPlan.from_tokenizer(tok, recipe.train))
    summary: dict[str, Any] = {}
    out = tmp_path / "out"
    spy = _count_one_step(
        monkeypatch,
        out,
        lambda: summary.update(loop.train_loop(model, streams, "nya", None, recipe, out, objective=objective)),
    )
    assert summary["micro_batch"] == 2
    assert spy.total <= STEP_SYNCS, spy.report()
