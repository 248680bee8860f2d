"""One typed view of a resolved `jitlab fit` config (a dict) instead of chained ``.get`` lookups; ``net_args`` is
the one derivation of the network's shape from the data."""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

from jitlab.classpath import import_path

DRY_CLASSES = 1000  # a dry run's class count when the data are not read: ImageNet's (the label table barely counts)


@dataclass(frozen=True)
class FitView:
    data_class: str  # "" when the config names none
    data: dict[str, Any]  # data.init_args
    net_class: str
    net: dict[str, Any]  # model.net.init_args
    model: dict[str, Any]  # the model section (flow, compile, net, ...)
    trainer: dict[str, Any]

    @classmethod
    def of(cls, config: dict[str, Any]) -> FitView:
        data, model = config.get("data") or {}, config.get("model") or {}
        net = model.get("net") or {}
        return cls(str(data.get("class_path") or ""), dict(data.get("init_args") or {}),
                   str(net.get("class_path") or ""), dict(net.get("init_args") or {}), model,
                   dict(config.get("trainer") or {}))

    @property
    def batch(self) -> int:
        """The global batch (``data.init_args.global_batch_size``; 1 when unset)."""
        return int(self.data.get("global_batch_size", 1))

    @property
    def accumulate(self) -> int:
        return int(self.trainer.get("accumulate_grad_batches") or 1)

    @property
    def max_steps(self) -> int | None:
        """The step training ends at (``trainer.max_steps``); None when the config sets no step count."""
        steps = self.trainer.get("max_steps")
        return int(steps) if isinstance(steps, int) and not isinstance(steps, bool) and steps > 0 else None

    @property
    def bf16(self) -> bool:
        return str(self.trainer.get("precision", "32")).startswith("bf16")

    def net_args(self, wanted: dict[str, Any] | None = None) -> dict[str, Any]:
        """The network's arguments with what the data decide filled in where unset and the class takes them.

        ``wanted``: the data module's ``net_defaults``; without it (a dry run) the data's resolution (else 256),
        ``DRY_CLASSES`` and the data's ``dim``.
        """
        if wanted is None:
            wanted = {"img_size": self.data.get("resolution", 256), "num_classes": DRY_CLASSES,
                      "dim": self.data.get("dim")}  # a toy's ambient dimension (FILLED_FROM_DATA)
        params = inspect.signature(import_path(self.net_class)).parameters if self.net_class else wanted
        return {**self.net, **{k: v for k, v in wanted.items() if self.net.get(k) is None and k in params}}
