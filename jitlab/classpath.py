"""The object a ``class_path`` in a plain dict names (jsonargparse's importer is private and works only while
parsing): one importer for checkpoints, the preflight and the grid."""

from __future__ import annotations

import importlib
from typing import Any

# the folders jitlab's modules moved into (one per layer): a path written before the move, in an older checkpoint's
# hyper_parameters (``jitlab.models.JiT``, now ``jitlab.core.models.JiT``), is looked up under each of them
LAYER_FOLDERS = ("core", "train", "score", "experiments")


def import_path(path: str) -> Any:
    """The object a dotted ``package.module.Name`` names (ImportError / AttributeError / ValueError if none)."""
    module, _, name = path.rpartition(".")
    if not module:
        raise ValueError(f"{path!r} is not a dotted path 'package.module.Name'")
    try:
        return getattr(importlib.import_module(module), name)
    except ModuleNotFoundError as error:
        if not names_itself(error, module):  # a module that exists lacks a dependency
            raise
        for moved in moved_modules(module):
            try:
                return getattr(importlib.import_module(moved), name)
            except ModuleNotFoundError as inner:
                if not names_itself(inner, moved):
                    raise
        raise


def names_itself(error: ModuleNotFoundError, module: str) -> bool:
    """Whether ``error`` says ``module`` (or a package above it) is missing, not something it imports."""
    return error.name is not None and module.startswith(error.name)


def moved_modules(module: str) -> list[str]:
    """Where a jitlab module named before the layer folders may live now: ``jitlab.models`` -> ``jitlab.core.models``,
    ``jitlab.train.models``, ... (nothing for other packages or for a path already in a layer folder)."""
    parts = module.split(".")
    if parts[0] != "jitlab" or len(parts) < 2 or parts[1] in LAYER_FOLDERS:
        return []
    return [".".join(["jitlab", folder, *parts[1:]]) for folder in LAYER_FOLDERS]
