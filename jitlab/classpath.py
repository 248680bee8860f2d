"""The object a config's ``class_path`` names: one importer for the configs, the checkpoints and the grid.

jsonargparse resolves ``class_path`` only while parsing (its importer is private); a checkpoint's recorded
backbone, the preflight and the grid's cost table read ``class_path`` from plain dicts, so they import here.
"""

from __future__ import annotations

import importlib
from typing import Any


def import_path(path: str) -> Any:
    """The object a dotted ``package.module.Name`` names (ImportError / AttributeError / ValueError if none)."""
    module, _, name = path.rpartition(".")
    if not module:
        raise ValueError(f"{path!r} is not a dotted path 'package.module.Name'")
    return getattr(importlib.import_module(module), name)
