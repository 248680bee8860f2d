"""`jitlab released`: convert the authors' released checkpoints and score each as the release does.

    jitlab released --checkpoints DIR --inception_weights W [--fid_stats fid_stats] [--devices 8]

The models are the cells of the grids ``table7`` (JiT-B/L/H/G/16 at 256) and ``table8`` (/32 at 512). A
model's checkpoint is any ``*.pth`` under DIR whose ``args.model`` names it, or (without args) whose path
does, as ``jit-b-16.pth`` or ``JiT-B-16/checkpoint-last.pth``. Each one found is converted (`jitlab
convert-official`) and scored by `jitlab eval` on every GPU given (torchrun) with the grid cell's
evaluation, the release's: FID-50K and IS against the release's reference statistics, the first EMA
(``model_ema1``), Heun 50 steps, CFG and interval per model; what the checkpoint's ``args`` record (cfg,
interval_min/max, num_sampling_steps) wins over the grid. ``reports/released.{csv,md}`` set the paper's
numbers beside ours; a model without a checkpoint is a row marked missing. A model already measured
from the same file with the same settings is not measured again (``WORK/ID/result.json``).
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import re
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from jitlab.atomic import write_json
from jitlab.errors import ConfigError
from jitlab.experiments.grid.runner import command_line, eval_args, last_checkpoint, read_result
from jitlab.experiments.grid.spec import Cell, load_spec
from jitlab.core.models.registry import SIZES

GRIDS = ("table7", "table8")
# The paper's Inception Scores (Table 7, paper.md); it gives none at 512, so table8 has no entry.
PAPER_IS = {"table7": {"B": 275.1, "L": 298.5, "H": 303.4, "G": 292.6}}
NAME_IN_PATH = re.compile(r"jit[-_]?([a-z])[-_/]?(\d+)", re.IGNORECASE)  # jit-b-16, JiT-B-16, jit_b16
Runner = Callable[[list[str], Path], int]  # (jitlab arguments, log file) -> exit code


@dataclass
class Target:
    """One released model: the grid cell that says how to score it, and the paper's numbers."""

    model: str  # "JiT-B/16"
    cell: Cell
    paper_fid: float | None
    paper_is: float | None

    @property
    def id(self) -> str:
        return self.model.lower().replace("/", "-")  # jit-b-16

    @property
    def resolution(self) -> int:
        return int(self.cell.config["data"]["init_args"]["resolution"])


def model_name(config: dict[str, Any]) -> str:
    """The registry name (``JiT-H/16``) of a cell's backbone, from its depth, width and heads."""
    net = config["model"]["net"]["init_args"]
    keys = ("depth", "hidden_size", "num_heads")
    sizes = [name for name, size in SIZES.items() if all(net.get(k) == size[k] for k in keys)]
    if len(sizes) != 1:
        raise ConfigError("model.net.init_args", f"depth {net.get('depth')}, width {net.get('hidden_size')}, "
                                                 f"{net.get('num_heads')} heads: no JiT size ({', '.join(SIZES)})")
    return f"JiT-{sizes[0]}/{net['patch_size']}"


def targets(grids: list[str], only: list[str] | None = None) -> list[Target]:
    found: list[Target] = []
    for name in grids:
        spec = load_spec(name)
        for cell in spec.cells("paper"):
            label = next(iter(cell.labels.values()))
            paper_is = PAPER_IS.get(spec.name, {}).get(label)
            found.append(Target(model_name(cell.config), cell, cell.paper_value, paper_is))
    names = [t.model for t in found]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ConfigError("--grids", f"{', '.join(twice)} appear in more than one cell; give grids with one each")
    unknown = sorted(set(only or []) - set(names))
    if unknown:
        raise ConfigError("--only", f"unknown model(s) {', '.join(unknown)}; the grids have {', '.join(names)}")
    return [t for t in found if not only or t.model in only]


# -- finding the checkpoints ------------------------------------------------------------------------------

def peek(path: Path) -> tuple[dict[str, Any], int | None] | None:
    """(``vars(args)``, epoch) of a release checkpoint, memory-mapped (no tensor is read); None if not one."""
    import torch

    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # not a torch zip file, or it pickles something else: not the release's
        return None
    if not isinstance(ckpt, dict):
        return None
    args, epoch = ckpt.get("args"), ckpt.get("epoch")
    args = vars(args) if isinstance(args, argparse.Namespace) else dict(args) if isinstance(args, dict) else {}
    return args, None if epoch is None else int(epoch)


