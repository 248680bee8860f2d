"""Training images/s: through the Lightning Trainer that `jitlab fit` builds, and through a plain loop.

Both read the same training loader, so their difference is what the Trainer, its callbacks and the module's
logging add per step. The clock reads the end of every step after the device finished it; the first ``warmup``
steps are not counted.
"""

from __future__ import annotations

import time
from typing import Any

import lightning as L
import torch

from jitlab.experiments.bench.machine import synchronize


class StepClock(L.Callback):
    """The time at the end of every training step."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        synchronize(pl_module.device)
        self.times.append(time.perf_counter())


def images_per_sec(times: list[float], warmup: int, batch: int) -> float:
    """Images/s over the steps after the first ``warmup`` (``times``: the end of every step)."""
    if warmup < 1 or len(times) < warmup + 1:
        raise ValueError(f"need at least one warm-up and one timed step, got {len(times)} steps, warm-up {warmup}")
    timed = times[warmup - 1:]  # from the end of the last warm-up step
    return batch * (len(timed) - 1) / (timed[-1] - timed[0])


def trainer_rate(cli: Any, warmup: int, batch: int) -> float:
    """Run ``cli.trainer.fit`` (a `jitlab fit` whose max_steps is warm-up + timed steps); images/s."""
    clock = StepClock()
    cli.trainer.callbacks.append(clock)
    cli.trainer.fit(cli.model, cli.datamodule)
    return images_per_sec(clock.times, warmup, batch)


def find_callback(trainer: L.Trainer, kind: type) -> Any:
    for callback in trainer.callbacks:
        if isinstance(callback, kind):
            return callback
    raise LookupError(f"the Trainer has no {kind.__name__} callback")


def raw_rate(trainer: L.Trainer, module: L.LightningModule, datamodule: L.LightningDataModule, ema: Any, warmup: int,
             steps: int, bf16: bool) -> float:
    """Images/s of a plain loop over the same module and loader after ``trainer`` ran: forward, backward, the
    Trainer's own optimizer and schedule (continued: no second copy of their state), the run's ``MultiEMA``; bf16
    autocast when the Trainer ran bf16-mixed. No logging, no hooks."""
    device = module.device
    optimizer, schedule = trainer.optimizers[0], trainer.lr_scheduler_configs[0].scheduler
    generator = torch.Generator(device=device)
    loader = iter(datamodule.train_dataloader())
    module.train()
    times: list[float] = []
    for step in range(warmup + steps):
        x, y = next(loader)  # uint8 (N, C, H, W), (N,)
        x, y = datamodule.on_after_batch_transfer((x.to(device), y.to(device)), 0)  # (N, C, H, W) in [-1, 1]
        generator.manual_seed(step)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            per_sample, _ = module.loss_per_sample(x, module.drop_labels(y, generator), generator)  # (N,)
            loss = per_sample.mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        ema.update(module)
        synchronize(device)
        times.append(time.perf_counter())
    return images_per_sec(times, warmup, x.shape[0])
