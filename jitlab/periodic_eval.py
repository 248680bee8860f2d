"""Optional evaluation during `fit`: every N steps, score samples of the first EMA (FD-ref or FID).

Each process generates a disjoint slice of the global indices; the torchmetrics states sync, so
every process logs the same value. Rows go to ``metrics.json`` in the run directory (atomically),
with the same fields as `jitlab eval`.
"""

from __future__ import annotations

from typing import Literal

import lightning as L

from jitlab.callbacks import ema_context, run_dir
from jitlab.generate import SamplerSettings, rank_indices
from jitlab.sampling import FinalStep, Precision, Sampler


class PeriodicEval(L.Callback):
    """Args:
        every_n_steps: evaluate every N optimizer steps (0 = never).
        num_images: generated images per evaluation (the metric's name carries the count).
        features: ``refnet`` (FD-ref, embedded data) or ``inception`` (FID; needs ``inception_weights``).
        steps, sampler, cfg_scale, cfg_interval, seed, final_step, precision: the sampler settings
            (as `jitlab eval`'s flags of the same names).
        ref_stats: a reference statistics ``.npz``; default: built from the run's data (``ref_images`` images).
        score_resolution: resize generated and real images to this side before the features (that resolution's
            refnet); None: the data's resolution.
    """

    def __init__(self, every_n_steps: int = 0, num_images: int = 500,
                 features: Literal["refnet", "inception"] = "refnet",
                 steps: int = 25, sampler: Sampler = Sampler.heun, cfg_scale: float = 1.0,
                 cfg_interval: tuple[float, float] = (0.1, 1.0), seed: int = 0, inception_weights: str | None = None,
                 ref_stats: str | None = None, ref_images: int = 2000, batch_size: int = 100,
                 final_step: FinalStep = FinalStep.euler, precision: Precision = Precision.fp32,
                 score_resolution: int | None = None):
        self.every_n_steps = every_n_steps
        self.num_images = num_images
        self.features = features
        self.settings = SamplerSettings(Sampler(sampler), steps, cfg_scale, tuple(cfg_interval), seed,
                                        FinalStep(final_step), Precision(precision))
        self.score_resolution = score_resolution
        self.inception_weights = inception_weights
        self.ref_stats = ref_stats
        self.ref_images = ref_images
        self.batch_size = batch_size
        self._last = -1
        self._instruments = None

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch,
                           batch_idx: int) -> None:
        step = trainer.global_step
        if self.every_n_steps > 0 and step % self.every_n_steps == 0 and step != self._last:
            self._last = step
            self.evaluate(trainer, pl_module)

    def evaluate(self, trainer: L.Trainer, pl_module: L.LightningModule) -> list[dict]:
        from jitlab import evaluate

        if self._instruments is None:  # the extractor and reference statistics, built once per run
            data = dict(getattr(trainer.datamodule, "hparams", {}) or {})
            self._instruments = evaluate.instruments(self.features, data, self.inception_weights, self.ref_stats,
                                                     self.ref_images, str(pl_module.device), self.score_resolution)
        extractor, ref = self._instruments
        indices = rank_indices(self.num_images, trainer.global_rank, trainer.world_size)
        was_training = pl_module.training
        pl_module.eval()
        with ema_context(trainer, pl_module):
            results = evaluate.score_samples(pl_module, indices, self.settings, extractor, ref, self.batch_size)
        pl_module.train(was_training)
        rows = [{**r, "ema": "first", "step": trainer.global_step} for r in results]
        for row in rows:
            pl_module.log(f"eval/{row['metric']}", row["value"], rank_zero_only=True)
        if trainer.is_global_zero:
            path = run_dir(trainer) / "metrics.json"
            merged = evaluate.merge_rows(path, rows)
            evaluate.write_json(path, {"rows": merged, "best": evaluate.best_row(merged)})
        return rows
