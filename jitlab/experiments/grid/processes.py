"""The grid runner's subprocesses: started, tracked, and stopped with it.

SIGINT, SIGTERM or SIGHUP to `jitlab grid run` reaches every running child as SIGTERM (a training saves
``last.ckpt`` at the end of its step; a second SIGINT would stop it at once, without one), no new child starts,
and the runner waits for them. A runner killed outright still takes its children with it: each asks the kernel
for SIGTERM when its parent dies (Linux ``PR_SET_PDEATHSIG``), and the cell's lock names it while it stops.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import threading
from typing import Any, Callable, Iterator

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None


def die_with(parent: int) -> Callable[[], None] | None:
    """A ``preexec_fn``: the child gets SIGTERM when ``parent`` dies, or at once if it already has (Linux ``prctl``
    through ctypes; elsewhere None)."""
    if _LIBC is None:
        return None

    def preexec() -> None:
        _LIBC.prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
        if os.getppid() != parent:
            os.kill(os.getpid(), signal.SIGTERM)

    return preexec


class Children:
    """Live subprocesses of this process; ``stop`` signals them all and refuses new ones."""

    def __init__(self) -> None:
        self._procs: set[subprocess.Popen] = set()
        self._lock = threading.RLock()  # re-entrant: the signal handler runs on the main thread, maybe inside
        self._local = threading.local()  # per thread (one cell each): who is told of its subprocesses
        self.signum: int | None = None

    @contextlib.contextmanager
    def watched(self, on_start: Callable[[int], None], on_end: Callable[[int], None]) -> Iterator[None]:
        """While inside, on this thread: ``on_start(pid)`` after each subprocess starts, ``on_end(pid)`` after it
        ended (a cell's lock records its trainer)."""
        previous = getattr(self._local, "hooks", None)
        self._local.hooks = (on_start, on_end)
        try:
            yield
        finally:
            self._local.hooks = previous

    def call(self, args: list[str], **kwargs: Any) -> int:
        """``subprocess.call`` that the runner's signals reach; 128 + signal once the runner is stopping."""
        on_start, on_end = getattr(self._local, "hooks", None) or (lambda pid: None, lambda pid: None)
        with self._lock:
            if self.signum is not None:
                return 128 + self.signum
            proc = subprocess.Popen(args, preexec_fn=die_with(os.getpid()), **kwargs)
            self._procs.add(proc)
        try:
            on_start(proc.pid)
            return proc.wait()
        finally:
            with self._lock:
                self._procs.discard(proc)
            on_end(proc.pid)

    def stop(self, signum: int, frame: Any = None) -> None:
        with self._lock:
            first = self.signum is None
            self.signum = signum
            procs = list(self._procs)
        if first:
            print(f"jitlab grid: {signal.Signals(signum).name}: stopping {len(procs)} running process(es) "
                  "(trainings save last.ckpt first) and waiting for them", flush=True)
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)

    @property
    def stopping(self) -> bool:
        return self.signum is not None


CHILDREN = Children()


@contextlib.contextmanager
def forward_signals(children: Children = CHILDREN) -> Iterator[Children]:
    """While inside: SIGINT, SIGTERM and SIGHUP stop ``children`` (main thread only; elsewhere nothing changes)."""
    if threading.current_thread() is not threading.main_thread():
        yield children
        return
    children.signum = None  # a new run of the grid in this process starts unstopped
    previous = {s: signal.signal(s, children.stop) for s in STOP_SIGNALS}
    try:
        yield children
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
