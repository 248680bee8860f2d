"""Sample grids during and after training: fixed labels and noise, so a person can watch samples improve."""

from __future__ import annotations

import contextlib
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_only
from torch import Tensor

from jitlab.core.data.base import to_uint8
from jitlab.core.images import image_grid, save_png
from jitlab.core.settings import PreviewSettings
from jitlab.train.ema import MultiEMA
from jitlab.train.strategy import is_sharded


def run_dir(trainer: L.Trainer) -> Path:
    """Where a run writes its files: the logger's version directory, else the root directory."""
    if trainer.logger is not None and trainer.logger.log_dir is not None:
        return Path(trainer.logger.log_dir)
    return Path(trainer.default_root_dir)


def ema_context(trainer: L.Trainer, pl_module: L.LightningModule):
    """Swap in the first EMA if the run keeps one (and it is not swapped in already)."""
    emas = [callback for callback in trainer.callbacks if isinstance(callback, MultiEMA)]
    return emas[0].swapped(pl_module, index=0) if emas else contextlib.nullcontext()


class SampleGrid(L.Callback):
    """Write a grid of samples (and one of the training data) to TensorBoard and as PNG files.

    Args:
        every_n_steps: sample every N optimizer steps (0 = only at the end of training).
        num_images: images in the grid; labels cycle through the classes, one row per class.
        sampler: the ``PreviewSettings`` fields (sampler, steps, cfg_scale, cfg_interval, seed, final_step,
            precision; few steps keep this cheap; a fixed seed keeps consecutive grids comparable).
    """

    def __init__(self, every_n_steps: int = 0, num_images: int = 40, **sampler):
        self.every_n_steps = every_n_steps
        self.num_images = num_images
        self.settings = PreviewSettings(**sampler)  # the CLI's flags --samples.steps etc. are its fields

    def _labels(self, pl_module: L.LightningModule) -> tuple[Tensor | None, int]:
        classes = pl_module.null_class
        if classes is None:
            return None, 8
        nrow = max(1, self.num_images // min(classes, self.num_images))
        labels = torch.arange(self.num_images) // nrow % classes  # row r shows class r
        return labels, nrow

    @rank_zero_only
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if len(pl_module.sample_shape) != 3:
            return
        x, _ = next(iter(trainer.datamodule.train_dataloader()))
        grid = image_grid(x[: self.num_images], nrow=8)  # the data loader yields uint8 already
        save_png(grid, run_dir(trainer) / "data.png")

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch,
                           batch_idx: int) -> None:
        step = trainer.global_step
        if self.every_n_steps > 0 and step % self.every_n_steps == 0 and step != getattr(self, "_last", -1):
            self._last = step
            self.write(trainer, pl_module, f"samples_step{step:07d}.png")

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.write(trainer, pl_module, "samples.png")

    def write(self, trainer: L.Trainer, pl_module: L.LightningModule, name: str) -> None:
        every_rank = is_sharded(pl_module.net)  # a sharded net's forward needs every process; rank 0 writes
        if len(pl_module.sample_shape) != 3 or not (trainer.is_global_zero or every_rank):
            return  # only images make a grid; the toy has its own figure
        labels, nrow = self._labels(pl_module)
        was_training = pl_module.training
        pl_module.eval()
        with ema_context(trainer, pl_module):
            images = pl_module.generate(range(self.num_images), labels,
                                        **self.settings.generate_kwargs())  # (N, C, H, W) in [-1, 1]
        pl_module.train(was_training)
        if not trainer.is_global_zero:
            return
        grid = image_grid(to_uint8(images).cpu(), nrow=nrow)
        save_png(grid, run_dir(trainer) / name)
        experiment = getattr(trainer.logger, "experiment", None)
        if hasattr(experiment, "add_image"):
            experiment.add_image("samples", grid, global_step=trainer.global_step)
