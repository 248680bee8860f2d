"""The `jitlab` command: LightningCLI verbs (fit, validate, test, predict) plus jitlab's own verbs.

`jitlab fit` with no arguments trains the built-in default: the mini preset (a small JiT on the
embedded shapes, CPU, offline, a few minutes). `experiments/mini.yaml` spells out the same values.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import signal
import sys
from pathlib import Path
from typing import Any, Callable

from jitlab.errors import ConfigError, find_config_error, one_line

# jitlab's own verbs: name -> (module, help). Each module has main(argv) -> exit code.
VERBS: dict[str, tuple[str, str]] = {
    "info": ("jitlab.info", "parameters and GMACs of a named model"),
    "sample": ("jitlab.sample", "images from a checkpoint: PNG grid and/or .npz"),
    "eval": ("jitlab.evaluate", "score a checkpoint over EMA x CFG x interval; writes metrics.json"),
    "train-ref": ("jitlab.metrics.refnet", "train and cache the reference classifier of an embedded data set (FD-ref)"),
    "fid-stats": ("jitlab.metrics.stats", "reference statistics (mu, sigma) .npz of ImageNet (--root) or embedded data"),
    "fig2": ("jitlab.toy.fig2", "the toy of Figure 2: spiral in D dims, x/eps/v prediction -> reports/fig2.*"),
    "convert-official": ("jitlab.convert", "convert a released JiT .pth (model, model_ema1/2, args) to a jitlab checkpoint"),
    "prepare-imagenet": ("jitlab.data.prepare", "write pre-cropped uint8 shards of an ImageNet folder tree"),
    "grid": ("jitlab.grid.cli", "run / plan a paper grid (experiments/grids/NAME.yaml), locally or on SLURM"),
    "report": ("jitlab.report.cli", "turn a grid's run directories into reports/NAME.{csv,md,tex,png}"),
    "released": ("jitlab.grid.released", "convert and score the authors' released checkpoints -> reports/released.*"),
    "bench": ("jitlab.bench.cli", "training and sampling images/s, MFU and peak memory of a model"),
}

# The built-in default run (the mini preset); experiments/mini.yaml must say the same.
DEFAULT_NET = {
    "class_path": "jitlab.models.JiT",
    "init_args": {
        "patch_size": 4, "hidden_size": 96, "depth": 4, "num_heads": 3, "bottleneck_dim": 32,
        "in_context_len": 4, "in_context_start": 1, "attn_impl": "sdpa",
    },
}
DEFAULT_DATA = {
    "class_path": "jitlab.data.EmbeddedDataModule",
    "init_args": {"kind": "shapes", "resolution": 32, "global_batch_size": 64, "num_workers": 0},
}
DEFAULT_TRAINER = {
    "max_steps": 1000, "log_every_n_steps": 25, "val_check_interval": 500, "check_val_every_n_epoch": None,
    "limit_val_batches": 2, "precision": "32-true", "default_root_dir": "runs/default",
}


def _lightning_cli() -> type:
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint, Timer
    from lightning.pytorch.cli import LightningCLI

    from jitlab.callbacks import SampleGrid
    from jitlab.ema import MultiEMA
    from jitlab.periodic_eval import PeriodicEval
    from jitlab.preflight import check_fit
    from jitlab.resume import RESUME_WORDS, check_resume, resolve_ckpt_path, say

    class JitlabCLI(LightningCLI):
        def add_arguments_to_parser(self, parser) -> None:
            parser.add_lightning_class_args(MultiEMA, "ema")
            parser.add_lightning_class_args(SampleGrid, "samples")
            parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
            parser.add_lightning_class_args(PeriodicEval, "evaluation")  # off unless evaluation.every_n_steps > 0
            # training time kept in checkpoints across resumes (grid reports); timer.duration DD:HH:MM:SS stops
            # a run cleanly before a cluster's time limit
            parser.add_lightning_class_args(Timer, "timer")
            parser.add_argument("--skip_preflight", type=bool, default=False, help="fit: do not check the data, "
                                "reference statistics, Inception weights, disk space and batch split first")
            parser.add_argument("--rehearse", type=bool, default=False, help="fit: rehearse the run instead (a few "
                                "steps, a checkpoint, a resume, its evaluation) under ROOT/../rehearsal/")
            parser.set_defaults({
                "seed_everything": 0,
                "model.net": DEFAULT_NET,
                "model.optim.blr": 4e-3,  # lr 1e-3 at batch 64: a small model on CPU learns in minutes
                "model.optim.warmup_steps": 100,
                "data": DEFAULT_DATA,
                "ema.decays": [0.999, 0.99],
                "ema.warmup": True,
                "timer.interval": "step",  # Lightning's default is an enum member, which the saved config.yaml can't hold
                "samples.every_n_steps": 500,
                "checkpoint.save_last": True,
                "checkpoint.every_n_train_steps": 500,
                "checkpoint.save_top_k": 1,
                **{f"trainer.{k}": v for k, v in DEFAULT_TRAINER.items()},
            })

        def _parse_ckpt_path(self) -> None:
            if self.config.get("subcommand") != "fit":
                return super()._parse_ckpt_path()  # validate/test/predict rebuild the model from the checkpoint
            # fit: `last` / `auto` name the newest checkpoint of the run's root; the command line's model is kept
            # (Lightning would silently replace it by the checkpoint's; jitlab.resume compares the two instead)
            config = self.config.fit
            if config.get("ckpt_path") in RESUME_WORDS:
                root = Path(config.trainer.default_root_dir or ".")
                dirpath = config.checkpoint.dirpath
                config.ckpt_path, line = resolve_ckpt_path(config.ckpt_path, root, Path(dirpath) if dirpath else None)
                say(line)

        def before_instantiate_classes(self) -> None:
            config = self.config[self.subcommand] if self.subcommand else self.config
            fill_net_from_data(config)
            if self.subcommand == "fit":  # cheap checks before anything is built, spawned or written
                resolved = config.as_dict()
                if config.get("ckpt_path"):
                    check_resume(config.ckpt_path, resolved)
                # the preflight's notes wait until every class is built: a bad value found while building
                # (e.g. a data module's or the flow's own check) is then the only line printed
                with contextlib.redirect_stderr(io.StringIO()) as self._preflight_notes:
                    check_fit(resolved)

        def after_instantiate_classes(self) -> None:
            notes = getattr(self, "_preflight_notes", None)
            if notes is not None and notes.getvalue():
                print(notes.getvalue(), end="", file=sys.stderr, flush=True)
            super().after_instantiate_classes()

    return JitlabCLI, L.LightningDataModule


def fill_net_from_data(config: Any) -> None:
    """Give the network what the data decide (image size, classes, channels) unless the config sets it.

    A value set in both places must agree; a disagreement names both fields.
    """
    data_cls = _import(config.data.class_path)
    net_defaults: Callable[..., dict] | None = getattr(data_cls, "net_defaults", None)
    if net_defaults is None:
        return
    wanted = net_defaults(**dict(config.data.init_args or {}))
    net_args = config.model.net.init_args
    for key, value in wanted.items():
        if key not in net_args:
            continue
        current = net_args[key]
        if current is None:
            net_args[key] = value
        elif current != value:
            raise ConfigError(f"model.net.init_args.{key}",
                              f"is {current} but the data module ({config.data.class_path}) gives {value}; "
                              f"leave it unset (null) to follow the data")


def _import(path: str) -> Any:
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def check_config_files(argv: list[str]) -> None:
    """Each ``--config FILE`` exists and is YAML; jsonargparse's own messages do not name the file."""
    import yaml

    for i, arg in enumerate(argv):
        if arg in ("-c", "--config") and i + 1 < len(argv):
            path = Path(argv[i + 1])
        elif arg.startswith("--config="):
            path = Path(arg.partition("=")[2])
        else:
            continue
        if not path.is_file():
            raise ConfigError("--config", f"{path}: no such file")
        try:
            yaml.safe_load(path.read_text())
        except yaml.YAMLError as error:
            mark = getattr(error, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
            raise ConfigError("--config", f"{path} is not valid YAML{where}: "
                                          f"{getattr(error, 'problem', None) or one_line(error)}") from None


def run_lightning(args: list[str] | None) -> int:
    import jitlab.data  # noqa: F401  (registers the data modules as subclasses for short names)
    from jitlab.module import JiTModule

    import logging

    from lightning.pytorch.utilities.exceptions import SIGTERMException

    from jitlab.resume import SaveOnSignal

    # "Seed set to 0" would come before a config error's one line (the seed is in the saved config.yaml)
    logging.getLogger("lightning.fabric.utilities.seed").setLevel(logging.WARNING)
    cli_cls, data_base = _lightning_cli()
    on_signal = SaveOnSignal()
    verbs = ("fit", "validate", "test", "predict")
    parser_kwargs: dict[str, Any] = {"exit_on_error": False, **{verb: {"exit_on_error": False} for verb in verbs}}
    parser_kwargs["fit"]["description"] = ("Train one cell (defaults: the mini preset). --ckpt_path last resumes "
                                           "the newest run of the root, --ckpt_path auto resumes it if there is one.")
    try:
        cli_cls(
            JiTModule,
            data_base,
            subclass_mode_data=True,
            args=args,
            save_config_kwargs={"overwrite": True},
            parser_kwargs=parser_kwargs,
            trainer_defaults={"callbacks": [on_signal]},
            auto_configure_optimizers=False,
        )
    except SIGTERMException:  # stopped by SIGINT / SIGTERM after saving last.ckpt: not a finished run
        return 128 + int(on_signal.signum or signal.SIGTERM)
    return 0


def instantiate_fit(args: list[str]) -> Any:
    """The LightningCLI of `jitlab fit ARGS` (no verb) with its model, data and Trainer built, nothing run.

    ``.trainer`` carries the callbacks, logger and precision `fit` would use; `jitlab bench` times it.
    """
    import jitlab.data  # noqa: F401
    from jitlab.module import JiTModule

    cli_cls, data_base = _lightning_cli()
    return cli_cls(JiTModule, data_base, subclass_mode_data=True, args=args, run=False,
                   save_config_kwargs={"overwrite": True}, auto_configure_optimizers=False)


def check_fit_config(args: list[str]) -> dict[str, Any]:
    """Parse `jitlab fit` arguments exactly as `fit` would, building nothing; returns the resolved config.

    Types, choices and unknown keys fail here (jsonargparse); values that need the data on disk
    (e.g. an ImageNet root) are not checked. Used by `jitlab grid run --dry-run`.
    """
    import jitlab.data  # noqa: F401
    from jitlab.module import JiTModule

    cli_cls, data_base = _lightning_cli()

    class ParseOnly(cli_cls):
        def before_instantiate_classes(self) -> None:
            pass

        def instantiate_classes(self) -> None:
            pass

    import argparse
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "args given while sys.argv has arguments": intended here
            cli = ParseOnly(JiTModule, data_base, subclass_mode_data=True, args=args, run=False,
                            auto_configure_optimizers=False, seed_everything_default=0,
                            parser_kwargs={"exit_on_error": False})
    except argparse.ArgumentError as error:
        raise ConfigError("config", " ".join(str(error).split())) from None
    return cli.config.as_dict()


LIGHTNING_VERBS = {
    "fit": "train one cell (the mini preset by default; --ckpt_path last|auto resumes)",
    "validate": "LightningCLI: the validation loop of a config / checkpoint",
    "test": "LightningCLI: the test loop",
    "predict": "LightningCLI: the predict loop",
}


def print_verbs() -> None:
    print("usage: jitlab {" + ",".join([*LIGHTNING_VERBS, *VERBS]) + "} ...   (jitlab VERB --help for each)")
    for verb, text in LIGHTNING_VERBS.items():
        print(f"  {verb:<18}{text}")
    for verb, (_, text) in VERBS.items():
        print(f"  {verb:<18}{text}")
    print("  --version         the version of jitlab")


def pop_rehearse(args: list[str]) -> tuple[bool, list[str]]:
    """Take ``--rehearse`` (``--rehearse=BOOL``, ``--rehearse BOOL``) out of `jitlab fit` arguments."""
    wanted, rest, i = False, [], 0
    while i < len(args):
        key, sep, value = args[i].partition("=")
        if key != "--rehearse":
            rest.append(args[i])
        elif sep:
            wanted = value.lower() in ("true", "1", "yes")
        elif i + 1 < len(args) and args[i + 1].lower() in ("true", "false"):
            wanted, i = args[i + 1].lower() == "true", i + 1
        else:
            wanted = True
        i += 1
    return wanted, rest


def rehearse_fit_command(args: list[str]) -> int:
    """`jitlab fit ARGS --rehearse`: the run's preflight, then its rehearsal (jitlab.grid.rehearse), not the run."""
    from jitlab.grid.rehearse import rehearse_fit
    from jitlab.preflight import check_fit

    wanted, rest = pop_rehearse(args)
    if not wanted:
        return run_lightning(["fit", *rest])
    config = check_fit_config(rest)
    check_fit(config)  # the real run's needs (its full length, its root), before the rehearsal's
    return rehearse_fit(rest, config)


def main(argv: list[str] | None = None) -> int:
    explicit = argv is not None
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv and argv[0] in VERBS:
            module = importlib.import_module(VERBS[argv[0]][0])
            return int(module.main(argv[1:]) or 0)
        if not argv or argv[0] in ("-h", "--help"):
            print_verbs()
            return 0
        if argv[0] == "--version":
            from jitlab import __version__

            print(f"jitlab {__version__}")
            return 0
        if argv[0] not in LIGHTNING_VERBS and not argv[0].startswith("-"):
            raise ConfigError("command", f"unknown command {argv[0]!r}; valid: {', '.join([*LIGHTNING_VERBS, *VERBS])}")
        if argv[0] == "fit" and any(a.split("=")[0] == "--rehearse" for a in argv):
            return rehearse_fit_command(argv[1:])
        check_config_files(argv)
        return run_lightning(argv if explicit else None)
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
