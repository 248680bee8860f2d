"""`jitlab grid run NAME --released DIR`: cells whose models the authors released, converted instead of trained.

A cell's model (``JiT-B/16``) is the ``*.pth`` under DIR whose ``args.model`` names it, else whose path does
(``jit-b-16.pth``, ``JiT-B-16/checkpoint-last.pth``). It is converted (``jitlab.train.convert``) where `jitlab fit`
would train, then scored and recorded as every cell is, what its ``args`` record (cfg, interval, steps, sampler)
winning over the grid's eval. cell.json and result.json name the file (``weights``): the runner never mixes a
converted cell with a trained one (``runner.other_settings``). A cell whose model has no file is not run.
"""

from __future__ import annotations

import argparse
import re
import time
import warnings
from pathlib import Path
from typing import Any

from jitlab.errors import ConfigError
from jitlab.experiments.grid.processes import CHILDREN
from jitlab.experiments.grid.runner import (CellOutcome, Runner, cell_meta, finish_cell, is_finished, last_checkpoint,
                                            prepare_cell, read_result, record, run_local, run_subprocess)
from jitlab.experiments.grid.spec import Cell
from jitlab.experiments.rundir import cell_dir
from jitlab.core.models.registry import SIZES
from jitlab.score.metrics.features import find_inception_weights
from jitlab.train.convert import build_converted, save_atomic

LABEL = "released weights, converted"
NAME_IN_PATH = re.compile(r"jit[-_]?([a-z])[-_/]?(\d+)", re.IGNORECASE)  # jit-b-16, JiT-B-16, jit_b16


def model_name(config: dict[str, Any]) -> str:
    """The registry name (``JiT-H/16``) of a cell's backbone, from its depth, width and heads."""
    net = config["model"]["net"]["init_args"]
    keys = ("depth", "hidden_size", "num_heads")
    sizes = [name for name, size in SIZES.items() if all(net.get(k) == size[k] for k in keys)]
    if len(sizes) != 1:
        raise ConfigError("--released", f"depth {net.get('depth')}, width {net.get('hidden_size')}: no JiT size")
    return f"JiT-{sizes[0]}/{net['patch_size']}"


def release_args(path: Path) -> dict[str, Any]:
    """``vars(args)`` of a release checkpoint, memory-mapped (no tensor read); {} if it has none or is not one."""
    import torch

    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            args = torch.load(path, map_location="cpu", weights_only=True, mmap=True).get("args")
    except Exception:  # not a torch zip file, no dict, or it pickles something else: not the release's
        return {}
    return vars(args) if isinstance(args, argparse.Namespace) else dict(args) if isinstance(args, dict) else {}


def find_released(root: Path, models: set[str]) -> tuple[dict[str, Path], list[str]]:
    """model -> its file under ``root`` (``args.model`` first, else a name in its path), and notes."""
    if not root.is_dir():
        raise ConfigError("--released", f"{root} is not a directory")
    found: dict[str, list[Path]] = {}
    notes = []
    for path in sorted(root.rglob("*.pth")):
        match = NAME_IN_PATH.search(str(path.relative_to(root)))
        named = f"JiT-{match.group(1).upper()}/{match.group(2)}" if match else None
        model = release_args(path).get("model") or named
        if named and model != named:
            notes.append(f"{path.name}: args.model is {model}, its name says {named}; args.model taken")
        if model in models:
            found.setdefault(model, []).append(path)
        else:
            notes.append(f"ignored {path.relative_to(root)} (it names {model or 'no model'})")
    twice = [f"{len(p)} files hold {m} ({', '.join(map(str, p))})" for m, p in found.items() if len(p) > 1]
    if twice:
        raise ConfigError("--released", f"{twice[0]}; keep one")
    return {m: p[0] for m, p in found.items()}, notes


