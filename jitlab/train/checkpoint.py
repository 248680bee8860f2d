"""A run's checkpoints: written atomically, the final step always saved, read back for sampling and evaluation.

A checkpoint is a Lightning checkpoint of ``JiTModule``: ``state_dict`` (keys ``net.*``), ``hyper_parameters``
(``net`` spec, ``flow``, ``optim``, ...), ``callbacks`` (the MultiEMA state with both averages), ``global_step``;
``jitlab convert-official`` writes the same layout. Reading uses ``weights_only=True`` (a checkpoint cannot run
code), memory-mapped, without the optimizer and scheduler states.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path
from typing import Any, Iterator, NamedTuple

import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO

from jitlab.atomic import atomic_path
from jitlab.train.ema import ema_state_dicts


class AtomicCheckpointIO(TorchCheckpointIO):
    """``torch.save`` to a temporary file beside the destination, then ``os.replace`` it into place: a kill or a
    full disk leaves the previous file whole (Lightning's own IO writes in the system's temp directory and moves
    the file onto the final name, copying across file systems: a full disk there leaves a truncated checkpoint).
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | os.PathLike,
                        storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options, got {storage_options!r}")
        if "://" in str(path):  # object storage (s3://, gs://): its own upload is all-or-nothing already
            return super().save_checkpoint(checkpoint, path, storage_options)
        with atomic_path(path) as tmp, open(tmp, "wb") as out:
            torch.save(checkpoint, out)
            out.flush()
            os.fsync(out.fileno())


class RunCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` that saves the step that ends the run whatever ``every_n_train_steps`` is, overwrites
    ``last.ckpt`` on a resume (``enable_version_counter`` False: never ``last-v1.ckpt`` beside a stale one) and
    writes every checkpoint through ``AtomicCheckpointIO``."""

    def __init__(self, *args: Any, enable_version_counter: bool = False, **kwargs: Any):
        super().__init__(*args, enable_version_counter=enable_version_counter, **kwargs)

    @property
    def state_key(self) -> str:  # the same key as ModelCheckpoint's: older checkpoints resume alike
        return super().state_key.replace(type(self).__qualname__, "ModelCheckpoint", 1)

    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:  # the default; a user's own IO is kept
            trainer.strategy.checkpoint_io = AtomicCheckpointIO()

    def on_train_batch_end(self, trainer: Any, pl_module: Any, *args: Any, **kwargs: Any) -> None:
        super().on_train_batch_end(trainer, pl_module, *args, **kwargs)
        if 0 < trainer.max_steps <= trainer.global_step:  # the run's last step: saved whatever the interval
            self.save_final(trainer)

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        self.save_final(trainer)  # a run ended otherwise (max_epochs, timer.duration): its last step too
        super().on_train_end(trainer, pl_module)

    def save_final(self, trainer: Any) -> None:
        if self._should_skip_saving_checkpoint(trainer) or trainer.global_step == 0:
            return
        candidates = self._monitor_candidates(trainer)
        if self.save_top_k != 0 and (self.monitor is None or self.monitor in candidates):
            self._save_topk_checkpoint(trainer, candidates)
        self._save_last_checkpoint(trainer, candidates)


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """A checkpoint for sampling or evaluation: memory-mapped when it is a zip archive (tensors are read when
    used), without its optimizer and scheduler states; a sharded (FSDP2) directory is gathered in memory."""
    from jitlab.train.strategy import is_sharded_checkpoint, read_sharded

    path = Path(path)
    if is_sharded_checkpoint(path):  # FSDP2's directory: gathered here, as `jitlab consolidate` writes it
        try:
            return read_sharded(path)
        except Exception as error:
            raise RuntimeError(f"cannot read sharded checkpoint {path}: {error}") from error
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except Exception as error:  # a truncated or foreign file: say which file
        raise RuntimeError(f"cannot read checkpoint {path}: {error}") from error
    if isinstance(ckpt, dict):  # what sampling and evaluation never need
        ckpt.pop("optimizer_states", None)
        ckpt.pop("lr_schedulers", None)
    return ckpt


class CheckpointState(NamedTuple):
    step: int
    finite: bool  # every weight and EMA is finite
    train_seconds: float | None  # training time the checkpoint embodies, over every resumed attempt (Timer)


def checkpoint_state(path: str | Path) -> CheckpointState:
    """Global step, finiteness and recorded training time of a Lightning checkpoint (its optimizer state unread)."""
    ckpt = read_checkpoint(path)
    train_seconds, tensors = None, list(_tensors(ckpt["state_dict"]))
    for key, state in (ckpt.get("callbacks") or {}).items():
        if str(key).startswith("Timer"):  # Lightning's Timer keeps its elapsed time across resumes
            train_seconds = (state.get("time_elapsed") or {}).get("train")
        if str(key).startswith("MultiEMA"):  # not every callback: ModelCheckpoint keeps kth_value = inf by design
            tensors += _tensors(state)
    finite = all(bool(torch.isfinite(t).all()) for t in tensors)
    return CheckpointState(int(ckpt.get("global_step", 0)), finite,
                           None if train_seconds is None else float(train_seconds))


def checkpoint_step(path: str | Path) -> int | None:
    """The global step of a checkpoint (file or sharded directory); None when it is no readable checkpoint."""
    from jitlab.train.strategy import is_sharded_checkpoint, sharded_meta

    try:  # a sharded directory's step is in its meta.pt: the shards are not gathered for it
        ckpt = sharded_meta(path) if is_sharded_checkpoint(path) else read_checkpoint(path)
    except (FileNotFoundError, RuntimeError, pickle.UnpicklingError, EOFError):
        return None
    return int(ckpt.get("global_step", 0)) if isinstance(ckpt, dict) else None


def _tensors(obj: Any) -> Iterator[torch.Tensor]:
    if torch.is_tensor(obj) and obj.is_floating_point():
        yield obj
    elif isinstance(obj, (dict, list, tuple)):
        for value in obj.values() if isinstance(obj, dict) else obj:
            yield from _tensors(value)


def load_module(path: str | Path, ema: int | None = 0, device: str | torch.device = "cpu",
                ckpt: dict[str, Any] | None = None):
    """A ``JiTModule`` in eval mode with EMA ``ema`` (index into the decays; ``None`` = raw weights); ``ckpt``: the
    checkpoint already read from ``path`` (saves reading it again)."""
    from jitlab.train.module import JiTModule

    ckpt = read_checkpoint(path) if ckpt is None else ckpt
    module = JiTModule(**{k: v for k, v in ckpt["hyper_parameters"].items()
                          if k not in ("_instantiator", "_class_path")})
    module.load_state_dict(ckpt["state_dict"])
    if ema is not None:
        averages = ema_state_dicts(ckpt)
        decays = list(averages)
        if not 0 <= ema < len(decays):
            raise IndexError(f"{path}: EMA index {ema} out of range; the checkpoint holds decays {decays}")
        missing, unexpected = module.net.load_state_dict(averages[decays[ema]], strict=False)
        if unexpected:
            raise KeyError(f"{path}: EMA weights have unknown keys {unexpected[:5]}")
    module.checkpoint_path = str(Path(path).resolve())  # with the step and EMA: what made the weights
    module.checkpoint_step = int(ckpt.get("global_step", 0))
    module.ema_decay = None if ema is None else decays[ema]
    return module.to(device).eval()
