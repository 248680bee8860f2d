"""The `jitlab` command: LightningCLI verbs (fit, validate, test, predict) plus jitlab's own verbs.

`jitlab fit` with no arguments trains the built-in default: the mini preset (a small JiT on the
embedded shapes, CPU, offline, a few minutes). `experiments/mini.yaml` spells out the same values.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any, Callable

from jitlab.errors import ConfigError

# jitlab's own verbs: name -> (module, help). Each module has main(argv) -> exit code.
VERBS: dict[str, tuple[str, str]] = {
    "info": ("jitlab.info", "parameters and GMACs of a named model"),
    "sample": ("jitlab.sample", "images from a checkpoint: PNG grid and/or .npz"),
    "eval": ("jitlab.evaluate", "score a checkpoint over EMA x CFG x interval; writes metrics.json"),
    "train-ref": ("jitlab.metrics.refnet", "train and cache the reference classifier of an embedded data set (FD-ref)"),
    "fid-stats": ("jitlab.metrics.stats", "reference statistics (mu, sigma) as .npz"),
    "fig2": ("jitlab.toy.fig2", "the toy of Figure 2: spiral in D dims, x/eps/v prediction -> reports/fig2.*"),
    "convert-official": ("jitlab.convert", "convert a released JiT .pth (model, model_ema1/2, args) to a jitlab checkpoint"),
    "prepare-imagenet": ("jitlab.data.prepare", "write pre-cropped uint8 shards of an ImageNet folder tree"),
    "grid": ("jitlab.grid.cli", "run / plan a paper grid (experiments/grids/NAME.yaml), locally or on SLURM"),
    "report": ("jitlab.report.cli", "turn a grid's run directories into reports/NAME.{csv,md,tex,png}"),
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

    class JitlabCLI(LightningCLI):
        def add_arguments_to_parser(self, parser) -> None:
            parser.add_lightning_class_args(MultiEMA, "ema")
            parser.add_lightning_class_args(SampleGrid, "samples")
            parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
            parser.add_lightning_class_args(PeriodicEval, "evaluation")  # off unless evaluation.every_n_steps > 0
            # training time kept in checkpoints across resumes (grid reports); timer.duration DD:HH:MM:SS stops
            # a run cleanly before a cluster's time limit
            parser.add_lightning_class_args(Timer, "timer")
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

        def before_instantiate_classes(self) -> None:
            config = self.config[self.subcommand] if self.subcommand else self.config
            fill_net_from_data(config)

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


def run_lightning(args: list[str] | None) -> int:
    import jitlab.data  # noqa: F401  (registers the data modules as subclasses for short names)
    from jitlab.module import JiTModule

    cli_cls, data_base = _lightning_cli()
    cli_cls(
        JiTModule,
        data_base,
        subclass_mode_data=True,
        args=args,
        save_config_kwargs={"overwrite": True},
        parser_kwargs={"fit": {"description": "Train one cell (defaults: the mini preset)."}},
        auto_configure_optimizers=False,
    )
    return 0


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


def main(argv: list[str] | None = None) -> int:
    explicit = argv is not None
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv and argv[0] in VERBS:
            module = importlib.import_module(VERBS[argv[0]][0])
            return int(module.main(argv[1:]) or 0)
        if argv and argv[0] in ("-h", "--help"):
            print("usage: jitlab {fit,validate,test,predict," + ",".join(VERBS) + "} ...")
            for verb, (_, text) in VERBS.items():
                print(f"  {verb:<18}{text}")
            print("  fit/validate/test/predict: LightningCLI verbs; see `jitlab fit --help`")
            return 0
        return run_lightning(argv if explicit else None)
    except ConfigError as error:
        print(f"jitlab: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