def identify(path: Path, root: Path) -> tuple[str | None, str | None]:
    """(the model a file holds, a note): ``args.model`` first, else a name in its path below ``root``."""
    args = (peek(path) or ({}, None))[0]
    match = NAME_IN_PATH.search(str(path.relative_to(root)))
    named = f"JiT-{match.group(1).upper()}/{match.group(2)}" if match else None
    model = args.get("model")
    if model and named and model != named:
        return model, f"{path.name}: args.model is {model}, its name says {named}; args.model taken"
    return model or named, None


def find_checkpoints(root: Path, models: list[str]) -> tuple[dict[str, Path], list[str]]:
    """model -> its file under ``root``, and notes (files that hold none of ``models``)."""
    if not root.is_dir():
        raise ConfigError("--checkpoints", f"{root} is not a directory")
    found: dict[str, list[Path]] = {}
    notes = []
    for path in sorted(root.rglob("*.pth")):
        model, note = identify(path, root)
        notes += [note] if note else []
        if model in models:
            found.setdefault(model, []).append(path)
        else:
            notes.append(f"ignored {path.relative_to(root)} (it names {model or 'no model'})")
    twice = {m: p for m, p in found.items() if len(p) > 1}
    if twice:
        model, paths = next(iter(twice.items()))
        raise ConfigError("--checkpoints", f"{len(paths)} files hold {model} ({', '.join(map(str, paths))}); "
                                           f"keep one, or pass --only for the others")
    return {m: p[0] for m, p in found.items()}, notes


# -- the settings and the measurement -----------------------------------------------------------------------

def settings_for(target: Target, sampling: dict[str, Any], options: argparse.Namespace) -> tuple[dict, str]:
    """The `jitlab eval` settings of a model and where its CFG came from: options > the file's args > the grid."""
    settings = copy.deepcopy(target.cell.eval)
    source = f"{target.cell.grid} grid"
    if sampling.get("cfg_scale") is not None:
        settings["cfg"] = [float(sampling["cfg_scale"])]
        source = "checkpoint args"
    if sampling.get("cfg_interval") is not None:
        settings["cfg_interval"] = [list(sampling["cfg_interval"])]
    if sampling.get("steps") is not None:
        settings["steps"] = int(sampling["steps"])
    if sampling.get("method") in ("heun", "euler"):
        settings["sampler"] = sampling["method"]
    if options.fid_stats is not None and settings.get("ref_stats"):
        settings["ref_stats"] = str(Path(options.fid_stats) / Path(settings["ref_stats"]).name)
    for key in ("num_images", "steps", "batch_size"):
        if getattr(options, key) is not None:
            settings[key] = getattr(options, key)
    if options.inception_weights is not None:
        settings["inception_weights"] = str(options.inception_weights)
    settings["device"] = options.device
    return settings, source


def signature(path: Path, settings: dict[str, Any]) -> dict[str, Any]:
    stat = path.stat()
    return {"path": str(path.resolve()), "bytes": stat.st_size, "mtime": stat.st_mtime, "eval": settings}


def measure(target: Target, path: Path, work: Path, options: argparse.Namespace, runner: Runner) -> dict:
    """Convert, evaluate and read back one model; returns its report row (status done or failed)."""
    from jitlab.train.convert import official_sampling

    directory = work / target.id
    args, epoch = peek(path) or ({}, None)
    settings, source = settings_for(target, official_sampling(args), options)
    previous = read_result(directory)
    if previous and previous.get("signature") == signature(path, settings):
        return previous["row"]
    row = base_row(target) | {"checkpoint": str(path), "cfg_from": source, "epoch": epoch}
    notes, error = convert(path, target, last_checkpoint(directory))
    if error is not None:
        return row | {"status": "failed", "note": error}
    e_args = eval_args(directory, settings)
    code = runner(e_args, directory / "eval.log")
    measured = measured_rows(directory / "metrics.json", settings)
    row["command"] = command_line(e_args)
    if code != 0 or not measured:
        return row | {"status": "failed", "note": f"`jitlab eval` exited {code}; see {directory / 'eval.log'}"}
    row |= measured | {"status": "done", "note": "; ".join(notes)}
    write_json(directory / "result.json", {"signature": signature(path, settings), "row": row})
    if not options.keep_converted:
        last_checkpoint(directory).unlink(missing_ok=True)  # about 3x the model's weights: rebuilt when needed
    return row


