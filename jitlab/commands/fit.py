"""`jitlab fit | validate | test | predict`: the LightningCLI verbs (the configuration is ``jitlab.score.fitconfig``).

`jitlab fit` with no arguments trains the built-in default (the mini preset, ``jitlab/mini.yaml``);
``--ckpt_path last`` resumes the newest run of the root, ``--ckpt_path auto`` resumes it if there is one;
``--rehearse`` rehearses the run (jitlab.experiments.grid.rehearse) instead of running it.
"""

from __future__ import annotations

import logging
import signal
import sys
from pathlib import Path
from typing import Any

import yaml

from jitlab.errors import ConfigError, one_line

VERBS = {
    "fit": "train one cell (the mini preset by default; --ckpt_path last|auto resumes)",
    "validate": "LightningCLI: the validation loop of a config / checkpoint",
    "test": "LightningCLI: the test loop",
    "predict": "LightningCLI: the predict loop",
}


CONFIG_OPTIONS = ("-c", "--config")  # a whole config: the file must exist
GROUP_OPTIONS = ("--model", "--data", "--trainer")  # a group's config file, or a class name / inline YAML


def config_files(argv: list[str]) -> list[tuple[int, str, str, Path]]:
    """Each config file ``argv`` names: (the index of the argument holding it, the option, the text before the
    path in that argument, the path), for ``--config FILE``, ``-c FILE``, ``--config=FILE`` and ``-c=FILE``, and
    for a group's file (``--model FILE``, ``--data=FILE``, ...) when FILE is one (else it is not a path)."""
    found = []
    for i, arg in enumerate(argv):
        key, sep, value = arg.partition("=")
        if key in CONFIG_OPTIONS + GROUP_OPTIONS and sep:
            found.append((i, key, key + sep, Path(value)))
        elif arg in CONFIG_OPTIONS + GROUP_OPTIONS and i + 1 < len(argv):
            found.append((i + 1, arg, "", Path(argv[i + 1])))
    return [(at, key, prefix, path) for at, key, prefix, path in found
            if key in CONFIG_OPTIONS or is_file(path)]


def is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except (OSError, ValueError):  # inline YAML too long or odd for a file name
        return False


