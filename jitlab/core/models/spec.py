"""A network's construction spec ({"class_path", "init_args"}), stored in checkpoints to rebuild it."""

from __future__ import annotations

import inspect
from typing import Any

from torch import nn

from jitlab.classpath import import_path
from jitlab.errors import ConfigError


def record_init_args(frame_locals: dict[str, Any]) -> dict[str, Any]:
    """The constructor's arguments from its ``locals()`` (call first thing in ``__init__``)."""
    return {k: v for k, v in frame_locals.items() if k not in ("self", "__class__")}


def need(ok: bool, field: str, message: str) -> None:
    """A constructor's check: ConfigError on ``model.net.init_args.<field>`` unless ``ok``."""
    if not ok:
        raise ConfigError(f"model.net.init_args.{field}", message)


def net_spec(net: nn.Module) -> dict[str, Any]:
    """``{"class_path": ..., "init_args": ...}`` of a network that recorded its arguments as ``init_args``."""
    if not hasattr(net, "init_args"):
        raise TypeError(f"{type(net).__name__} does not record its init_args; it cannot be rebuilt from a checkpoint")
    cls = type(net)
    return {"class_path": f"{cls.__module__}.{cls.__qualname__}", "init_args": dict(net.init_args)}


def build_net(spec: dict[str, Any]) -> nn.Module:
    """Rebuild a network from its spec; only ``nn.Module`` subclasses are accepted."""
    cls = import_path(spec["class_path"])
    if not (inspect.isclass(cls) and issubclass(cls, nn.Module)):
        raise TypeError(f"{spec['class_path']} is not an nn.Module class")
    return cls(**spec.get("init_args", {}))
