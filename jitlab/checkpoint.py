"""Load a jitlab checkpoint for sampling and evaluation, with the weights of one EMA or the raw ones.

A checkpoint is a Lightning checkpoint of ``JiTModule``: ``state_dict`` (keys ``net.*``),
``hyper_parameters`` (``net`` spec, ``flow``, ``optim``, ...), ``callbacks`` (the MultiEMA state with
both averages), ``global_step``. ``jitlab convert-official`` writes the same layout.
Loading uses ``weights_only=True``: a checkpoint cannot run code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from jitlab.ema import ema_state_dicts


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a truncated or foreign file: say which file
        raise RuntimeError(f"cannot read checkpoint {path}: {error}") from error


def load_module(path: str | Path, ema: int | None = 0, device: str | torch.device = "cpu",
                ckpt: dict[str, Any] | None = None):
    """A ``JiTModule`` in eval mode with EMA ``ema`` (index into the decays; ``None`` = raw weights).

    ``ckpt``: the checkpoint already read from ``path`` (saves reading it again).
    """
    from jitlab.module import JiTModule

    ckpt = read_checkpoint(path) if ckpt is None else ckpt
    hparams = dict(ckpt["hyper_parameters"])
    hparams.pop("_instantiator", None)
    hparams.pop("_class_path", None)
    module = JiTModule(**hparams)
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
