"""Bridge to lm-evaluation-harness for decoders: named harness tasks on each model.

The harness loads the model itself from its folder (`hf` backend) and runs the tasks
given in `harness_tasks`; `harness_include` registers a folder of local task YAML files
first, which is how the bridge runs offline (a task over a local data file). Every
numeric metric the harness reports becomes one row (its stderr, when given, as std).
Hub tasks need the network; offline they fail with the harness's reason, named.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from langadapt.errors import InputError, MissingDependencyError
from langadapt.evaluate.embed import is_decoder
from langadapt.evaluate.tasks.base import TASKS, Kind, Score, TaskContext
from langadapt.evaluate.tasks.data import TaskData

if TYPE_CHECKING:
    from langadapt.evaluate.config import TaskConfig


def run_harness(ctx: TaskContext, cfg: "TaskConfig", data: TaskData) -> list[Score]:
    name = cfg.name or cfg.kind
    if not is_decoder(ctx.model):
        raise InputError(f"task '{name}': the lm-evaluation-harness bridge scores decoders (causal LMs) only")
    try:
        import lm_eval
        from lm_eval.models.huggingface import HFLM
        from lm_eval.tasks import TaskManager
    except ImportError:
        raise MissingDependencyError("lm-eval", f"task '{name}'", "pip install 'langadapt[harness]'") from None
    manager = None
    if cfg.harness_include:  # indexing only the local folder takes a second; the full index takes most of a minute
        manager = TaskManager(include_path=cfg.harness_include, include_defaults=False)
        if any(t not in manager.all_tasks for t in cfg.harness_tasks):
            manager = None
    manager = manager or TaskManager(include_path=cfg.harness_include or None)
    unknown = [t for t in cfg.harness_tasks if t not in manager.all_tasks]
    if unknown:
        raise InputError(
            f"task '{name}': lm-evaluation-harness has no task {', '.join(unknown)}",
            hint="check the name (lm-eval --tasks list), or set harness_include to a folder with its YAML",
        )
    lm = HFLM(pretrained=ctx.model, tokenizer=ctx.tok, batch_size=cfg.batch_size)
    try:
        out = lm_eval.simple_evaluate(
            model=lm,
            tasks=list(cfg.harness_tasks),
            task_manager=manager,
            limit=cfg.harness_limit or None,
            random_seed=0,
            numpy_random_seed=0,
            torch_random_seed=0,
            log_samples=False,
        )
    except Exception as e:  # the harness fetches hub data sets; offline that is where it fails
        raise InputError(
            f"task '{name}': lm-evaluation-harness could not run {', '.join(cfg.harness_tasks)}: "
            f"{str(e).splitlines()[0][:200] if str(e) else type(e).__name__}",
            hint="offline? hub-hosted harness tasks need the network; use a local task definition (harness_include)",
        ) from None
    rows = []
    for task, metrics in sorted(out["results"].items()):
        n = int(out.get("n-samples", {}).get(task, {}).get("effective", 0))
        for key, value in sorted(metrics.items()):
            if "_stderr" in key or not isinstance(value, (int, float)) or key.split(",")[0] in ("alias", "sample_len"):
                continue
            metric = key.split(",")[0]
            stderr = metrics.get(key.replace(metric, f"{metric}_stderr", 1))
            std = float(stderr) if isinstance(stderr, (int, float)) else 0.0
            rows.append(
                Score(
                    name,
                    cfg.kind,
                    ctx.label,
                    "-",
                    task,
                    metric,
                    float(value),
                    std,
                    n_test=n,
                    extra={"std_is": "harness stderr"},
                )
            )
    return rows


TASKS.register(
    "lm-eval",
    help="lm-evaluation-harness tasks on decoders (harness_tasks; harness_include for local task YAML); langadapt[harness]",
)(Kind(run_harness, token_level=False, builtin_data=()))
