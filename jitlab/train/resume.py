"""Resuming and interrupting `jitlab fit`.

``--ckpt_path last`` resumes the run's newest checkpoint (an error when there is none); ``--ckpt_path auto``
starts fresh then (what a cluster script passes every time). A resumed run must be the run that wrote the
checkpoint: another network or flow is refused, other changes are allowed with a warning, and the command
line's values are used (Lightning's CLI would silently put the checkpoint's model arguments in their place).
"""

from __future__ import annotations

import signal
import sys
import threading
import zipfile
from enum import Enum
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info, rank_zero_only
from lightning.pytorch.utilities.exceptions import SIGTERMException

from jitlab.classpath import import_path
from jitlab.errors import ConfigError, one_line
from jitlab.identity import NET_LEVER_KEYS, data_content

RESUME_WORDS = ("last", "auto")
_IGNORED_MODEL_KEYS = {"net", "flow", "compile", "_instantiator", "_class_path"}  # compile: same weights


@rank_zero_only
def say(line: str) -> None:
    """One line on stderr, from the first process only (every DDP process runs the same checks)."""
    print(line, file=sys.stderr, flush=True)


# -- which checkpoint ---------------------------------------------------------------------------

def checkpoint_candidates(root: Path, dirpath: Path | None) -> list[Path]:
    """Every checkpoint a run of ``root`` may resume from: in ``dirpath`` if set, else in every
    ``root/lightning_logs/version_*/checkpoints``, and Lightning's SLURM auto-requeue's ``root/hpc_ckpt_*.ckpt``."""
    root = Path(root)
    dirs = [Path(dirpath)] if dirpath is not None else sorted(root.glob("lightning_logs/version_*/checkpoints"))
    found = [p for d in dirs for p in d.glob("*.ckpt")]
    found += root.glob("hpc_ckpt_*.ckpt")  # Lightning's SLURM auto-requeue saves these at the requeue signal
    return [p for p in found if p.is_file() or (p / "meta.pt").is_file()]  # a file, or a sharded directory


def newest_checkpoint(root: Path, dirpath: Path | None) -> tuple[Path | None, dict[str, Any], list[str]]:
    """(the newest readable checkpoint of the run or None, its content memory-mapped, the unreadable ones passed
    over: a file cut short by a kill while being written)."""
    skipped = []
    for path in sorted(checkpoint_candidates(root, dirpath), key=lambda p: p.stat().st_mtime, reverse=True):
        try:
            return path, read_training_checkpoint(path), skipped
        except ConfigError:
            skipped.append(str(path))
    return None, {}, skipped


def resolve_ckpt_path(value: str, root: Path, dirpath: Path | None) -> tuple[str | None, str]:
    """(the checkpoint to resume from or None, one line saying so) for ``--ckpt_path last|auto``: the newest
    readable file (``newest_checkpoint``)."""
    where = str(dirpath) if dirpath is not None else f"{root}/lightning_logs/version_*/checkpoints"
    path, ckpt, skipped = newest_checkpoint(root, dirpath)
    if path is not None:
        note = f" (passed over unreadable {', '.join(skipped)})" if skipped else ""
        return str(path), f"jitlab: --ckpt_path {value}: resuming from {path} (step {ckpt.get('global_step')}){note}"
    passed = f" (passed over unreadable {', '.join(skipped)}: not a checkpoint of `jitlab fit`)" if skipped else ""
    if value == "last":
        raise ConfigError("--ckpt_path", f"last: nothing to resume: no readable checkpoint in {where}{passed}; "
                                         "pass --ckpt_path auto to start fresh when there is none, or a file")
    return None, f"jitlab: --ckpt_path auto: nothing to resume in {where}{passed}; starting fresh"


