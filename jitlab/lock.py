"""One runner per cell: a lock file in the cell's directory naming its holder (host, pid, SLURM job id).

A holder is alive while its process or its cell's subprocess (``child_pid``: a trainer outlives a runner killed by
``kill -9`` until it has saved) runs on this host, or while its SLURM job is queued or running (``squeue``). A stale
lock is taken over; one whose holder cannot be judged (another host, no job id) is respected. All of it happens
under an ``flock`` of a guard file beside the lock, so two runners never both win.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import time
from pathlib import Path
from typing import Any, Iterator

from jitlab.atomic import write_json

LOCK_NAME = "runner.lock"
ACTIVE_STATES = {"PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED",
                 "RESIZING", "SUSPENDED", "STAGE_OUT", "SIGNALING", "PREEMPTED"}


def job_state(job_id: str) -> str | None:
    """The scheduler's state of a SLURM job (``squeue``), or None when it is not queued or running (or unknown)."""
    try:  # no squeue here: FileNotFoundError
        out = subprocess.run(["squeue", "--noheader", "--jobs", str(job_id), "--format", "%T"],
                             capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    states = [line.strip() for line in out.stdout.splitlines() if line.strip()]
    return states[0] if out.returncode == 0 and states else None


def this_holder() -> dict[str, Any]:
    return {"host": socket.gethostname(), "pid": os.getpid(), "job_id": os.environ.get("SLURM_JOB_ID"),
            "since": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    try:  # Linux: a zombie (ended, not yet reaped by whoever adopted it) holds nothing
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def holder_alive(holder: dict[str, Any]) -> bool | None:
    """True / False when it can be told, None when it cannot (another host, no job id)."""
    me = this_holder()
    if holder.get("job_id") and holder.get("job_id") == me["job_id"] and holder.get("pid") != me["pid"]:
        return False  # an earlier run of this very job (requeued): gone
    if holder.get("host") == me["host"]:
        child = holder.get("child_pid")
        return _pid_alive(int(holder.get("pid", -1))) or (child is not None and _pid_alive(int(child)))
    if holder.get("job_id"):
        return job_state(str(holder["job_id"])) in ACTIVE_STATES
    return None


def describe(holder: dict[str, Any]) -> str:
    job = f", SLURM job {holder['job_id']}" if holder.get("job_id") else ""
    child = f" (its subprocess pid {holder['child_pid']})" if holder.get("child_pid") else ""
    return f"pid {holder.get('pid')}{child} on {holder.get('host')}{job}, since {holder.get('since')}"


@contextlib.contextmanager
def _guard(directory: Path) -> Iterator[None]:
    import fcntl

    with open(directory / f".{LOCK_NAME}.guard", "a") as handle:
        with contextlib.suppress(OSError):  # a file system without flock (some parallel ones): the check mostly holds
            fcntl.flock(handle, fcntl.LOCK_EX)
        yield


class CellLock:
    """``with CellLock(directory) as lock: if lock.held: ...``; ``lock.holder`` names who holds it otherwise."""

    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory)
        self.path = self.directory / LOCK_NAME
        self.held = False
        self.holder: dict[str, Any] | None = None
        self.took_over: dict[str, Any] | None = None

    def read(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None

    def acquire(self) -> bool:
        self.directory.mkdir(parents=True, exist_ok=True)
        with _guard(self.directory):
            current = self.read()
            if current is not None and holder_alive(current) is not False:
                self.holder = current
                return False
            self.took_over = current  # a stale holder (or None)
            mine = this_holder()
            write_json(self.path, mine)
            self.held, self.holder = True, mine
        return True

    def add_child(self, pid: int) -> None:
        """Name the subprocess this holder runs for the cell: the lock stays taken while it lives."""
        self._update({"child_pid": int(pid)})

    def drop_child(self, pid: int) -> None:
        self._update({"child_pid": None})

    def _mine(self) -> dict[str, Any] | None:
        """The lock file's content if it still names this process (call under the guard)."""
        current = self.read() or {}
        return current if current.get("pid") == os.getpid() and current.get("host") == self.holder["host"] else None

    def _update(self, fields: dict[str, Any]) -> None:
        if not self.held:
            return
        with _guard(self.directory):
            if (current := self._mine()) is not None:
                self.holder = {**current, **fields}
                write_json(self.path, self.holder)

    def release(self) -> None:
        if not self.held:
            return
        with _guard(self.directory):
            if self._mine() is not None:
                self.path.unlink(missing_ok=True)
        self.held = False

    def __enter__(self) -> "CellLock":
        self.acquire()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()

    def busy_message(self) -> str:
        holder = self.holder or {}
        unsure = "" if holder_alive(holder) else f" (if that process is gone, delete {self.path})"
        return f"another runner holds it: {describe(holder)}{unsure}"
