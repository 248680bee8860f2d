"""``reports/released.{csv,md}``: the released checkpoints' FID and IS as measured here, beside the paper's.

One row per model of the grids (missing, failed or done); the paper's FID-50K is Table 7's at 256 and Table
6's 600-epoch column at 512, its IS Table 7's (the paper gives none at 512: that cell stays empty).
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path
from typing import Any

import pandas as pd

from jitlab.atomic import write_text
from jitlab.experiments.grid.spec import load_spec

COLUMNS = ["model", "resolution", "grid", "status", "fid_metric", "fid", "paper_fid", "is_metric", "is", "paper_is",
           "cfg_scale", "cfg_from", "cfg_interval", "ema", "sampler", "steps", "nfe", "n_samples", "precision",
           "reference", "epoch", "checkpoint", "note", "command"]


def frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    return pd.DataFrame.from_records([{c: row.get(c) for c in COLUMNS} for row in rows], columns=COLUMNS)


def _number(value: Any, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return f"{float(value):.{digits}g}"


def command_of(options: argparse.Namespace) -> str:
    parts = ["jitlab released", f"--checkpoints {options.checkpoints}"]
    for flag in ("devices", "num_images", "steps", "only"):
        value = getattr(options, flag, None)
        if value is not None:
            parts.append(f"--{flag} {' '.join(value) if isinstance(value, list) else value}")
    return " ".join(parts)


def table(rows: list[dict[str, Any]]) -> list[str]:
    lines = ["| model | resolution | status | ours: FID | paper: FID-50K | ours: IS | paper: IS | our metric | "
             "CFG (from) | interval | EMA | steps (NFE) | precision |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        done = row["status"] == "done"
        cfg = f"{row['cfg_scale']} ({row['cfg_from']})" if done else ""
        steps = f"{row['steps']} ({row['nfe']})" if done else ""
        metric = " / ".join(m for m in (row.get("fid_metric"), row.get("is_metric")) if m)
        lines.append(f"| {row['model']} | {row['resolution']} | {row['status']} | {_number(row.get('fid'))} | "
                     f"{_number(row['paper_fid'])} | {_number(row.get('is'))} | {_number(row['paper_is'])} | "
                     f"{metric} | {cfg} | {row.get('cfg_interval') or ''} | {row.get('ema') or ''} | {steps} | "
                     f"{row.get('precision') or ''} |")
    return lines


def markdown(rows: list[dict[str, Any]], notes: list[str], options: argparse.Namespace) -> str:
    counts = {s: sum(r["status"] == s for r in rows) for s in ("done", "failed", "missing")}
    lines = ["# The released JiT checkpoints, scored with the release's settings", "",
             f"`{command_of(options)}` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: each released "
             "checkpoint found was converted (`jitlab convert-official`) and scored by `jitlab eval` "
             f"({options.devices} process(es)) with the first EMA (the release's `model_ema1`), the grid cell's "
             "evaluation and what the checkpoint's own `args` record; ours beside the paper's. The paper's FID-50K "
             "is Table 7's at 256 and Table 6's 600-epoch column at 512; its IS is Table 7's, and the paper gives "
             "none at 512 (empty). A metric over fewer than 50,000 images is named by its count, not FID-50K.", "",
             "Cells: " + ", ".join(f"{n} {s}" for s, n in counts.items()) + ".", ""]
    lines += table(rows) + ["", "## Settings and assumptions", ""]
    for name in options.grids:
        spec = load_spec(name)
        lines.append(f"- `{spec.name}` ({spec.title}): {' '.join(spec.paper_note.split())}")
    lines.append("- CFG *(from)*: `checkpoint args` when the file records its `cfg` (and interval, steps), else the "
                 "grid's value (experiments/recipes/ marks the assumed ones).")
    for row in rows:
        if row.get("note"):
            lines.append(f"- {row['model']}: {row['note']}")
        if row.get("command"):
            lines.append(f"- {row['model']}: `{row['command']}`")
    lines += [f"- {note}" for note in notes]
    return "\n".join(lines) + "\n"


def write_report(rows: list[dict[str, Any]], notes: list[str], options: argparse.Namespace) -> list[Path]:
    """OUT/released.csv and OUT/released.md (each written atomically)."""
    out = Path(options.out)
    paths = [out / "released.csv", out / "released.md"]
    write_text(paths[0], frame(rows).to_csv(index=False, float_format="%.6g"))
    write_text(paths[1], markdown(rows, notes, options))
    return paths
