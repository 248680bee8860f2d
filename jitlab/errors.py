"""The one error type for bad configuration, shown as one line ``jitlab: error: FIELD: what is wrong`` (exit 2).

``ArgumentParser``, ``one_line`` and ``find_config_error`` bring argparse's, jsonargparse's and Lightning's errors
to that one line.
"""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn


class ConfigError(ValueError):
    """A configuration value is invalid. ``field`` is its dotted name as a user types it."""

    def __init__(self, field: str, message: str):
        self.field = field
        super().__init__(f"{field}: {message}")


class _DefaultsShown(argparse.ArgumentDefaultsHelpFormatter):
    """``(default: ...)`` only where a flag has one (not None, an empty list or an off switch) and its help does not
    already say it."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        unset = action.default is None or action.default is False or action.default == []
        if unset or "default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


class ArgumentParser(argparse.ArgumentParser):
    """Every verb's argparse. A usage error is one line, ``jitlab: error: ... (see `jitlab VERB --help`)`` (exit 2),
    as a ConfigError is, instead of the usage and the line; ``--help`` shows each flag's default."""

    def __init__(self, **kwargs):
        kwargs.setdefault("formatter_class", _DefaultsShown)
        super().__init__(**kwargs)

    def error(self, message: str) -> NoReturn:
        print(f"jitlab: error: {one_line(message)} (see `{self.prog} --help`)", file=sys.stderr)
        raise SystemExit(2)


def one_line(text: object, limit: int = 600) -> str:
    """A message on one line: whitespace runs (newlines of library messages) become single spaces."""
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def find_config_error(error: BaseException) -> ConfigError | None:
    """The ConfigError an exception was raised from, if any (jsonargparse wraps the ones our classes raise)."""
    seen: set[int] = set()
    stack: list[BaseException | None] = [error]
    while stack:
        current = stack.pop()
        if isinstance(current, ConfigError):
            return current
        if current is not None and id(current) not in seen:
            seen.add(id(current))
            stack += [current.__cause__, current.__context__]
    return None