def settings_for(cell: Cell, recorded: dict[str, Any]) -> dict[str, Any]:
    """The cell's evaluation, what the release's args record winning (``jitlab.train.convert.official_sampling``)."""
    settings = dict(cell.eval)
    if recorded["cfg_scale"] is not None:
        settings["cfg"] = [float(recorded["cfg_scale"])]
    if recorded["cfg_interval"] is not None:
        settings["cfg_interval"] = [recorded["cfg_interval"]]
    settings |= {k: v for k, v in (("steps", recorded["steps"]), ("sampler", recorded["method"])) if v is not None}
    return settings


def convert_cell(cell: Cell, directory: Path, source: Path, runner: Runner) -> CellOutcome:
    """Convert ``source`` into the cell's checkpoint, then evaluate and record it as a trained cell is."""
    started, stat = time.time(), source.stat()
    weights = {"label": LABEL, "path": str(source.resolve()), "bytes": stat.st_size, "mtime": stat.st_mtime}
    prepare_cell(cell, directory, weights)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            converted, assumed = build_converted(source)
        size, want = (converted["hyper_parameters"]["net"]["init_args"]["img_size"],
                      cell.config["data"]["init_args"]["resolution"])
        if size != want:
            raise ValueError(f"the file holds a {size}px model; the cell is {want}px")
        save_atomic(converted, last_checkpoint(directory))
    except (ValueError, OSError) as error:  # OfficialCheckpointError and ConfigError are ValueErrors
        result = {**cell_meta(cell), "weights": weights, "rows": [], "commands": []}
        return record(cell, directory, result, "failed", started, f"conversion of {source}: {error}")
    weights["notes"] = [str(w.message) for w in caught] + [f"assumed {a}" for a in assumed]
    out = last_checkpoint(directory)
    outcome = finish_cell(cell, directory, 0, started, [f"jitlab convert-official {source} --out {out}"], {}, runner,
                          settings_for(cell, converted["official_sampling"]),
                          {"weights": weights, "train_seconds": None})
    if outcome.status == "done":  # about 3x the model's weights; converted again if ever needed
        out.unlink(missing_ok=True)
    return outcome


def run_released(args: argparse.Namespace, cells: list[Cell], runner: Runner = run_subprocess) -> int:
    """`jitlab grid run ... --released DIR`: convert and score each cell whose model DIR holds; 1 if any failed."""
    if args.launcher != "local" or args.rehearse:
        raise ConfigError("--released", "converts and scores here: use --launcher local, without --rehearse")
    models = {cell.id: model_name(cell.config) for cell in cells}
    found, notes = find_released(Path(args.released), set(models.values()))
    for line in notes + [f"{c.id}: no {models[c.id]} checkpoint in {args.released}; not run"
                         for c in cells if models[c.id] not in found]:
        print(f"jitlab grid: {line}", flush=True)
    todo = [c for c in cells if models[c.id] in found]
    if args.dry_run:
        for cell in todo:
            print(f"# {cell.id}: convert {found[models[cell.id]]} -> {last_checkpoint(cell_dir(args.runs, cell))}")
        return 0
    for cell in [] if args.skip_preflight else todo:  # before any conversion: Inception weights, reference statistics
        if is_finished(read_result(cell_dir(args.runs, cell)), cell):
            continue
        if cell.eval.get("features") == "inception":
            find_inception_weights(cell.eval.get("inception_weights"))
        if cell.eval.get("ref_stats") and not Path(cell.eval["ref_stats"]).is_file():
            raise ConfigError("ref_stats", f"{cell.eval['ref_stats']} (reference statistics of {cell.id}) not found; "
                                           "the release ships them in its fid_stats/ folder")
    outcomes = run_local(todo, args.runs, runner=runner, echo=lambda line: print(line, flush=True),
                         convert=lambda cell, at, gated: convert_cell(cell, at, found[models[cell.id]], gated))
    counts = {s: sum(o.status == s for o in outcomes) for s in ("done", "diverged", "failed", "skipped",
                                                                 "interrupted")}
    print("jitlab grid: released weights: " + ", ".join(f"{n} {s}" for s, n in counts.items())
          + f", {len(cells) - len(todo)} not run", flush=True)
    stopped = CHILDREN.signum  # SIGINT / SIGTERM: the interrupted cells resume next time
    return 128 + stopped if stopped is not None else 1 if counts["failed"] else 0

