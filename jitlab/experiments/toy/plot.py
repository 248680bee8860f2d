"""The Figure 2 panel grid: generated 2-D points (after P^T) over the true spiral, one panel per (pred, D)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from jitlab.atomic import atomic_path
from jitlab.experiments.toy.stats import Stat, fmt
from jitlab.experiments.toy.verdict import seeds_text

VIEW = 2.6  # the true spiral reaches radius 2 (plus its thickness); points beyond the view are counted
COLORS = {"x": "#1b7837", "eps": "#b2182b", "v": "#2166ac"}


def write_png(path: Path, results: list[dict], dims: list[int], preds: list[str], truth: np.ndarray,
              stats: dict[tuple[int, str, str], Stat], title: str) -> None:
    """Rows: prediction spaces; columns: D. Each panel shows the first seed; titles carry the metrics over seeds
    (mean ± sd and how many)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    first = {}
    for r in sorted(results, key=lambda r: r["cell"]["seed"]):
        first.setdefault((r["cell"]["D"], r["cell"]["pred"]), r)
    fig, axes = plt.subplots(len(preds), len(dims), figsize=(3.3 * len(dims), 3.8 * len(preds)),
                             squeeze=False, layout="constrained")
    for i, p in enumerate(preds):
        for j, d in enumerate(dims):
            ax = axes[i][j]
            s = np.asarray(first[(d, p)]["points"], dtype=np.float64)  # (n, 2)
            inside = np.all(np.abs(s) <= VIEW, axis=1)  # (n,)
            ax.scatter(truth[:, 0], truth[:, 1], s=2.5, c="0.75", lw=0, rasterized=True)
            ax.scatter(s[inside, 0], s[inside, 1], s=2.5, c=COLORS.get(p, "k"), lw=0, alpha=0.8, rasterized=True)
            ax.set_xlim(-VIEW, VIEW)
            ax.set_ylim(-VIEW, VIEW)
            ax.set_aspect("equal")
            ax.set_xticks([])
            ax.set_yticks([])
            lines = [f"{p}-pred, D={d}",
                     f"Chamfer {stats[(d, p, 'chamfer')]} ({seeds_text(len(stats[(d, p, 'chamfer')].values))})",
                     f"residual {fmt(stats[(d, p, 'residual')].mean)}"]
            outside = 1 - inside.mean()
            if outside >= 0.005:
                lines[-1] += f"; {outside:.0%} outside view"
            ax.set_title("\n".join(lines), fontsize=9)
    fig.suptitle(title, fontsize=10)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
