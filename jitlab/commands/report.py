"""`jitlab report`: turn a grid's run directories into a CSV, a Markdown and a LaTeX table, and a figure.

    jitlab report table2                     # runs/grids/table2/mini/* -> reports/table2.{csv,md,tex,png}
    jitlab report table2 --scale paper       # runs/grids/table2/paper/* -> reports/table2-paper.*
    jitlab report table2 --runs /scratch/runs --out /tmp/reports
    jitlab report table2 --keep reports/runs  # and the trainings' small files: --runs reports/runs regenerates

What is read and how it is tabulated: ``jitlab.experiments.report``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from jitlab.errors import ArgumentParser, ConfigError
from jitlab.experiments.grid.spec import SCALES, load_spec
from jitlab.experiments.report.build import ReportError, build_report

DEFAULT_RUNS = Path("runs/grids")
DEFAULT_OUT = Path("reports")


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="jitlab report", description=__doc__.splitlines()[0])
    p.add_argument("name", help="a grid name (experiments/grids/NAME.yaml) or a path to a grid file")
    p.add_argument("--scale", choices=SCALES, default="mini", help="which runs to report (default mini)")
    p.add_argument("--runs", type=Path, default=DEFAULT_RUNS, help=f"run directories (default {DEFAULT_RUNS})")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"where the report files go (default {DEFAULT_OUT})")
    p.add_argument("--keep", type=Path, default=None, metavar="DIR",
                   help="also copy every reported training's small files (result, metrics, config, logged scalars; "
                        "not its checkpoints) to DIR/NAME/SCALE/CELL: `--runs DIR` regenerates the report from "
                        "them, and a rerun whose runs directory starts as a copy of them skips those trainings")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        spec = load_spec(args.name)
        paths = build_report(spec, args.scale, args.runs, args.out, keep=args.keep)
    except (ConfigError, ReportError) as error:
        print(f"jitlab report: error: {error}", file=sys.stderr)
        return 2
    print(f"jitlab report: wrote {', '.join(str(p) for p in paths.values())}")
    return 0
