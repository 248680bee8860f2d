"""The configuration of `jitlab fit`: the LightningCLI with jitlab's callbacks, defaults and checks.

With no arguments `jitlab fit` trains the mini preset, ``jitlab/mini.yaml`` (read as package data, so an installed
jitlab trains it from any directory; ``experiments/mini.yaml`` links to it). The fit verb, `jitlab grid run
--dry_run` (``check_fit_config``) and `jitlab bench` (``instantiate_fit``) parse the configuration alike, here.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
import warnings
from functools import lru_cache
from importlib.resources import files
from pathlib import Path
from typing import Any, Callable, Optional

import yaml

from jitlab.classpath import import_path
from jitlab.errors import ConfigError

@lru_cache(maxsize=1)
def builtin_defaults() -> dict[str, Any]:
    """``jitlab/mini.yaml`` as flat parser defaults: ``{"trainer.max_steps": 1000, "model.net": {...}, ...}``.

    A mapping with a ``class_path`` (the network, the data module) stays whole: it is one subclass choice.
    """
    preset = yaml.safe_load(files("jitlab").joinpath("mini.yaml").read_text())
    flat: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict) and "class_path" not in value:
            for key, inner in value.items():
                walk(f"{prefix}.{key}" if prefix else key, inner)
        else:
            flat[prefix] = value

    walk("", preset)
    # a setting of the command rather than of the preset: Lightning's default is an enum member, which the saved
    # config.yaml can't hold
    return {**flat, "timer.interval": "step"}


def lightning_cli() -> tuple[type, type]:
    """(jitlab's LightningCLI subclass, the data modules' base class); imports Lightning, so called lazily."""
    import lightning as L
    from lightning.pytorch.callbacks import Timer
    from lightning.pytorch.cli import LightningCLI

    import jitlab.core.data  # noqa: F401  (registers the data modules as subclasses for short names)
    from jitlab.train.callbacks import SampleGrid
    from jitlab.train.checkpoint import RunCheckpoint
    from jitlab.train.ema import MultiEMA
    from jitlab.score.periodic_eval import PeriodicEval
    from jitlab.score.preflight import check_fit
    from jitlab.train.resume import RESUME_WORDS, check_resume, resolve_ckpt_path, say

    class JitlabCLI(LightningCLI):
        def add_arguments_to_parser(self, parser) -> None:
            parser.add_lightning_class_args(MultiEMA, "ema")
            parser.add_lightning_class_args(SampleGrid, "samples")
            # the final step always saved, last.ckpt overwritten on resume, written atomically (jitlab.train.checkpoint)
            parser.add_lightning_class_args(RunCheckpoint, "checkpoint")
            parser.add_lightning_class_args(PeriodicEval, "evaluation")  # off unless evaluation.every_n_steps > 0
            # training time kept in checkpoints across resumes (grid reports); timer.duration DD:HH:MM:SS stops
            # a run cleanly before a cluster's time limit
            parser.add_lightning_class_args(Timer, "timer")
            parser.add_argument("--skip_preflight", type=bool, default=False, help="fit: do not check the data, "
                                "reference statistics, Inception weights, disk space and batch split first")
            parser.add_argument("--rehearse", type=bool, default=False, help="fit: rehearse the run instead (a few "
                                "steps, a checkpoint, a resume, its evaluation) under ROOT/../rehearsal/")
            parser.add_argument("--gpu_memory", type=Optional[float], default=None, help="fit: GiB per GPU to plan "
                                "for (default: the GPU's own; none on CPU): micro-batch, accumulation, checkpointing, "
                                "sharding, keeping the global batch (jitlab.train.fitplan; settings given are kept)")
            parser.set_defaults(builtin_defaults())
            # unset is None (the memory plan chooses; 1 without a plan), so an explicit 1 is the user's and kept
            parser.set_defaults({"trainer.accumulate_grad_batches": None})

        def _parse_ckpt_path(self) -> None:
            if self.config.get("subcommand") != "fit":
                return super()._parse_ckpt_path()  # validate/test/predict rebuild the model from the checkpoint
            # fit: `last` / `auto` name the newest checkpoint of the run's root; the command line's model is kept
            # (Lightning would silently replace it by the checkpoint's; jitlab.train.resume compares the two instead)
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
                plan_memory(config)  # first: the checks and the resume's comparison see the planned settings
            if config.trainer.get("accumulate_grad_batches") is None:
                config.trainer.accumulate_grad_batches = 1  # not planned: Lightning's default
            if self.subcommand != "fit":
                return
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


def plan_memory(config: Any) -> None:
    """Apply ``jitlab.train.fitplan``'s plan (given ``gpu_memory`` or on a GPU) to the config (its config.yaml
    records it) and print it in one line; a config predicted not to fit is refused here."""
    from jsonargparse import dict_to_namespace

    from jitlab.train.fitplan import device_memory_gib, plan_fit
    from jitlab.core.models.memory import NotCountable
    from jitlab.score.preflight import world_size

    gib = config.get("gpu_memory") or device_memory_gib(config.trainer.get("accelerator", "auto"))
    if not gib:
        return
    refuse = not config.get("skip_preflight")  # --skip_preflight: a predicted misfit is started anyway
    try:
        plan, keys = plan_fit(config.as_dict(), float(gib), world_size(config.trainer.as_dict()), refuse)
    except NotCountable as error:
        print(f"jitlab plan: not planned: {error}", file=sys.stderr, flush=True)
        return
    for key, value in keys.items():
        config[key] = dict_to_namespace(value) if isinstance(value, dict) else value
    config["gpu_memory"] = float(gib)
    if os.environ.get("LOCAL_RANK", "0") == "0" and os.environ.get("NODE_RANK", "0") == "0":
        line = plan.line() if plan.fits else f"started anyway (--skip_preflight): {plan.refusal()}"
        print(f"jitlab plan: {line} (a prediction)", file=sys.stderr, flush=True)


def fill_net_from_data(config: Any) -> None:
    """Give the network what the data decide (image size, classes, channels); a value set in both must agree."""
    data_cls = import_path(config.data.class_path)
    net_defaults: Callable[..., dict] | None = getattr(data_cls, "net_defaults", None)
    if net_defaults is None:
        return
    wanted = net_defaults(**dict(config.data.init_args or {}))
    net_args = config.model.net.init_args
    for key, value in wanted.items():
        if key in net_args and net_args[key] is None:
            net_args[key] = value
        elif key in net_args and net_args[key] != value:
            raise ConfigError(f"model.net.init_args.{key}",
                              f"is {net_args[key]} but the data module ({config.data.class_path}) gives {value}; "
                              f"leave it unset (null) to follow the data")


def instantiate_fit(args: list[str]) -> Any:
    """The LightningCLI of `jitlab fit ARGS` (no verb) with its model, data and Trainer built, nothing run."""
    from jitlab.train.module import JiTModule

    cli_cls, data_base = lightning_cli()
    return cli_cls(JiTModule, data_base, subclass_mode_data=True, args=args, run=False,
                   save_config_kwargs={"overwrite": True}, auto_configure_optimizers=False)


def check_fit_config(args: list[str]) -> dict[str, Any]:
    """The resolved config of `jitlab fit` arguments, parsed exactly as `fit` would, building nothing.

    Types, choices and unknown keys fail here (jsonargparse); values that need the data on disk are not checked.
    """
    from jitlab.train.module import JiTModule

    cli_cls, data_base = lightning_cli()

    class ParseOnly(cli_cls):
        def before_instantiate_classes(self) -> None:
            pass

        def instantiate_classes(self) -> None:
            pass

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "args given while sys.argv has arguments": intended here
            cli = ParseOnly(JiTModule, data_base, subclass_mode_data=True, args=args, run=False,
                            auto_configure_optimizers=False, seed_everything_default=0,
                            parser_kwargs={"exit_on_error": False})
    except argparse.ArgumentError as error:
        raise ConfigError("config", " ".join(str(error).split())) from None
    return cli.config.as_dict()
