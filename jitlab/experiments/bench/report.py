"""The `jitlab bench` report: one Markdown table (a row per measurement, a column per model) and its page."""

from __future__ import annotations

import shlex
import time

import torch

from jitlab.experiments.bench.machine import machine_facts

ROWS = [  # (key, label, format)
    ("train_img_per_s", "train images/s, Lightning Trainer", "{:.2f}"),
    ("raw_train_img_per_s", "train images/s, plain loop", "{:.2f}"),
    ("trainer_vs_raw", "Trainer / plain loop", "{:.3f}"),
    ("mfu", "training MFU (Trainer)", "{:.1%}"),
    ("raw_mfu", "training MFU (plain loop)", "{:.1%}"),
    ("sample_img_per_s", "sample images/s, `jitlab sample`", "{:.3f}"),
    ("ref_sample_img_per_s", "sample images/s, reference", "{:.3f}"),
    ("sample_speedup", "`jitlab sample` / reference", "{:.2f}"),
    ("sample_max_uint8_diff", "largest pixel difference (uint8)", "{}"),
    ("nfe_per_s", "network evaluations/s (`jitlab sample`)", "{:.1f}"),
    ("ref_sample_mfu", "sampling MFU (reference)", "{:.1%}"),
    ("gmacs_per_image", "GMACs per image (forward)", "{:.3f}"),
    ("matmul_peak_gflops", "measured matmul peak GFLOP/s", "{:.0f}"),
    ("peak_mem_mb", "peak memory MiB", "{:.0f}"),
    ("batch_size", "training batch", "{}"),
    ("sample_batch", "sampling batch", "{}"),
    ("precision", "precision", "{}"),
    ("compile", "torch.compile", "{}"),
    ("threads", "torch threads", "{}"),
]


def table(rows: list[dict]) -> str:
    """Markdown: one row per measurement, one column per model."""
    head = ["| | " + " | ".join(r["model"] for r in rows) + " |", "|---|" + "---:|" * len(rows)]
    return "\n".join(head + [f"| {label} | " + " | ".join(fmt.format(r[key]) for r in rows) + " |"
                             for key, label, fmt in ROWS])


def report(rows: list[dict], argv: list[str], device: torch.device, load: tuple[float, float]) -> str:
    command = "jitlab bench " + shlex.join(argv) if argv else "jitlab bench"
    facts = {**machine_facts({}, device), "load average (1 min) before / after": f"{load[0]:.1f} / {load[1]:.1f} "
             "(other jobs on a shared machine take cores, and slow a run of several threads most)"}
    facts = "\n".join(f"- {k}: {v}" for k, v in facts.items())
    first = rows[0]
    return f"""# Training and sampling speed

Made by `{command}` (`make bench`) on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, one process.

## Machine

{facts}

## Results

{table(rows)}

## What is measured

- **Training images/s**: {first['steps']} timed steps after {first['warmup']} warm-up steps. *Lightning Trainer*: the
  Trainer `jitlab fit` builds for that config (`jitlab.score.fitconfig.instantiate_fit`: both EMAs, logging, checkpoint,
  sample-grid and timer callbacks). *Plain loop*: the same module and data loader with forward, backward, the
  module's fused AdamW and schedule, and the run's two EMAs, nothing else. Periodic work (a checkpoint or sample
  grid every few hundred steps) is outside the timed steps.
- **Sampling images/s**: one batch, Heun {first['sample_steps']} steps (NFE {first['nfe']}), CFG
  {first['cfg_scale']} on {tuple(first['cfg_interval'])}, the release's defaults. *`jitlab sample`*: its generation path
  (`jitlab.score.generate.generate_uint8`). *Reference*: the release's sampler written plainly in `jitlab/experiments/bench/sample.py`
  (two forwards per evaluation, CFG mask everywhere). The largest uint8 difference between the two batches of
  images says whether they are the same pictures.
- **MFU**: model FLOPs per second (2 x the multiply-adds of `jitlab info`, x 3 for training) over the measured
  matmul peak (the best of 5 square {first['matmul_dtype']} matmuls on this device). Sampling MFU counts the
  reference's forwards.
- **Peak memory**: the process's peak resident set (CPU; the whole process so far, models run in the order
  shown) or the peak allocated GPU memory of that model.
"""
