"""SLURM: each cell becomes one multi-GPU job, submitted through submitit.

The job runs one task per GPU on every node; inside it `jitlab fit` runs in-process and Lightning
reads the SLURM environment (ranks, master address), so no torchrun is needed. After training,
task 0 evaluates the cell. On preemption or time-out submitit calls ``checkpoint``, which requeues
the same job: it resumes from the cell's ``last.ckpt`` (written every few thousand steps).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jitlab.grid.runner import command_line, eval_args, finish_cell, fit_args, last_checkpoint, prepare_cell
from jitlab.grid.spec import Cell


@dataclass
class SlurmOptions:
    partition: str | None = None
    nodes: int = 1
    gpus_per_node: int = 8
    cpus_per_task: int = 12
    time_min: int = 72 * 60
    account: str | None = None
    constraint: str | None = None

    def parameters(self) -> dict[str, Any]:
        """The submitit ``update_parameters`` arguments."""
        params: dict[str, Any] = {
            "nodes": self.nodes, "tasks_per_node": self.gpus_per_node, "gpus_per_node": self.gpus_per_node,
            "cpus_per_task": self.cpus_per_task, "timeout_min": self.time_min, "slurm_signal_delay_s": 180,
        }
        if self.partition:
            params["slurm_partition"] = self.partition
        if self.account:
            params["slurm_account"] = self.account
        if self.constraint:
            params["slurm_constraint"] = self.constraint
        return params

    def trainer_args(self) -> list[str]:
        """What the cell's `jitlab fit` adds so that Lightning spans the allocation."""
        return ["--trainer.accelerator=gpu", f"--trainer.devices={self.gpus_per_node}",
                f"--trainer.num_nodes={self.nodes}", "--trainer.strategy=ddp"]


class CellJob:
    """The callable submitit pickles and runs on every task of the allocation."""

    def __init__(self, cell: Cell, directory: Path, options: SlurmOptions):
        self.cell, self.directory, self.options = cell, Path(directory), options

    def __call__(self) -> str:
        import time

        import submitit

        from jitlab.cli import main

        started = time.time()
        rank = submitit.JobEnvironment().global_rank
        if rank == 0:
            prepare_cell(self.cell, self.directory)
        args = fit_args(self.directory, self.options.trainer_args())
        code = main(args)  # every task trains; Lightning's SLURMEnvironment gives each its rank
        if rank != 0:
            return f"rank {rank}: fit exited {code}"
        # task 0 evaluates (on its GPU) and records the cell, with the same code as a local run
        outcome = finish_cell(self.cell, self.directory, code, started, [command_line(args)], {}, _in_process)
        return f"{self.cell.id}: {outcome.status} ({outcome.summary})"

    def checkpoint(self, *args: Any, **kwargs: Any):
        import submitit

        return submitit.helpers.DelayedSubmission(self)  # requeued: resumes from last.ckpt


def _in_process(args: list[str], log: Path, env: dict[str, str]) -> int:
    import torch.distributed as dist

    from jitlab.cli import main

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()  # training's process group: evaluation here runs on task 0 alone
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        os.environ.pop(name, None)
    os.environ.update(env)
    return main(args)


def submit(cells: list[Cell], runs: Path, options: SlurmOptions, dry_run: bool, echo=print) -> list[Any]:
    """Submit one job per unfinished cell (or, with ``dry_run``, print what would be submitted)."""
    from jitlab.grid.runner import FINISHED, cell_dir, read_result

    jobs = []
    for i, cell in enumerate(cells, 1):
        directory = cell_dir(runs, cell)
        previous = read_result(directory)
        if previous is not None and previous.get("status") in FINISHED:
            echo(f"[cell {i}/{len(cells)}] {cell.id}: {previous['status']} earlier, not submitted")
            continue
        if dry_run:
            echo(f"# slurm job for cell {i}/{len(cells)} {cell.id}: {options.parameters()}")
            echo(f"#   srun (one task per GPU): {command_line(fit_args(directory, options.trainer_args()))}")
            echo(f"#   then on task 0: {command_line(eval_args(directory, cell.eval))}")
            continue
        import submitit

        executor = submitit.AutoExecutor(folder=str(directory / "slurm" / "%j"))
        executor.update_parameters(name=f"jitlab-{cell.grid}-{cell.id}", **options.parameters())
        job = executor.submit(CellJob(cell, directory, options))
        echo(f"[cell {i}/{len(cells)}] {cell.id}: submitted job {job.job_id}"
             f"{' (resumes ' + str(last_checkpoint(directory)) + ')' if last_checkpoint(directory).exists() else ''}")
        jobs.append(job)
    return jobs
