"""What a run is, apart from where its files live.

A run is identified by its content: the network, the flow, the optimiser, the trainer and what the data
are (kind, resolution, classes, source kind, seed). Where the data live (``root``, ``cache_dir``) is not
part of it: moving ImageNet, or naming the same data by another path, must not orphan a run. The grid's
cell hash and the checks of a resumed run both use this one definition.
"""

from __future__ import annotations

import copy
from typing import Any

# data-module arguments that say where the data are, not what they are
DATA_LOCATION_KEYS = frozenset({"root", "cache_dir"})


def content_config(config: dict[str, Any]) -> dict[str, Any]:
    """A `jitlab fit` config (as a dict) without the data's location (a copy; the input is left alone)."""
    config = copy.deepcopy(config)
    args = (config.get("data") or {}).get("init_args")
    if isinstance(args, dict):
        for key in DATA_LOCATION_KEYS:
            args.pop(key, None)
    return config


def data_content(init_args: dict[str, Any]) -> dict[str, Any]:
    """A data module's arguments without its location (and without Lightning's bookkeeping keys)."""
    return {k: v for k, v in init_args.items() if k not in DATA_LOCATION_KEYS and not str(k).startswith("_")}
