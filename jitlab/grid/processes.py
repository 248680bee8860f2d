"""The grid runner's subprocesses: started, tracked, and stopped with it.

A signal to `jitlab grid run` (SIGINT from Ctrl-C, SIGTERM from `kill` or a scheduler) is passed on to
every running `jitlab fit` / `jitlab eval` / `jitlab train-ref` as SIGTERM (a training then saves
``last.ckpt`` at the end of its step), no new process is started, and the runner waits for its children
before it exits. SIGTERM, not the signal received: a Ctrl-C reaches the children from the terminal too,
and a second SIGINT would stop a training at once, without its checkpoint.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import threading
from typing import Any, Iterator


class Children:
    """Live subprocesses of this process; ``stop`` signals them all and refuses new ones."""

    def __init__(self) -> None:
        self._procs: set[subprocess.Popen] = set()
        self._lock = threading.RLock()  # re-entrant: the signal handler runs on the main thread, maybe inside
        self.signum: int | None = None

    def call(self, args: list[str], **kwargs: Any) -> int:
        """``subprocess.call`` that the runner's signals reach; 128 + signal once the runner is stopping."""
        with self._lock:
            if self.signum is not None:
                return 128 + self.signum
            proc = subprocess.Popen(args, **kwargs)
            self._procs.add(proc)
        try:
            return proc.wait()
        finally:
            with self._lock:
                self._procs.discard(proc)

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
    """While inside: SIGINT and SIGTERM stop ``children`` (main thread only; elsewhere nothing changes)."""
    if threading.current_thread() is not threading.main_thread():
        yield children
        return
    children.signum = None  # a new run of the grid in this process starts unstopped
    previous = {s: signal.signal(s, children.stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield children
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
