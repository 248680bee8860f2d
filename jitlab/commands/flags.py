"""One flag style for every verb: ``--snake_case``, the spelling `jitlab fit` (LightningCLI) cannot avoid.

An older spelling (``--dry-run``) stays accepted as a hidden alias: it parses into the same field and is
not shown by ``--help``.
"""

from __future__ import annotations

import argparse
from typing import Any


def add_flag(parser: Any, name: str, *aliases: str, **kwargs: Any) -> argparse.Action:
    """``parser.add_argument(name, **kwargs)`` plus each of ``aliases`` as a hidden spelling of the same flag.

    ``parser`` may be an argument group. An alias sets nothing unless given (``default=SUPPRESS``).
    """
    action = parser.add_argument(name, **kwargs)
    own = ("required", "help", "default", "metavar", "dest")  # the alias takes these from the flag, or none
    hidden = {key: value for key, value in kwargs.items() if key not in own}
    for alias in aliases:
        parser.add_argument(alias, **hidden, dest=action.dest, default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    return action


def dashed(name: str) -> str:
    """The old dashed spelling of ``--snake_case``: ``--dry_run`` -> ``--dry-run``."""
    return "--" + name[2:].replace("_", "-")
