"""The object a ``class_path`` in a plain dict names (jsonargparse's importer is private and works only while
parsing): one importer for checkpoints, the preflight and the grid."""

from __future__ import annotations

import importlib
from typing import Any


def import_path(path: str) -> Any:
    """The object a dotted ``package.module.Name`` names (ImportError / AttributeError / ValueError if none)."""
    module, _, name = path.rpartition(".")
    if not module:
        raise ValueError(f"{path!r} is not a dotted path 'package.module.Name'")
    return getattr(importlib.import_module(module), name)
