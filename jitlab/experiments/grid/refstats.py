"""`jitlab grid run --build_ref_stats`: make the missing reference statistics of a grid's cells first.

A cell scored with Inception on ImageNet names its statistics (``eval.ref_stats``; the release ships only 256
and 512). Each missing file is made once by `jitlab fid-stats` from the cells' own data root at their resolution,
on all local GPUs; an interrupted build resumes when the command is run again.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, Iterable

from jitlab.errors import ConfigError
from jitlab.fitview import FitView


def missing_ref_stats(cells: Iterable[Any]) -> dict[Path, tuple[str, int]]:
    """``{statistics file: (data root, resolution)}`` for the Inception-scored ImageNet cells whose file is absent."""
    missing: dict[Path, tuple[str, int]] = {}
    for cell in cells:
        path, fit = cell.eval.get("ref_stats"), FitView.of(cell.config)
        if not path or cell.eval.get("features") != "inception" or Path(path).exists():
            continue
        if not fit.data_class.endswith("ImageNetDataModule"):
            continue
        wanted = (str(fit.data.get("root")), int(fit.data.get("resolution", 256)))
        if missing.setdefault(Path(path), wanted) != wanted:
            raise ConfigError(f"eval.ref_stats {path}", f"is named by cells at {missing[Path(path)]} and at {wanted} "
                                                        "(root, resolution): one file cannot be both")
    return missing


def fid_stats_command(root: str, resolution: int, out: Path, gpus: int) -> list[str]:
    verb = ["-m", "jitlab.commands.cli", "fid-stats", "--root", root, "--resolution", str(resolution),
            "--features", "inception", "--out", str(out)]
    if gpus > 1:  # one process per GPU, the sums all-reduced
        return [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={gpus}", *verb]
    return [sys.executable, *verb]


def build_ref_stats(cells: Iterable[Any], echo: Callable[[str], None] = print,
                    call: Callable[[list[str]], int] = subprocess.call) -> list[Path]:
    """Make every missing statistics file of ``cells``; returns the files made. A failure is a ConfigError."""
    import torch

    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    made = []
    for path, (root, resolution) in missing_ref_stats(cells).items():
        command = fid_stats_command(root, resolution, path, gpus)
        echo(f"jitlab grid: building reference statistics {path} ({resolution}px, {root}): "
             + " ".join(command[1:]))
        code = call(command)
        if code != 0 or not path.exists():
            raise ConfigError("--build_ref_stats", f"`jitlab fid-stats` for {path} exited with code {code} (its "
                                                   "message is above); run it again to resume")
        made.append(path)
    return made
