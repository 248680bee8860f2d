"""The one error type for bad configuration: it names the field and says what is valid.

Every mistake a user can make ends as one line ``jitlab: error: FIELD: what is wrong and what is valid``
with exit code 2 (``jitlab.commands.cli.main`` prints it). ``ArgumentParser`` gives jitlab's own verbs the same
one line for argparse's errors (argparse prints the whole usage first); ``one_line`` and
``find_config_error`` turn the errors of the libraries in between (jsonargparse, Lightning) into it.
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


class ArgumentParser(argparse.ArgumentParser):
    """argparse with one error line (``jitlab VERB: error: ...``, exit 2) instead of the usage and the line.

    ``--help`` still shows the usage. Sub-parsers (``add_subparsers``) are of the same class.
    """

    def error(self, message: str) -> NoReturn:
        print(f"{self.prog}: error: {one_line(message)} (see `{self.prog} --help`)", file=sys.stderr)
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
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, ConfigError):
            return current
        stack += [current.__cause__, current.__context__]
    return None
