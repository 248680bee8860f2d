"""Generate images by global index, in batches, on one process or a slice per process; and the checks before it.

An image's noise and label come from (seed, global index): ``N`` images are the same whether one process makes them
all or each of ``W`` processes makes ``rank, rank + W, ...``. The checks (``check_*``) are what `jitlab sample` and
`jitlab eval` validate before their first forward: each bad value raises one ``ConfigError`` naming the flag.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch
from torch import Tensor
from tqdm import tqdm

from jitlab.core.data.base import to_uint8
from jitlab.devices import local_device_index
from jitlab.errors import ConfigError
from jitlab.core.settings import SamplerSettings  # also imported from here by jitlab.experiments.bench


def dist_info() -> tuple[int, int]:
    """(rank, world size): from torch.distributed if initialised, else from the launcher's environment."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def rank_indices(total: int, rank: int, world: int) -> list[int]:
    """The global indices one process generates: disjoint across ranks, together 0..total-1."""
    return list(range(rank, total, world))


def process_device(device: str | None, world: int) -> str:
    """``device`` (None: cuda if available, else cpu); with several processes plain ``cuda`` becomes the process's
    own GPU on its node (``jitlab.devices.local_device_index``)."""
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    return f"cuda:{local_device_index()}" if device == "cuda" and world > 1 else device


def join_processes(device: str, world: int) -> None:
    """Join the torchrun process group (nccl on GPUs, gloo on CPUs) unless one process or joined already."""
    if world > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if device.startswith("cuda") else "gloo")


def labels_for(indices: Sequence[int], num_classes: int | None, classes: Sequence[int] | None = None) -> Tensor | None:
    """Labels by index: balanced over all classes (index mod classes), or cycling through ``classes``."""
    if num_classes is None:
        return None
    pool = list(classes) if classes else list(range(num_classes))
    bad = [c for c in pool if not 0 <= c < num_classes]
    if bad:
        raise ValueError(f"class labels {bad} out of range; the model has {num_classes} classes (0..{num_classes - 1})")
    return torch.tensor([pool[i % len(pool)] for i in indices], dtype=torch.long)


def generate_uint8(module, indices: Sequence[int], labels: Tensor | None, settings: SamplerSettings,
                   batch_size: int = 64, progress: bool = True) -> Iterator[tuple[list[int], Tensor, Tensor | None]]:
    """Yield (indices, uint8 images (B, C, H, W) on the CPU, labels) batch by batch."""
    indices = list(indices)
    bar = tqdm(total=len(indices), desc="sampling", unit="img", disable=not progress, dynamic_ncols=True)
    for start in range(0, len(indices), batch_size):
        chunk = indices[start:start + batch_size]
        chunk_labels = None if labels is None else labels[start:start + batch_size]
        x = module.generate(chunk, chunk_labels, **settings.generate_kwargs())  # (B, C, H, W) in [-1, 1]
        bar.update(len(chunk))
        yield chunk, to_uint8(x).cpu(), chunk_labels
    bar.close()


def check_output(flag: str, path: Path | None) -> None:
    """A result file about to be written: not a directory, inside a directory this process can write in."""
    if path is None:
        return
    path = Path(path).absolute()
    if path.is_dir():
        example = {"--npz": "samples.npz", "--png": "samples.png", "--out": "metrics.json"}.get(flag, "out")
        raise ConfigError(flag, f"{path} is a directory; give a file name (e.g. {path / example})")
    ancestor = path.parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise ConfigError(flag, f"cannot write {path}: {ancestor} is a file, not a directory")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise ConfigError(flag, f"cannot write {path}: no write permission in {ancestor}")


def check_device(device: str) -> torch.device:
    try:
        parsed = torch.device(device)
    except RuntimeError:
        raise ConfigError("--device", f"unknown device {device!r}; valid: cpu, cuda, cuda:N") from None
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("--device", f"{device} asked for, but no GPU is available here; use --device cpu")
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            raise ConfigError("--device", f"{device}: this machine has {torch.cuda.device_count()} GPU(s) "
                              f"(cuda:0..cuda:{torch.cuda.device_count() - 1})")
    return parsed


def read_jitlab_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """The checkpoint as a dict, or a ``ConfigError`` naming the file: missing, unreadable, or not jitlab's."""
    from jitlab.train.checkpoint import read_checkpoint

    field = f"checkpoint {path}"
    valid = "expected a .ckpt written by `jitlab fit` or `jitlab convert-official`"
    try:
        ckpt = read_checkpoint(path)
    except FileNotFoundError:
        raise ConfigError(field, "is a directory; " + valid if Path(path).is_dir() else "no such file") from None
    except RuntimeError as error:
        cause = error.__cause__ or error
        text = (str(cause).strip().splitlines() or [""])[0][:160]
        raise ConfigError(field, f"not a readable checkpoint ({type(cause).__name__}: {text or 'no details'}); "
                          f"{valid}") from None
    hparams = ckpt.get("hyper_parameters") if isinstance(ckpt, dict) else None
    if not isinstance(hparams, dict) or "net" not in hparams or "state_dict" not in ckpt:
        found = sorted(map(str, ckpt))[:8] if isinstance(ckpt, dict) else type(ckpt).__name__
        raise ConfigError(field, f"not a jitlab checkpoint (no hyper_parameters.net and state_dict; found {found}); "
                          f"{valid}")
    return ckpt


def check_ema(ckpt: dict[str, Any], emas: Sequence[int | None], path: str | os.PathLike) -> list[float]:
    """The checkpoint's EMA decays; every requested index must name one of them."""
    from jitlab.train.ema import ema_state_dicts

    if all(e is None for e in emas):
        return []
    try:
        decays = list(ema_state_dicts(ckpt))
    except KeyError:
        raise ConfigError("--ema", f"{path} holds no EMA weights; valid: none (the raw weights)") from None
    for ema in emas:
        if ema is not None and not 0 <= ema < len(decays):
            raise ConfigError("--ema", f"index {ema} out of range: {path} holds {len(decays)} EMA(s) (decays "
                              f"{decays}); valid: 0..{len(decays) - 1} or none")
    return decays


def check_classes(classes: Sequence[int] | None, num_classes: int | None) -> None:
    if not classes:
        return
    if num_classes is None:
        raise ConfigError("--classes", "the model is unconditional (no classes); leave --classes out")
    bad = [c for c in classes if not 0 <= c < num_classes]
    if bad:
        raise ConfigError("--classes", f"{bad} out of range; the model has {num_classes} classes, valid: "
                          f"0..{num_classes - 1}")


def report_error(error: Exception) -> int:
    """Print one ``jitlab: error:`` line for a user's mistake; the exit code 2."""
    text = error.args[0] if isinstance(error, KeyError) and error.args else str(error)
    print(f"jitlab: error: {' '.join(str(text).split())}", file=sys.stderr)
    return 2
