"""The flags of the sampling and evaluation settings (``jitlab.settings``) that `jitlab sample` and `jitlab eval`
share: each flag is a settings field; its default and its check are the field's, never repeated here.

A flag not given is left out of the parsed arguments (``argparse.SUPPRESS``), so the settings object supplies
the default (``--help`` shows it); a bad value's ``ConfigError`` names the field, and ``as_flag`` renames it to
the flag a user typed.
"""

from __future__ import annotations

import argparse
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Any

from jitlab.errors import ConfigError
from jitlab.settings import SamplerSettings, message_of


def default_of(settings: type, name: str) -> Any:
    """A settings class's default of field ``name`` (for ``--help``)."""
    for f in fields(settings):
        if f.name == name:
            value = f.default if f.default is not MISSING else f.default_factory()  # type: ignore[misc]
            return _shown(value)
    raise KeyError(name)


def add_setting(p: argparse.ArgumentParser, flag: str, settings: type, name: str, help: str, **kwargs: Any) -> None:
    """``flag`` for field ``name`` of ``settings``: absent unless given; ``--help`` states the field's default."""
    shown = kwargs.pop("shown_default", default_of(settings, name))
    p.add_argument(flag, dest=kwargs.pop("dest", name), default=argparse.SUPPRESS,
                   help=f"{help} (default: {shown})", **kwargs)


def add_sampler_flags(p: argparse.ArgumentParser) -> None:
    """The sampler flags both verbs share (their CFG flags differ: eval sweeps them)."""
    add_setting(p, "--sampler", SamplerSettings, "sampler", "ODE integrator: heun or euler (Heun's last step is "
                "plain Euler, as in the release)", metavar="{heun,euler}")
    add_setting(p, "--steps", SamplerSettings, "steps", "integration steps", type=int)
    add_setting(p, "--final_step", SamplerSettings, "final_step", "euler: the release's last step (its "
                "sample_t_eps clamp leaves some noise); x: the last step lands on the x-prediction", metavar="{euler,x}")
    add_setting(p, "--precision", SamplerSettings, "precision", "the network's forward while sampling: fp32, or "
                "bf16 autocast (the release on GPU)", metavar="{fp32,bf16}")
    add_setting(p, "--seed", SamplerSettings, "seed", "noise seed (each image's noise comes from seed and index)",
                type=int)


def add_shard_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--shards", type=Path, default=None, help="keep the generated images as shards (one .npz per "
                   "block of global indices) in this directory: a rerun (a requeued job) resumes from them")
    p.add_argument("--shard_size", type=int, default=None, help="images per shard (None: 10 batches)")


def check_shard_size(size: int | None) -> None:
    if size is not None and size < 1:
        raise ConfigError("--shard_size", f"must be >= 1, got {size}")


def given(args: argparse.Namespace, names: set[str]) -> dict[str, Any]:
    """The settings fields among ``names`` that the command line gave."""
    return {name: value for name, value in vars(args).items() if name in names}


def as_flag(error: ConfigError, flags: dict[str, str]) -> ConfigError:
    """The error with its field named as the flag (``flags``: field -> flag; otherwise ``--field``)."""
    if not error.field.isidentifier():
        return error  # names a flag or a file already
    return ConfigError(flags.get(error.field, f"--{error.field}"), message_of(error))


def _shown(value: Any) -> Any:
    """A default as a user types it: ``(0.1, 1.0)`` -> ``0.1 1.0``; the sweep's ``((0.1, 1.0),)`` -> ``0.1,1.0``."""
    if isinstance(value, tuple) and value and isinstance(value[0], tuple):
        return " ".join(",".join(map(str, v)) for v in value)
    if isinstance(value, tuple):
        return " ".join(str(_shown(v)) for v in value)
    return getattr(value, "value", value)