def convert(path: Path, target: Target, out: Path) -> tuple[list[str], str | None]:
    """Write the jitlab checkpoint of release file ``path`` to ``out``: (notes, None) or ([], the error)."""
    from jitlab.train.convert import build_converted, save_atomic

    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            converted, assumed = build_converted(path)
        size = converted["hyper_parameters"]["net"]["init_args"]["img_size"]
        if size != target.resolution:
            return [], f"the file holds a {size}px model; {target.model} is {target.resolution}px in {target.cell.grid}"
        save_atomic(converted, out)
    except (ValueError, OSError) as error:  # OfficialCheckpointError and ConfigError are ValueErrors
        return [], f"conversion: {error}"
    return [str(w.message) for w in caught] + [f"assumed {a}" for a in assumed], None


def measured_rows(metrics: Path, settings: dict[str, Any]) -> dict[str, Any]:
    """The FID and IS `jitlab eval` wrote for exactly these settings, as report columns ({} if none)."""
    import json

    if not metrics.exists():
        return {}
    wanted = {"cfg_scale": settings["cfg"][0], "cfg_interval": list(settings["cfg_interval"][0]),
              "n_samples": settings["num_images"], "steps": settings["steps"]}
    rows = [r for r in json.loads(metrics.read_text())["rows"] if all(r.get(k) == v for k, v in wanted.items())]
    out: dict[str, Any] = {}
    for row in rows:
        kind = "fid" if row["metric"].startswith("FID") else "is" if row["metric"].startswith("IS") else None
        if kind is None:
            continue
        out[kind], out[f"{kind}_metric"] = float(row["value"]), row["metric"]
        out |= {k: row.get(k) for k in ("cfg_scale", "cfg_interval", "ema", "sampler", "steps", "nfe",
                                          "n_samples", "precision", "reference")}
    return out if "fid" in out and math.isfinite(out["fid"]) else {}


def base_row(target: Target) -> dict[str, Any]:
    return {"model": target.model, "resolution": target.resolution, "grid": target.cell.grid, "status": "missing",
            "paper_fid": target.paper_fid, "paper_is": target.paper_is, "checkpoint": None, "note": ""}


# -- running `jitlab eval` ------------------------------------------------------------------------------------

def launcher(devices: int, device: str) -> Runner:
    """`python -m jitlab.commands.cli ARGS`, or under torchrun on ``devices`` processes (one GPU each)."""
    def run(args: list[str], log: Path) -> int:
        prefix = [sys.executable, "-m", "jitlab.commands.cli"]
        if devices > 1:
            prefix = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={devices}",
                      "-m", "jitlab.commands.cli"]
        env = dict(os.environ)
        if device == "cpu" and devices > 1:  # processes share the cores
            env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // devices))
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "a") as out:
            out.write(f"\n$ {' '.join(prefix[1:])} {' '.join(args)}\n")
            out.flush()
            return subprocess.call([*prefix, *args], stdout=out, stderr=subprocess.STDOUT, env=env)
    return run


def preflight(found: dict[str, Path], wanted: list[Target], options: argparse.Namespace) -> None:
    """Before any conversion: the Inception weights and each found model's reference statistics exist."""
    from jitlab.score.metrics.features import find_inception_weights

    if not found:
        return
    find_inception_weights(options.inception_weights)
    for target in wanted:
        if target.model in found:
            settings, _ = settings_for(target, {}, options)
            stats = settings.get("ref_stats")
            if stats and not Path(stats).is_file():
                raise ConfigError("--fid_stats", f"{stats} (reference statistics of {target.model}) not found; "
                                                 f"the release ships them in its fid_stats/ folder")


def run(options: argparse.Namespace, runner: Runner | None = None) -> list[dict[str, Any]]:
    """Every model's row (missing, failed or done), in grid order; writes OUT/released.{csv,md}."""
    from jitlab.experiments.grid.released_report import write_report

    if options.devices < 1:
        raise ConfigError("--devices", f"must be >= 1, got {options.devices}")
    wanted = targets(options.grids, options.only)
    found, notes = find_checkpoints(options.checkpoints, [t.model for t in wanted])
    preflight(found, wanted, options)
    runner = runner or launcher(options.devices, options.device)
    rows, started = [], time.time()
    for i, target in enumerate(wanted, 1):
        row = base_row(target)
        if target.model in found:
            row = measure(target, found[target.model], options.work, options, runner)
        rows.append(row)
        print(f"[{i}/{len(wanted)}] {target.model}: {row['status']}"
              + (f" FID {row['fid']:.4g}" if row.get("fid") is not None else "")
              + f" ({time.time() - started:.0f}s)", flush=True)
    write_report(rows, notes, options)
    return rows
