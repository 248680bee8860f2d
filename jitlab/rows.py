"""A metrics row (one metric of one sweep point in metrics.json) and the one owner of its fields: evaluation skips
points by ``point_key``, the run directory picks a best point by ``Point``, the report's CSV has ``REPORT_FIELDS``.
"""

from __future__ import annotations

from dataclasses import MISSING, dataclass, fields
from typing import Any


@dataclass(frozen=True)
class Point:
    """The settings that make rows one sweep point (its FD, its IS, ...); a row older than a field has its default
    (None for a field without one)."""

    ema: float | str  # the EMA decay, or "none"
    cfg_scale: float
    cfg_interval: tuple[float, float]
    sampler: str
    steps: int
    seed: int
    n_samples: int
    step: int | None  # the checkpoint's training step
    final_step: str = "euler"
    precision: str = "fp32"
    score_resolution: int | None = None

    @classmethod
    def of(cls, row: dict[str, Any]) -> Point:
        values = {f.name: row.get(f.name, None if f.default is MISSING else f.default) for f in fields(cls)}
        interval = values["cfg_interval"]
        return cls(**{**values, "cfg_interval": tuple(interval) if isinstance(interval, list) else interval})


# the report CSV's columns of a row, in their order: the point's settings and what its metric was measured with
REPORT_FIELDS = ("n_samples", "seed", "step", "sampler", "steps", "nfe", "final_step", "precision", "score_resolution",
                 "cfg_scale", "cfg_interval", "ema", "feature_space", "feature_accuracy", "feature_digest")


def is_frechet(metric: Any) -> bool:
    """FID-50K, FD-ref-500, ...: the Frechet distances (lower is better)."""
    return isinstance(metric, str) and metric.startswith(("FID", "FD"))


def point_key(row: dict[str, Any]) -> tuple:
    """What a row measured: its metric at its point."""
    return row["metric"], Point.of(row)


def same_measurement(row: dict[str, Any]) -> tuple:
    """``point_key`` plus against what and of which checkpoint: a rerun skips a point only when all agree."""
    return point_key(row) + (row.get("feature_space"), row.get("reference"), row.get("checkpoint"))
