"""SLURM: each cell becomes one multi-GPU job, submitted through submitit.

One task per GPU runs `jitlab fit` in-process (Lightning reads the SLURM environment: no torchrun), then every
task evaluates its slice of the images and task 0 records the cell as a local run does. SLURM sends SIGUSR1
``signal_delay_s`` before the time limit (in place of submitit's USR2, whose handler would requeue without a
checkpoint): Lightning's ``SLURMEnvironment`` saves ``hpc_ckpt_N.ckpt`` and requeues, and the requeued job resumes
from the newest checkpoint. A cell whose job (``slurm_job.json``) is queued or running, or whose lock a live runner
holds, is not submitted again.
"""

from __future__ import annotations

import gc
import json
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from jitlab.atomic import write_json
from jitlab.errors import ConfigError
from jitlab.experiments.grid.runner import (
    cell_dir, check_settings, command_line, eval_args, finish_cell, fit_args, interrupted, is_finished,
    last_checkpoint, prepare_cell, read_result,
)
from jitlab.experiments.grid.spec import Cell
from jitlab.lock import ACTIVE_STATES, CellLock, describe, holder_alive, job_state

if TYPE_CHECKING:
    from jitlab.train.strategy import StrategyKind

JOB_RECORD = "slurm_job.json"
# of the active states, those in which a job waits for its nodes rather than runs
QUEUED_STATES = {"PENDING", "CONFIGURING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED"}
REQUEUE_SIGNAL = "SIGUSR1"  # Lightning's SLURMEnvironment default; submitit leaves it alone


@dataclass
class SlurmOptions:
    partition: str | None = None
    nodes: int = 1
    gpus_per_node: int = 8
    cpus_per_task: int = 12
    time_min: int = 72 * 60
    account: str | None = None
    signal_delay_s: int = 300  # time to write a checkpoint (tens of GB at G/16) before the job is stopped

    def parameters(self) -> dict[str, Any]:
        """The submitit ``update_parameters`` arguments."""
        optional = {"partition": self.partition, "account": self.account}
        return {
            "nodes": self.nodes, "tasks_per_node": self.gpus_per_node, "gpus_per_node": self.gpus_per_node,
            "cpus_per_task": self.cpus_per_task, "timeout_min": self.time_min,
            "slurm_signal_delay_s": self.signal_delay_s,
            "slurm_additional_parameters": {"signal": f"{REQUEUE_SIGNAL.removeprefix('SIG')}@{self.signal_delay_s}"},
            **{f"slurm_{key}": value for key, value in optional.items() if value},
        }

    def trainer_args(self, strategy: StrategyKind = "ddp") -> list[str]:
        """The cell's `jitlab fit` arguments to span the allocation (``ddp`` or ``fsdp2``) and save at the requeue."""
        from jitlab.train.strategy import strategy_config

        plugin = ('[{"class_path": "lightning.pytorch.plugins.environments.SLURMEnvironment", '
                  f'"init_args": {{"auto_requeue": true, "requeue_signal": "{REQUEUE_SIGNAL}"}}}}]')
        return ["--trainer.accelerator=gpu", f"--trainer.devices={self.gpus_per_node}",
                f"--trainer.num_nodes={self.nodes}", f"--trainer.strategy={json.dumps(strategy_config(strategy))}",
                f"--trainer.plugins={plugin}"]


def require_slurm() -> None:
    """A SLURM client is on PATH (else submitit would quietly run the jobs on this machine)."""
    missing = [tool for tool in ("sbatch", "srun") if shutil.which(tool) is None]  # submitting; the job's tasks
    if missing:
        raise ConfigError("--launcher slurm", f"{' and '.join(missing)} not on PATH (no SLURM client on this "
                                              "machine); run on a SLURM login node, or use --launcher local")


Entry = Callable[[list[str]], int]  # a `jitlab` command line -> exit code (jitlab.commands.cli.main)