def read_training_checkpoint(path: str | Path) -> dict[str, Any]:
    """The checkpoint at ``path`` (memory-mapped: tensors are not read), checked to be one `jitlab fit` wrote."""
    from jitlab.train.strategy import is_sharded_checkpoint, sharded_meta

    path = Path(path)
    if is_sharded_checkpoint(path):  # a sharded checkpoint (jitlab.train.strategy): the tensors are in its shards
        try:
            ckpt = sharded_meta(path)
        except Exception as error:
            raise ConfigError("--ckpt_path", f"{path}/meta.pt is not readable ({one_line(error, 160)})") from None
        if not isinstance(ckpt, dict) or "hyper_parameters" not in ckpt or "loops" not in ckpt:
            raise ConfigError("--ckpt_path", f"{path} is not a sharded checkpoint of `jitlab fit`")
        return ckpt
    if not path.is_file():
        raise ConfigError("--ckpt_path", f"{path}: no such file; give a checkpoint file, or 'last' / 'auto' "
                                         "to resume the newest run of --trainer.default_root_dir")
    if not zipfile.is_zipfile(path):  # torch.save writes a zip archive
        raise ConfigError("--ckpt_path", f"{path} is not a checkpoint (not a torch.save archive: another kind of "
                                         "file, or one cut short while it was being written)")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as error:  # a damaged archive, a pickle of something else: name the file
        raise ConfigError("--ckpt_path", f"{path} is not a readable checkpoint ({one_line(error, 160)})") from None
    missing = [k for k in ("state_dict", "hyper_parameters", "optimizer_states", "loops")
               if not isinstance(ckpt, dict) or k not in ckpt]
    if missing:
        raise ConfigError("--ckpt_path", f"{path} is not a checkpoint of `jitlab fit` (it has no "
                                         f"{', '.join(missing)}); a run resumes only from its own checkpoints")
    return ckpt


# -- is it the same run -------------------------------------------------------------------------

def _plain(value: Any) -> Any:
    if isinstance(value, Enum):
        return _plain(value.value)
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def _class(path: str) -> Any:
    try:
        return import_path(path)
    except (ImportError, AttributeError, ValueError):
        return path


