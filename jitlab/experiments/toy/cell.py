"""One cell of the Figure 2 grid: train ToyMLP through JiTModule on the spiral, sample, measure.

The same flow, loss, sampler and LightningModule as the images; only the network and the data differ.
"""

from __future__ import annotations

import logging
import time
import warnings
from dataclasses import asdict, dataclass
from typing import Sequence

import lightning as L
import torch

from jitlab.core.data.toy import SpiralDataModule, spiral_points
from jitlab.core.flow import FlowConfig
from jitlab.core.models.mlp import ToyMLP
from jitlab.train.module import JiTModule, OptimConfig
from jitlab.core.sampling import Sampler
from jitlab.experiments.toy.metrics import chamfer, off_manifold_residual, to_plane

TRUE_SEED = 12345  # the ground-truth spiral sample every cell is compared with
SAMPLE_SEED = 10_000  # generation noise seed = SAMPLE_SEED + cell seed


@dataclass(frozen=True)
class Settings:
    """Everything besides the cell that decides a result (a cached result is reused only if these match)."""

    steps: int = 2000  # fig2 sets it: the length probe's answer (--steps auto) or --steps N
    batch_size: int = 256
    lr: float = 1e-3
    schedule: str = "cosine"
    mu: float = 0.0
    sigma: float = 1.0
    noise: float = 0.02
    num_points: int = 1 << 20
    hidden: int = 256
    layers: int = 5
    samples: int = 2000
    sample_steps: int = 50
    method: str = "euler"


@dataclass(frozen=True)
class Cell:
    """One training: ambient dimension, prediction space, loss space, seed."""

    D: int
    pred: str
    loss: str
    seed: int

    @property
    def name(self) -> str:
        return f"D{self.D}-{self.pred}pred-{self.loss}loss-s{self.seed}"


LIGHTNING_LOGGERS = ("lightning.pytorch", "lightning.fabric", "lightning")


def quiet() -> dict[str, int]:
    """Silence Lightning's per-fit banners and warnings (one progress line per cell instead).

    Returns the previous logger levels, for ``logging.getLogger(name).setLevel(level)`` afterwards.
    """
    previous = {name: logging.getLogger(name).level for name in LIGHTNING_LOGGERS}
    for name in LIGHTNING_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module="lightning")
    return previous


def fit(cell: Cell, settings: Settings, schedule: str | None = None, max_steps: int | None = None,
        callbacks: Sequence[L.Callback] = ()) -> tuple[JiTModule, SpiralDataModule]:
    """Train ``cell`` with ``settings`` (``schedule`` and ``max_steps`` override theirs, for the length probe)."""
    steps = settings.steps if max_steps is None else max_steps
    L.seed_everything(cell.seed, verbose=False)  # the net's init and (via PL_GLOBAL_SEED) the training noise
    dm = SpiralDataModule(dim=cell.D, num_points=settings.num_points, global_batch_size=settings.batch_size,
                          noise=settings.noise, seed=cell.seed)
    net = ToyMLP(dim=cell.D, hidden=settings.hidden, layers=settings.layers)
    module = JiTModule(net, flow=FlowConfig(pred=cell.pred, loss=cell.loss, mu=settings.mu, sigma=settings.sigma),
                       optim=OptimConfig(lr=settings.lr, warmup_steps=0, schedule=schedule or settings.schedule))
    trainer = L.Trainer(
        accelerator="cpu", devices=1, max_steps=steps, logger=False, enable_progress_bar=False,
        enable_model_summary=False, enable_checkpointing=False, limit_val_batches=0, num_sanity_val_steps=0,
        log_every_n_steps=steps, callbacks=list(callbacks),  # per-t-bin logs cost time; nobody reads them here
    )
    trainer.fit(module, dm)
    return module, dm


def train_cell(cell: Cell, settings: Settings) -> dict:
    """Train, generate ``settings.samples`` points and measure; returns a JSON-ready result."""
    start = time.perf_counter()
    module, dm = fit(cell, settings)
    train_seconds = time.perf_counter() - start
    module.eval()
    x = module.generate(range(settings.samples), None, steps=settings.sample_steps,
                        method=Sampler(settings.method), seed=SAMPLE_SEED + cell.seed)  # (n, D)
    s = to_plane(x, dm.projection)  # (n, 2)
    truth = dm.spiral_2d(settings.samples, seed=TRUE_SEED)  # (n, 2)
    return {
        "cell": asdict(cell),
        "settings": asdict(settings),
        "metrics": {"chamfer": float(chamfer(s, truth)), "residual": float(off_manifold_residual(x, dm.projection))},
        "final_loss": float(module.trainer.callback_metrics.get("train/loss", torch.tensor(float("nan")))),
        "train_seconds": round(train_seconds, 2),
        "seconds": round(time.perf_counter() - start, 2),
        "points": [[round(float(a), 4), round(float(b), 4)] for a, b in s.tolist()],
    }


def chamfer_floor(settings: Settings) -> float:
    """Chamfer distance between two independent true samples of the same size: the best a cell can score."""
    a, b = (spiral_points(settings.samples, settings.noise, torch.Generator().manual_seed(seed))
            for seed in (TRUE_SEED, TRUE_SEED + 1))  # (n, 2) each
    return float(chamfer(a, b))