class CellJob:
    """The callable submitit pickles and runs on every task of the allocation."""

    def __init__(self, cell: Cell, directory: Path, options: SlurmOptions, entry: Entry):
        self.cell, self.directory, self.options = cell, Path(directory), options
        self.entry = entry  # the `jitlab` dispatcher, given by the commands layer (this layer never imports it)

    def __call__(self) -> str:
        import submitit

        started = time.time()
        job = submitit.JobEnvironment()
        lock = CellLock(self.directory)
        if job.global_rank == 0:
            if not lock.acquire():  # another runner trains this cell: end this job on every task
                subprocess.call(["scancel", str(job.job_id)])
                return f"{self.cell.id}: not run, {lock.busy_message()}"
            prepare_cell(self.cell, self.directory)
        args = fit_args(self.directory, self.options.trainer_args())
        code = self.entry(args)  # every task trains; Lightning's SLURMEnvironment gives each its rank
        if code != 0 and interrupted(code):
            return f"rank {job.global_rank}: stopped at a checkpoint (exit {code}); the requeued job resumes"
        eval_code = evaluate_together(self.entry, code, eval_args(self.directory, self.cell.eval))
        if job.global_rank != 0:
            return f"rank {job.global_rank}: fit exited {code}, eval {eval_code}"
        try:  # task 0 records the cell, with the same code as a local run (the evaluation has run already)
            outcome = finish_cell(self.cell, self.directory, code, started, [command_line(args)], {},
                                  lambda *_: eval_code)
        finally:
            lock.release()
        return f"{self.cell.id}: {outcome.status} ({outcome.summary})"

    def checkpoint(self, *args: Any, **kwargs: Any):
        import submitit

        return submitit.helpers.DelayedSubmission(self)  # requeued: resumes from the newest checkpoint


def evaluate_together(main: Entry, fit_code: int, args: list[str]) -> int:
    """Every task evaluates (its slice of the images) in training's process group, if every task trained."""
    import torch
    import torch.distributed as dist

    grouped = dist.is_available() and dist.is_initialized()
    ok = fit_code == 0
    if grouped:  # all tasks agree, or none evaluates (a collective with a missing task would hang)
        device = "cuda" if dist.get_backend() == "nccl" else "cpu"
        flag = torch.tensor([int(ok)], device=device)
        dist.all_reduce(flag, op=dist.ReduceOp.MIN)
        ok = bool(flag.item())
    if not ok:
        return fit_code or 1
    gc.collect()  # the training's model and optimizer are gone with its Trainer: give their memory back
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return main(args)  # `jitlab eval` uses the initialised group (rank, world) and ends it


def cell_activity(directory: Path) -> tuple[str, str] | None:
    """("queued" or "running", why) when a cell's SLURM job waits in the queue or runs, or a live runner holds
    it; None when nothing does (it may be submitted)."""
    try:
        record = json.loads((Path(directory) / JOB_RECORD).read_text())
    except (OSError, ValueError):
        record = None
    if record is not None:
        state = job_state(str(record.get("job_id")))
        if state in ACTIVE_STATES:
            return "queued" if state in QUEUED_STATES else "running", f"job {record['job_id']} is {state}"
    holder = CellLock(directory).read()
    if holder is not None and holder_alive(holder):
        return "running", f"a runner holds it ({describe(holder)})"
    return None


def not_submittable(directory: Path) -> str | None:
    """Why a cell must not be submitted now (its job is queued or running, or a live runner holds it), or None."""
    activity = cell_activity(directory)
    return None if activity is None else activity[1]


def submit(cells: list[Cell], runs: Path, options: SlurmOptions, dry_run: bool, echo=print,
           entry: Entry | None = None) -> list[Any]:
    """Submit one job per unfinished cell (or, with ``dry_run``, print what would be submitted); ``entry``: the
    ``jitlab`` dispatcher each task runs in-process, required unless ``dry_run``."""
    if not dry_run:
        require_slurm()
        if entry is None:
            raise ValueError("submit needs the jitlab entry point (jitlab.commands.cli.main) to run on the cluster")
    jobs = []
    check_settings(cells, runs)  # a directory of other settings: refused before anything is submitted
    for i, cell in enumerate(cells, 1):
        directory = cell_dir(runs, cell)
        previous = read_result(directory)
        if is_finished(previous, cell):
            echo(f"[cell {i}/{len(cells)}] {cell.id}: {previous['status']} earlier, not submitted")
            continue
        if dry_run:
            echo(f"# slurm job for cell {i}/{len(cells)} {cell.id}: {options.parameters()}")
            echo(f"#   srun (one task per GPU): {command_line(fit_args(directory, options.trainer_args()))}")
            echo(f"#   then on every task: {command_line(eval_args(directory, cell.eval, write=False))}")
            continue
        busy = not_submittable(directory)
        if busy is not None:
            echo(f"[cell {i}/{len(cells)}] {cell.id}: {busy}, not submitted again")
            continue
        import submitit

        executor = submitit.AutoExecutor(folder=str(directory / "slurm" / "%j"), cluster="slurm")
        executor.update_parameters(name=f"jitlab-{cell.grid}-{cell.id}", **options.parameters())
        job = executor.submit(CellJob(cell, directory, options, entry))
        write_json(directory / JOB_RECORD, {"job_id": str(job.job_id), "cell": cell.id,
                                            "submitted_at": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())})
        echo(f"[cell {i}/{len(cells)}] {cell.id}: submitted job {job.job_id}"
             f"{' (resumes ' + str(last_checkpoint(directory)) + ')' if last_checkpoint(directory).exists() else ''}")
        jobs.append(job)
    return jobs
