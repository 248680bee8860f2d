"""The `jitlab` command: dispatches ``jitlab VERB ...`` to the verb's module in ``jitlab.commands``.

The LightningCLI verbs (fit, validate, test, predict) are ``jitlab.commands.fit``; each of jitlab's own verbs
is one module with ``main(argv) -> exit code``. Every error a user can make ends here as one line
``jitlab: error: ...`` with exit code 2. Bare `jitlab` lists every verb.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from jitlab.commands.fit import VERBS as LIGHTNING_VERBS
from jitlab.errors import ConfigError, find_config_error, one_line

# jitlab's own verbs: name -> (module, help). Each module has main(argv) -> exit code. Modules are imported
# only when their verb runs (start-up time: torch, Lightning and pandas take seconds, `jitlab -h` none).
VERBS: dict[str, tuple[str, str]] = {
    "info": ("jitlab.commands.info", "parameters and GMACs of a named model"),
    "sample": ("jitlab.commands.sample", "images from a checkpoint: PNG grid and/or .npz"),
    "consolidate": ("jitlab.commands.consolidate",
                    "a sharded (fsdp2) checkpoint directory -> one .ckpt file that eval / sample / convert read"),
    "eval": ("jitlab.commands.evaluate", "score a checkpoint over EMA x CFG x interval; writes metrics.json"),
    "train-ref": ("jitlab.commands.train_ref",
                  "rebuild a shipped reference classifier (FD-ref) and compare its digest; train others"),
    "fid-stats": ("jitlab.commands.fid_stats",
                  "reference statistics (mu, sigma) .npz of ImageNet (--root) or embedded data"),
    "convert-official": ("jitlab.commands.convert_official",
                         "convert a released JiT .pth (model, model_ema1/2, args) to a jitlab checkpoint"),
    "prepare-imagenet": ("jitlab.commands.prepare_imagenet",
                         "write pre-cropped uint8 shards of an ImageNet folder tree"),
    "synth-imagenet": ("jitlab.commands.synth_imagenet",
                       "write a small ImageNet-like folder tree of photo crops (to try prepare-imagenet on)"),
    "grid": ("jitlab.commands.grid", "run / plan a paper grid (experiments/grids/NAME.yaml), locally or on SLURM"),
    "report": ("jitlab.commands.report", "turn a grid's run directories into reports/NAME.{csv,md,tex,png}"),
    "bench": ("jitlab.commands.bench", "training and sampling images/s, MFU and peak memory of a model"),
    "bench-data": ("jitlab.commands.bench_data",
                   "data-loading images/s: the ImageNet folder source vs. prepared shards -> reports/bench-data.md"),
}


def print_verbs() -> None:
    print("usage: jitlab {" + ",".join([*LIGHTNING_VERBS, *VERBS]) + "} ...   (jitlab VERB --help for each)")
    for verb, text in LIGHTNING_VERBS.items():
        print(f"  {verb:<18}{text}")
    for verb, (_, text) in VERBS.items():
        print(f"  {verb:<18}{text}")
    print("  --version         the version of jitlab")


def dispatch(argv: list[str], explicit: bool) -> int:
    if argv and argv[0] in VERBS:
        module = importlib.import_module(VERBS[argv[0]][0])
        # a grid's SLURM task runs this dispatcher in-process: passed down, so no verb imports the dispatcher
        extra = {"entry": main} if argv[0] == "grid" else {}
        return int(module.main(argv[1:], **extra) or 0)
    if not argv or argv[0] in ("-h", "--help"):
        print_verbs()
        return 0
    if argv[0] == "--version":
        from jitlab import __version__

        print(f"jitlab {__version__}")
        return 0
    if argv[0] not in LIGHTNING_VERBS and not argv[0].startswith("-"):
        raise ConfigError("command", f"unknown command {argv[0]!r}; valid: {', '.join([*LIGHTNING_VERBS, *VERBS])}")
    from jitlab.commands import fit

    return fit.main(argv, explicit)


def main(argv: list[str] | None = None) -> int:
    explicit = argv is not None
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        code = dispatch(argv, explicit)
        sys.stdout.flush()  # a reader gone shows here, not in the interpreter's last flush
        return code
    except BrokenPipeError:  # `jitlab grid list | head`: the reader has what it wants; no traceback
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # the interpreter's last flush must not fail again
        return 0
    except ConfigError as error:
        print(f"jitlab: error: {one_line(error)}", file=sys.stderr)
        return 2
    except argparse.ArgumentError as error:  # jsonargparse: a type, a choice, an unknown key, a config file
        found = find_config_error(error)
        print(f"jitlab: error: {one_line(found or error)}", file=sys.stderr)
        return 2
    except Exception as error:
        found = find_config_error(error)  # our classes' checks, raised from inside jsonargparse's instantiation
        if found is None:
            raise
        print(f"jitlab: error: {one_line(found)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
