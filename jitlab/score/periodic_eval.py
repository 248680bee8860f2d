"""Optional evaluation during `fit`: every N steps, score samples of the first EMA (FD-ref or FID).

Each process generates a slice; the torchmetrics states sync, so every process logs the same value. Rows go to the
run's ``metrics.json`` with the fields of `jitlab eval` (the scoring is ``jitlab.score.evaluation``'s).
"""

from __future__ import annotations

import lightning as L

from jitlab.score import evaluation
from jitlab.train.callbacks import ema_context, run_dir
from jitlab.score.generate import rank_indices
from jitlab.core.settings import PeriodicSettings


class PeriodicEval(L.Callback):
    """Args:
        every_n_steps: evaluate every N optimizer steps (0 = never).
        settings: the ``PeriodicSettings`` fields (``--evaluation.num_images``, ``.features``, ``.steps``,
            ``.cfg_scale``, ``.ref_stats``, ...: the scoring of `jitlab eval` and one sampler point; the
            reference statistics are built from ``ref_images`` images of the run's data unless ``ref_stats``).
    """

    def __init__(self, every_n_steps: int = 0, **settings):
        self.every_n_steps = every_n_steps
        checked = PeriodicSettings(**settings)  # the CLI's flags --evaluation.steps etc. are its fields
        self.score, self.sampling = checked.score(), checked.sampling()
        self._last = -1
        self._instruments = None

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch,
                           batch_idx: int) -> None:
        step = trainer.global_step
        if self.every_n_steps > 0 and step % self.every_n_steps == 0 and step != self._last:
            self._last = step
            self.evaluate(trainer, pl_module)

    def evaluate(self, trainer: L.Trainer, pl_module: L.LightningModule) -> list[dict]:
        if self._instruments is None:  # the extractor and reference statistics, built once per run
            data = dict(getattr(trainer.datamodule, "hparams", {}) or {})
            self._instruments = evaluation.instruments(self.score, data, str(pl_module.device))
        extractor, ref = self._instruments
        indices = rank_indices(self.score.num_images, trainer.global_rank, trainer.world_size)
        was_training = pl_module.training
        pl_module.eval()
        with ema_context(trainer, pl_module):
            results = evaluation.score_samples(pl_module, indices, self.sampling, extractor, ref,
                                               self.score.batch_size, self.score.inception_score)
        pl_module.train(was_training)
        rows = [{**r, "ema": "first", "step": trainer.global_step} for r in results]
        for row in rows:
            pl_module.log(f"eval/{row['metric']}", row["value"], rank_zero_only=True)
        if trainer.is_global_zero:
            evaluation.write_rows(run_dir(trainer) / "metrics.json", rows)
        return rows
