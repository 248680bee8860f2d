"""The object a ``class_path`` in a plain dict names (jsonargparse's importer is private and works only while
parsing): one importer for checkpoints, the preflight and the grid; and a path written before the layer folders
spelled as today (old checkpoints and `--config` files)."""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any

# the folders jitlab's modules moved into (one per layer): a path written before the move, in an older checkpoint's
# hyper_parameters (``jitlab.models.JiT``, now ``jitlab.core.models.JiT``), is looked up under each of them
LAYER_FOLDERS = ("core", "train", "score", "experiments")


def import_path(path: str) -> Any:
    """The object a dotted ``package.module.Name`` names (ImportError / AttributeError / ValueError if none)."""
    module, _, name = current_path(path).rpartition(".")
    if not module:
        raise ValueError(f"{path!r} is not a dotted path 'package.module.Name'")
    return getattr(importlib.import_module(module), name)


def current_path(path: str) -> str:
    """``path`` as spelled today: a jitlab module named before the layer folders is the folder's that has it
    (``jitlab.data.EmbeddedDataModule`` -> ``jitlab.core.data.EmbeddedDataModule``); any other path unchanged.
    Nothing is imported but the packages above each candidate (``importlib.util.find_spec``)."""
    module, _, name = path.rpartition(".")
    moved = moved_modules(module)
    if not moved or module_exists(module):
        return path
    return next((f"{candidate}.{name}" for candidate in moved if module_exists(candidate)), path)


def module_exists(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a package above it is missing
        return False


def moved_modules(module: str) -> list[str]:
    """Where a jitlab module named before the layer folders may live now: ``jitlab.models`` -> ``jitlab.core.models``,
    ``jitlab.train.models``, ... (nothing for other packages or for a path already in a layer folder)."""
    parts = module.split(".")
    if parts[0] != "jitlab" or len(parts) < 2 or parts[1] in LAYER_FOLDERS:
        return []
    return [".".join(["jitlab", folder, *parts[1:]]) for folder in LAYER_FOLDERS]