def _compare(prefix: str, old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    old, new = _plain(old), _plain(new)
    return [f"{prefix}{key}: checkpoint {old.get(key)!r}, now {new.get(key)!r}"
            for key in sorted(set(old) | set(new)) if old.get(key) != new.get(key)]


def config_differences(ckpt: dict[str, Any], config: dict[str, Any]) -> tuple[list[str], list[str]]:
    """(differences that make it another run, differences allowed with a warning) between a checkpoint's
    recorded arguments and a resolved `jitlab fit` config (a dict, the network's data-given sizes filled in)."""
    hparams = dict(ckpt.get("hyper_parameters") or {})
    model = config.get("model") or {}
    net_old, net_new = hparams.get("net") or {}, model.get("net") or {}
    refused = []
    if _class(str(net_old.get("class_path"))) is not _class(str(net_new.get("class_path"))):
        refused.append(f"model.net.class_path: checkpoint {net_old.get('class_path')!r}, "
                       f"now {net_new.get('class_path')!r}")
    new_args = {k: v for k, v in (net_new.get("init_args") or {}).items()
                if (v is not None or k in net_old) and k not in NET_LEVER_KEYS}
    old_args = {k: v for k, v in (net_old.get("init_args") or {}).items() if k not in NET_LEVER_KEYS}
    refused += _compare("model.net.init_args.", old_args, new_args)  # a memory lever (checkpointing) may change
    refused += _compare("model.flow.", hparams.get("flow") or {}, model.get("flow") or {})
    old_rest = {k: v for k, v in hparams.items() if k not in _IGNORED_MODEL_KEYS}
    new_rest = {k: v for k, v in model.items() if k in old_rest}
    warned = []
    for key in sorted(old_rest):
        if isinstance(old_rest[key], dict):
            warned += _compare(f"model.{key}.", old_rest[key], new_rest.get(key) or {})
        elif _plain(old_rest[key]) != _plain(new_rest.get(key)):
            warned.append(f"model.{key}: checkpoint {old_rest[key]!r}, now {new_rest.get(key)!r}")
    data_old = ckpt.get("datamodule_hyper_parameters")
    data_new = (config.get("data") or {}).get("init_args")
    if isinstance(data_old, dict) and isinstance(data_new, dict):
        old, new = data_content(data_old), data_content(data_new)
        warned += _compare("data.init_args.", old, {k: v for k, v in new.items() if k in old})
    return refused, warned


def check_resume(ckpt_path: str, config: dict[str, Any]) -> None:
    """Refuse to resume ``ckpt_path`` with another network or flow; warn about other changed settings."""
    ckpt = read_training_checkpoint(ckpt_path)
    refused, warned = config_differences(ckpt, config)
    if refused:
        raise ConfigError("--ckpt_path", f"{ckpt_path} was trained with another network or flow than this "
                                         f"command line gives: {'; '.join(refused)}; resume with the run's own "
                                         "settings, or start a new run (another --trainer.default_root_dir)")
    if warned:
        say(f"jitlab: resuming {ckpt_path} with changed settings (allowed): {'; '.join(warned)}")


# -- stopping on a signal -----------------------------------------------------------------------

class SaveOnSignal(L.Callback):
    """SIGINT (Ctrl-C), SIGTERM and SIGHUP: finish the current step, save ``last.ckpt``, stop (exit 128 + signal).

    Lightning turns SIGTERM into a stop at the end of the step (``SIGTERMException``, on every rank) and calls
    ``on_exception``; the first Ctrl-C and SIGHUP go to the same handler, a second Ctrl-C interrupts at once
    (a step cut in the middle is no state to resume from). Not Lightning's ``OnExceptionCheckpoint``: it saves
    on every exception, a crash included.
    """

    def __init__(self) -> None:
        self.signum: int | None = None  # the signal that stopped the run
        self._previous: Any = None
        self._previous_hup: Any = None
        self._trained = False

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # after Lightning registered its SIGTERM handler (just before the fit loop starts)
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._on_sigint)
            self._previous_hup = signal.signal(signal.SIGHUP, self._on_sighup)

    def _on_sighup(self, signum: int, frame: Any) -> None:
        self.signum = self.signum or signal.SIGHUP
        self._stop_after_step(frame, "SIGHUP: stopping after this step with a checkpoint")

    def _on_sigint(self, signum: int, frame: Any) -> None:
        self.signum = signal.SIGINT
        signal.signal(signal.SIGINT, self._previous or signal.default_int_handler)  # a second Ctrl-C: at once
        self._stop_after_step(frame, "Ctrl-C: stopping after this step with a checkpoint (Ctrl-C again: stop now)")

    @staticmethod
    def _stop_after_step(frame: Any, message: str) -> None:
        rank_zero_info(f"jitlab: {message}")
        handler = signal.getsignal(signal.SIGTERM)
        if callable(handler):
            handler(signal.SIGTERM, frame)  # Lightning's: stop at the end of the step, on every process

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        self._trained = True

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if not isinstance(exception, SIGTERMException):
            return
        self.signum = self.signum or signal.SIGTERM
        if not self._trained:
            return  # nothing trained since the start (or the resume): the existing checkpoints say it all
        callback = trainer.checkpoint_callback
        dirpath = getattr(callback, "dirpath", None) or trainer.default_root_dir
        name = getattr(callback, "CHECKPOINT_NAME_LAST", "last") + getattr(callback, "FILE_EXTENSION", ".ckpt")
        path = Path(dirpath) / name
        trainer.save_checkpoint(path)
        rank_zero_info(f"jitlab: {signal.Signals(self.signum).name} at step {trainer.global_step}: saved {path}; "
                       "the same command with --ckpt_path last continues")

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self._previous is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, self._previous)
            signal.signal(signal.SIGHUP, self._previous_hup or signal.SIG_DFL)
            self._previous = self._previous_hup = None
