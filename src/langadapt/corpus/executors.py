"""Runs a pass of the corpus pipeline on datatrove's executors: local, Slurm or Ray.

Each pass logs under `<corpus.partial>/logs/<pass>/`, where datatrove keeps its completion
markers: a re-run after an interruption skips the tasks that finished. Slurm jobs are
submitted and waited for, so the stage's passes still run one after the other.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from langadapt.corpus.config import CorpusConfig

log = logging.getLogger(__name__)


def _quiet_task_logs() -> None:
    """datatrove prints every task's INFO lines to the terminal; keep them in its log files, show warnings only."""
    import datatrove.executor.base as base
    from datatrove.utils import logging as dt_logging
    from loguru import logger

    if getattr(base, "_langadapt_quiet", False):
        return

    def add_task_logger(logging_dir: Any, rank: int, local_rank: int = 0, node_rank: int = -1) -> Any:
        logfile = dt_logging.add_task_logger(logging_dir, rank, local_rank, node_rank)
        logger.remove()
        logger.add(sys.stderr, level="WARNING")
        logger.add(logfile, level="DEBUG")
        return logfile

    def close_task_logger(logfile: Any) -> None:
        dt_logging.close_task_logger(logfile)
        logger.remove()
        logger.add(sys.stderr, level="WARNING")

    base.add_task_logger = add_task_logger
    base.close_task_logger = close_task_logger
    base._langadapt_quiet = True
    logger.remove()
    logger.add(sys.stderr, level="WARNING")


def auto_workers(cfg: "CorpusConfig", input_bytes: int) -> int:
    """Tasks run at once locally: as set, else one per core, but in this process for small inputs
    (starting worker processes costs seconds, more than a few MB of text take)."""
    if cfg.workers:
        return cfg.workers
    return 1 if input_bytes < SMALL_INPUT else os.cpu_count() or 1


SMALL_INPUT = 32 << 20


def run_pass(cfg: "CorpusConfig", name: str, pipeline: list[Any], tasks: int, logs: Path, workers: int = 1) -> None:
    """Run one pass (a list of datatrove steps) as `tasks` tasks; returns when every task has finished."""
    _quiet_task_logs()
    logging_dir = str(logs / name)
    if cfg.executor == "ray":
        _ray(cfg, pipeline, tasks, logging_dir)
    elif cfg.executor == "slurm":
        _slurm(cfg, name, pipeline, tasks, logging_dir)
    else:
        from datatrove.executor import LocalPipelineExecutor

        LocalPipelineExecutor(
            pipeline=pipeline, tasks=tasks, workers=min(tasks, workers), logging_dir=logging_dir, skip_completed=True
        ).run()
    _check_complete(logs / name, tasks, name)


def _ray(cfg: "CorpusConfig", pipeline: list[Any], tasks: int, logging_dir: str) -> None:
    import ray
    from datatrove.executor.ray import RayPipelineExecutor

    if not ray.is_initialized():
        ray.init(address=cfg.ray.address or None, include_dashboard=False, log_to_driver=False)
    RayPipelineExecutor(
        pipeline=pipeline,
        tasks=tasks,
        workers=cfg.workers or -1,
        logging_dir=logging_dir,
        skip_completed=True,
        cpus_per_task=cfg.ray.cpus_per_task,
    ).run()


def _slurm(cfg: "CorpusConfig", name: str, pipeline: list[Any], tasks: int, logging_dir: str) -> None:
    from datatrove.executor import SlurmPipelineExecutor

    extra = dict(arg.lstrip("-").split("=", 1) for arg in cfg.slurm.sbatch_args if "=" in arg)
    executor = SlurmPipelineExecutor(
        pipeline=pipeline,
        tasks=tasks,
        time=cfg.slurm.time,
        partition=cfg.slurm.partition,
        cpus_per_task=cfg.slurm.cpus_per_task,
        mem_per_cpu_gb=cfg.slurm.mem_per_cpu_gb,
        job_name=f"langadapt-{name}",
        logging_dir=logging_dir,
        skip_completed=True,
        venv_path=os.environ.get("VIRTUAL_ENV") or None,
        sbatch_args=extra or None,
    )
    executor.run()
    while len(executor.get_incomplete_ranks()) > 0:  # jobs run on the cluster; the stage waits for them
        time.sleep(30)


def _check_complete(folder: Path, tasks: int, name: str) -> None:
    from langadapt.errors import StageError

    done = len(list((folder / "completions").glob("*"))) if (folder / "completions").exists() else 0
    if done < tasks:
        raise StageError(
            f"corpus: {tasks - done} of {tasks} tasks of the '{name}' pass did not finish",
            hint=f"see the task logs in {folder / 'logs'}; re-running resumes the unfinished tasks",
        )
