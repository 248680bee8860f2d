"""Generate images by global index, in batches, on one process or a slice per process; and the checks before it.

Every image's initial noise comes from (seed, global index) and its label from the index too, so
``N`` images are the same whether one process makes them all or each of ``W`` processes makes the
indices ``rank, rank + W, ...``.

The checks (``check_*``) are what `jitlab sample` and `jitlab eval` validate before their first forward: each
bad value raises one ``ConfigError`` naming the flag (or file) and what is valid.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch
from torch import Tensor
from tqdm import tqdm

from jitlab.data.base import to_uint8
from jitlab.errors import ConfigError
from jitlab.sampling import FinalStep, Precision, Sampler, nfe


@dataclass
class SamplerSettings:
    """Everything that decides a generated image besides the weights; recorded with every result."""

    sampler: Sampler = Sampler.heun
    steps: int = 50
    cfg_scale: float = 1.0
    cfg_interval: tuple[float, float] = (0.1, 1.0)
    seed: int = 0
    final_step: FinalStep = FinalStep.euler
    precision: Precision = Precision.fp32

    def record(self) -> dict:
        return {"sampler": str(Sampler(self.sampler)), "steps": self.steps, "nfe": nfe(self.sampler, self.steps),
                "cfg_scale": self.cfg_scale, "cfg_interval": list(self.cfg_interval), "seed": self.seed,
                "final_step": str(FinalStep(self.final_step)), "precision": str(Precision(self.precision))}


def dist_info() -> tuple[int, int]:
    """(rank, world size): from torch.distributed if initialised, else from the launcher's environment."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def rank_indices(total: int, rank: int, world: int) -> list[int]:
    """The global indices one process generates: disjoint across ranks, together 0..total-1."""
    return list(range(rank, total, world))


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
        x = module.generate(chunk, chunk_labels, steps=settings.steps, method=settings.sampler,
                            cfg_scale=settings.cfg_scale, cfg_interval=tuple(settings.cfg_interval),
                            seed=settings.seed, final_step=settings.final_step,
                            precision=settings.precision)  # (B, C, H, W) in [-1, 1]
        bar.update(len(chunk))
        yield chunk, to_uint8(x).cpu(), chunk_labels
    bar.close()


# -- the command line of `jitlab sample` and `jitlab eval` ----------------------------------------------------

class Parser(argparse.ArgumentParser):
    """argparse with the defaults in ``--help`` and usage errors as one ``jitlab: error:`` line, exit code 2."""

    def __init__(self, **kwargs: Any):
        super().__init__(formatter_class=argparse.ArgumentDefaultsHelpFormatter, **kwargs)

    def error(self, message: str):
        self.exit(2, f"jitlab: error: {message} (see `{self.prog} --help`)\n")


def choice(enum: type[Enum]):
    """An argparse type for a typed choice: a bad value names the valid ones."""

    def parse(text: str):
        try:
            return enum(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not one of {', '.join(e.value for e in enum)}") from None

    parse.__name__ = enum.__name__
    return parse


def parse_ema(value: str) -> int | None:
    """An EMA index (0 = the first decay) or ``none``/``raw`` for the raw weights."""
    if value.lower() in ("none", "raw", "-1"):
        return None
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"an EMA index is 0, 1, ... or none (raw weights), got {value!r}") from None


def parse_resolution(value: str) -> int | None:
    """``none`` or an image side in pixels (>= 8)."""
    if value.lower() in ("none", "null"):
        return None
    try:
        side = int(value)
    except ValueError:
        side = 0
    if side < 8:
        raise argparse.ArgumentTypeError(f"a resolution is a whole number of pixels >= 8 or none, got {value!r}")
    return side


def add_sampler_flags(p: argparse.ArgumentParser) -> None:
    """The sampler flags both verbs share (their CFG flags differ: eval sweeps them)."""
    p.add_argument("--sampler", type=choice(Sampler), choices=list(Sampler), default=Sampler.heun,
                   help="ODE integrator (Heun's last step is plain Euler, as in the release)")
    p.add_argument("--steps", type=int, default=50, help="integration steps")
    p.add_argument("--final_step", type=choice(FinalStep), choices=list(FinalStep), default=FinalStep.euler,
                   help="euler: the release's last step (its sample_t_eps clamp leaves some noise); "
                        "x: the last step lands on the x-prediction")
    p.add_argument("--precision", type=choice(Precision), choices=list(Precision), default=Precision.fp32,
                   help="the network's forward while sampling: fp32, or bf16 autocast (the release on GPU)")
    p.add_argument("--seed", type=int, default=0, help="noise seed (each image's noise comes from seed and index)")


# -- checks before the first forward ----------------------------------------------------------------------------

def check_at_least(flag: str, value: float, minimum: float, what: str = "") -> None:
    if not value >= minimum:  # also NaN
        raise ConfigError(flag, f"must be >= {minimum:g}{what}, got {value:g}")


def check_cfg(scales: Sequence[float], intervals: Sequence[tuple[float, float]]) -> None:
    for scale in scales:
        if not (math.isfinite(scale) and scale >= 0):
            raise ConfigError("--cfg", f"a CFG scale is a number >= 0 (1 = no guidance, 0 = unconditional), "
                              f"got {scale:g}")
    for low, high in intervals:
        if not 0 <= low < high <= 1:
            raise ConfigError("--cfg_interval",
                              f"T_MIN T_MAX must satisfy 0 <= T_MIN < T_MAX <= 1, got {low:g} {high:g}")


def check_output(flag: str, path: Path | None) -> None:
    """A result file about to be written: not a directory, inside a directory this process can write in."""
    if path is None:
        return
    path = Path(path).absolute()
    if path.is_dir():
        raise ConfigError(flag, f"{path} is a directory; give a file name (e.g. {path / _example(flag)})")
    ancestor = path.parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise ConfigError(flag, f"cannot write {path}: {ancestor} is a file, not a directory")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise ConfigError(flag, f"cannot write {path}: no write permission in {ancestor}")


def _example(flag: str) -> str:
    return {"--npz": "samples.npz", "--png": "samples.png", "--out": "metrics.json"}.get(flag, "out")


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
    from jitlab.checkpoint import read_checkpoint

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
    from jitlab.ema import ema_state_dicts

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
