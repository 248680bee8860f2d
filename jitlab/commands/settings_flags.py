"""The flags of `jitlab sample` and `jitlab eval`, one per field of the typed settings (``jitlab.core.settings``):
its type from the annotation, its help from the class docstring's ``Args:`` line. A flag not given is left out
(``argparse.SUPPRESS``), so the settings supply the default and check the value; ``as_flag`` names a bad one's flag.
"""

from __future__ import annotations

import argparse
import inspect
import types
from dataclasses import MISSING, fields
from enum import Enum
from pathlib import Path
from typing import Any, Collection, Iterable, Union, get_args, get_origin, get_type_hints

import docstring_parser

from jitlab.errors import ConfigError
from jitlab.core.settings import message_of


def add_settings_flags(p: argparse.ArgumentParser, settings: type, names: Iterable[str],
                       flags: dict[str, str] | None = None) -> None:
    """``--FIELD`` (or ``flags[FIELD]``) for each field ``names`` of the dataclass ``settings``."""
    hints, docs = get_type_hints(settings), field_docs(settings)
    by_name = {f.name: f for f in fields(settings)}
    for name in names:
        f = by_name[name]
        default = f.default if f.default is not MISSING else f.default_factory()  # type: ignore[misc]
        help = docs[name].rstrip(".").replace("``", "")
        p.add_argument((flags or {}).get(name, f"--{name}"), dest=name, default=argparse.SUPPRESS,
                       help=f"{help} (default: {_shown(default)})", **_parsing(hints[name]))


def _parsing(kind: Any) -> dict[str, Any]:
    """argparse's keywords for a field of type ``kind``; values the settings parse from text (EMA ``none``, an
    interval ``0.1,1.0``, a path) stay text and are checked by the settings."""
    args = get_args(kind)
    if get_origin(kind) in (Union, types.UnionType):  # X | None: a tuple may be given empty, a scalar as text
        inner = next(a for a in args if a is not type(None))
        return {**_parsing(inner), "nargs": "*"} if get_origin(inner) is tuple else {}
    if get_origin(kind) is tuple:
        item = args[0] if args[0] in (int, float) else None
        return {"nargs": "+" if args[-1] is Ellipsis else len(args), **({"type": item} if item else {})}
    if kind is bool:
        return {"action": "store_true"}
    if isinstance(kind, type) and issubclass(kind, Enum):
        return {"metavar": "{" + ",".join(e.value for e in kind) + "}"}
    return {"type": kind} if kind in (int, float) else {}


def field_docs(settings: type) -> dict[str, str]:
    """Field -> its description in the class docstring's ``Args:`` section (continuation lines joined)."""
    parsed = docstring_parser.parse(inspect.getdoc(settings) or "", docstring_parser.DocstringStyle.GOOGLE)
    return {param.arg_name: " ".join((param.description or "").split()) for param in parsed.params}


def add_shard_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--shards", type=Path, default=None, help="keep the generated images as shards (one .npz per "
                   "block of global indices) in this directory: a rerun (a requeued job) resumes from them")
    p.add_argument("--shard_size", type=int, default=None, help="images per shard (None: 10 batches)")


def check_shard_size(size: int | None) -> None:
    if size is not None and size < 1:
        raise ConfigError("--shard_size", f"must be >= 1, got {size}")


def given(args: argparse.Namespace, names: Collection[str]) -> dict[str, Any]:
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