def check_config_files(argv: list[str]) -> list[tuple[int, str, Path, Any]]:
    """Each config file exists and is YAML (jsonargparse's own messages do not name the file): ``config_files``
    with each file's parsed content (the option dropped)."""
    parsed = []
    for at, option, prefix, path in config_files(argv):
        field = "--config" if option in CONFIG_OPTIONS else option
        if not path.is_file():
            raise ConfigError(field, f"{path}: no such file")
        try:
            parsed.append((at, prefix, path, yaml.safe_load(path.read_text())))
        except (OSError, UnicodeDecodeError) as error:  # unreadable: permissions, a directory, binary bytes
            raise ConfigError(field, f"{path} cannot be read as a YAML text file "
                                     f"({type(error).__name__}: {one_line(error, 160)})") from None
        except yaml.YAMLError as error:
            mark = getattr(error, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
            raise ConfigError(field, f"{path} is not valid YAML{where}: "
                                     f"{getattr(error, 'problem', None) or one_line(error)}") from None
    return parsed


def current_config_args(argv: list[str]) -> list[str]:
    """``argv`` with each config file (``--config FILE``, or a group's: ``--data FILE``) that names jitlab modules
    by their paths from before the layer folders (an older run's config.yaml: ``jitlab.data.EmbeddedDataModule``)
    replaced by FILE's text spelled today, with a note naming what was read as what; the file itself is left as it
    is. The files are checked first (``check_config_files``)."""
    args = list(argv)
    for at, prefix, path, config in check_config_files(argv):
        renamed: dict[str, str] = {}
        current = current_class_paths(config, renamed)
        if renamed:
            listed = ", ".join(f"{old} -> {new}" for old, new in renamed.items())
            print(f"jitlab: note: {path} names modules moved since it was written; read as {listed}",
                  file=sys.stderr)
            text = yaml.safe_dump(current, sort_keys=False)
            args[at] = prefix + text
    return args


def current_class_paths(node: Any, renamed: dict[str, str]) -> Any:
    """``node`` with every ``class_path`` spelled as today (``classpath.current_path``); ``renamed`` collects
    the changed ones."""
    from jitlab.classpath import current_path

    if isinstance(node, list):
        return [current_class_paths(item, renamed) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: current_class_paths(value, renamed) for key, value in node.items()}
    written = out.get("class_path")
    today = current_path(written) if isinstance(written, str) else written
    if today != written:
        out["class_path"] = renamed[written] = today
    return out


def run_lightning(args: list[str] | None) -> int:
    """LightningCLI on ``args`` (``None``: ``sys.argv``); 128 + the signal if SIGINT/SIGTERM/SIGHUP stopped it."""
    from lightning.fabric.utilities.exceptions import MisconfigurationException
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    import jitlab.core.data  # noqa: F401  (registers the data modules as subclasses for short names)
    from jitlab.score.fitconfig import lightning_cli
    from jitlab.train.module import JiTModule
    from jitlab.train.resume import SaveOnSignal

    # "Seed set to 0" would come before a config error's one line (the seed is in the saved config.yaml)
    logging.getLogger("lightning.fabric.utilities.seed").setLevel(logging.WARNING)
    cli_cls, data_base = lightning_cli()
    on_signal = SaveOnSignal()
    parser_kwargs: dict[str, Any] = {"exit_on_error": False, **{verb: {"exit_on_error": False} for verb in VERBS}}
    parser_kwargs["fit"]["description"] = ("Train one cell (defaults: the mini preset). --ckpt_path last resumes "
                                           "the newest run of the root, --ckpt_path auto resumes it if there is one.")
    try:
        cli = cli_cls(JiTModule, data_base, subclass_mode_data=True, args=args, save_config_kwargs={"overwrite": True},
                      parser_kwargs=parser_kwargs, trainer_defaults={"callbacks": [on_signal]},
                      auto_configure_optimizers=False)
    except SIGTERMException:  # stopped by SIGINT / SIGTERM / SIGHUP after saving last.ckpt: not a finished run
        return 128 + int(on_signal.signum or signal.SIGTERM)
    except MisconfigurationException as error:  # the Trainer's own checks of its arguments (max_steps=-5, ...)
        raise ConfigError("trainer", one_line(error)) from None
    check_trained(cli)
    return 0


def check_trained(cli: Any) -> None:
    """A fit that trained nothing because the data give no batch (a batch larger than the data set) is an error,
    not a finished run (Lightning only prints "No training batches" and exits 0)."""
    trainer = getattr(cli, "trainer", None)
    if cli.subcommand != "fit" or trainer is None or trainer.limit_train_batches == 0:
        return
    if trainer.num_training_batches == 0 and trainer.global_step == 0:
        data = cli.config.fit.data.init_args
        raise ConfigError("data.init_args.global_batch_size",
                          f"{data.get('global_batch_size')} is larger than the training data give per step (drop_last: "
                          "no full batch): nothing was trained; give a smaller batch or more data")


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
    """`jitlab fit ARGS --rehearse`: the run's preflight, then its rehearsal instead of the run."""
    from jitlab.score.fitconfig import check_fit_config
    from jitlab.experiments.grid.rehearse import rehearse_fit
    from jitlab.score.preflight import check_fit

    wanted, rest = pop_rehearse(args)
    if not wanted:
        return run_lightning(["fit", *rest])
    config = check_fit_config(rest)
    check_fit(config)  # the real run's needs (its full length, its root), before the rehearsal's
    return rehearse_fit(rest, config)


def main(argv: list[str], explicit: bool = True) -> int:
    """``argv`` starts with the verb (or a LightningCLI option); ``explicit=False``: LightningCLI reads ``sys.argv``."""
    current = current_config_args(argv)  # every config file (--config, --data FILE, ...) checked, with today's paths
    if argv and argv[0] == "fit" and any(a.split("=")[0] == "--rehearse" for a in argv):
        return rehearse_fit_command(current[1:])
    return run_lightning(current if explicit or current != argv else None)
