"""What a run is, apart from where its files live: the grid's cell hash and a resumed run's checks use this one
definition. Neither the data's location (``root``, ``cache_dir``) nor the module a jitlab class is written in is
part of it: moving ImageNet or moving code between folders must not orphan a run.
"""

from __future__ import annotations

import copy
from typing import Any

# data-module arguments that say where the data are, not what they are
DATA_LOCATION_KEYS = frozenset({"root", "cache_dir"})
# network arguments that change how it is computed, not what (memory levers: the same weights and gradients);
# a fit may choose them for the GPU it runs on, so they name no other run
NET_LEVER_KEYS = frozenset({"checkpointing"})


def content_config(config: dict[str, Any]) -> dict[str, Any]:
    """A `jitlab fit` config (as a dict) without the data's location and the network's memory levers, its jitlab
    classes named by class alone (a copy; the input is left alone)."""
    config = _class_names(copy.deepcopy(config))
    data_args = (config.get("data") or {}).get("init_args")
    net_args = ((config.get("model") or {}).get("net") or {}).get("init_args")
    for args, keys in ((data_args, DATA_LOCATION_KEYS), (net_args, NET_LEVER_KEYS)):
        if isinstance(args, dict):
            for key in keys:
                args.pop(key, None)
    return config


def _class_names(value: Any) -> Any:
    """Every ``class_path: jitlab.<module>.<Class>`` as ``jitlab:<Class>`` (in place; other classes are kept)."""
    if isinstance(value, dict):
        path = value.get("class_path")
        if isinstance(path, str) and path.startswith("jitlab."):
            value["class_path"] = "jitlab:" + path.rsplit(".", 1)[-1]
        for inner in value.values():
            _class_names(inner)
    elif isinstance(value, list):
        for inner in value:
            _class_names(inner)
    return value


def data_content(init_args: dict[str, Any]) -> dict[str, Any]:
    """A data module's arguments without its location (and without Lightning's bookkeeping keys)."""
    return {k: v for k, v in init_args.items() if k not in DATA_LOCATION_KEYS and not str(k).startswith("_")}


def flat_settings(value: Any, prefix: str = "") -> dict[str, Any]:
    """A nested config as ``{"trainer.max_steps": 30, ...}`` (lists and scalars are leaves)."""
    if isinstance(value, dict) and value:
        flat: dict[str, Any] = {}
        for key, inner in value.items():
            flat.update(flat_settings(inner, f"{prefix}.{key}" if prefix else str(key)))
        return flat
    return {prefix: value}


def setting_differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """``KEY: OLD -> NEW`` for every setting that changes a run's result (the data's location is not one).

    ``old`` / ``new``: ``{"config": a fit config, "eval": evaluation settings}`` (either part may be absent).
    """
    def flat(run: dict[str, Any]) -> dict[str, Any]:
        return {**flat_settings(content_config(run.get("config") or {})),
                **flat_settings(run.get("eval") or {}, "eval")}

    before, after = flat(old), flat(new)
    missing = "(unset)"
    return [f"{key}: {before.get(key, missing)!r} -> {after.get(key, missing)!r}"
            for key in sorted(set(before) | set(after)) if before.get(key, missing) != after.get(key, missing)]
