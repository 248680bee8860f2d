"""Several exponential moving averages (EMAs) of the network weights, as one Lightning callback.

The paper keeps two EMAs of the denoiser (decays 0.9999 and 0.9996) and samples with the first. Under FSDP2
(``jitlab.train.strategy.ShardedStrategy``) each average is a DTensor laid out as its parameter: every process
updates, swaps and saves only its own shard. Under DDP only rank 0 copies the averages to host memory.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator, Sequence

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor, nn
from torch.distributed.tensor import DTensor

from jitlab.errors import ConfigError

__all__ = ["MultiEMA", "ema_state_dicts"]


def _local(t: Tensor) -> Tensor:
    """This process's shard of a DTensor (a view: writing it writes the DTensor), else ``t`` itself."""
    return t.to_local() if isinstance(t, DTensor) else t


def _reshard(net: nn.Module) -> None:
    """Put FSDP2's sharded weights back in place: after an eval forward its root keeps the gathered full weights
    as its parameters (and would use them, stale, in the next forward)."""
    from torch.distributed.fsdp import FSDPModule

    for module in net.modules():
        if isinstance(module, FSDPModule):
            module.reshard()


class MultiEMA(L.Callback):
    """Keep one float32 EMA of ``pl_module.<attr>``'s parameters per decay.

    After every ``update_every``-th optimizer step: ``ema = decay * ema + (1 - decay) * param``.
    With ``warmup`` the decay used for the n-th update (n = 0, 1, ...) is
    ``min(decay, (1 + n) / (10 + n))``. Validation, test and predict run with ``decays[0]``.
    """

    def __init__(self, decays: Sequence[float] = (0.9999, 0.9996), attr: str = "net", update_every: int = 1,
                 warmup: bool = False):
        decays = [float(d) for d in decays]
        if not decays:
            raise ConfigError("ema.decays", "needs at least one decay")
        if len(set(decays)) != len(decays):
            raise ConfigError("ema.decays", f"must be distinct, got {decays}")
        for d in decays:
            if not 0.0 <= d <= 1.0:
                raise ConfigError("ema.decays", f"each decay must lie in [0, 1], got {d}")
        if update_every < 1:
            raise ConfigError("ema.update_every", f"must be >= 1, got {update_every}")
        self.decays = decays
        self.attr = attr
        self.update_every = int(update_every)
        self.warmup = bool(warmup)
        self.averages: list[dict[str, Tensor]] = []  # one name -> fp32 tensor dict per decay
        self.num_updates = 0
        self.last_step = 0  # trainer.global_step when on_train_batch_end last looked
        self._restored = False  # averages came from a checkpoint; on_fit_start keeps them
        self._backup: dict[str, Tensor] | None = None  # training weights while an EMA is swapped in
        self._swapped_index: int | None = None
        self._hook_swapped = False  # the current swap was made by an eval hook
        self._host_copy = True  # state_dict copies the averages to host memory (False: a DDP rank other than 0)

    @property
    def state_key(self) -> str:
        return self._generate_state_key(attr=self.attr, decays=self.decays)

    # -- the averages ------------------------------------------------------------------------
    def net(self, pl_module: nn.Module) -> nn.Module:
        """The averaged module, ``pl_module.<attr>`` (a dotted path is allowed)."""
        return pl_module.get_submodule(self.attr)

    @staticmethod
    def _params(net: nn.Module) -> dict[str, Tensor]:
        """The averaged parameters of ``net`` by name (FSDP2's sharded weights put back in place first)."""
        _reshard(net)
        return {name: p for name, p in net.named_parameters() if p.is_floating_point()}

    def effective_decay(self, decay: float, num_updates: int | None = None) -> float:
        """The decay used for an update after ``num_updates`` earlier ones (default: so far)."""
        n = self.num_updates if num_updates is None else num_updates
        return min(decay, (1 + n) / (10 + n)) if self.warmup else decay

    @torch.no_grad()
    def reset(self, pl_module: nn.Module) -> None:
        """Start every average as an fp32 copy of the current weights."""
        params = self._params(self.net(pl_module))
        self.averages = [{name: p.detach().to(torch.float32, copy=True) for name, p in params.items()}
                         for _ in self.decays]
        self.num_updates = 0

    def _align(self, params: dict[str, Tensor]) -> None:
        """Check the averages match ``params`` by name and put them on their device (once)."""
        for avg in self.averages:
            if avg.keys() != params.keys():
                missing, extra = sorted(params.keys() - avg.keys()), sorted(avg.keys() - params.keys())
                raise KeyError(f"MultiEMA averages do not match '{self.attr}': missing {missing[:5]}, "
                               f"unexpected {extra[:5]}")
            for name, p in params.items():
                a = avg[name]
                if isinstance(p, DTensor) and not isinstance(a, DTensor):  # a one-file checkpoint, now sharded
                    a = torch.distributed.tensor.distribute_tensor(a.to(p.device, torch.float32), p.device_mesh,
                                                                   p.placements)
                elif isinstance(p, DTensor) and (a.device_mesh, a.placements) != (p.device_mesh, p.placements):
                    a = a.redistribute(p.device_mesh, p.placements)
                elif isinstance(a, DTensor) and not isinstance(p, DTensor):
                    a = a.full_tensor()
                avg[name] = a if a.device == p.device else a.to(p.device, torch.float32)

    @torch.no_grad()
    def update(self, pl_module: nn.Module) -> None:
        """Move every average one step towards the current weights."""
        if self._backup is not None:
            raise RuntimeError("MultiEMA.update while EMA weights are swapped in; swap back first")
        params = self._params(self.net(pl_module))
        self._align(params)
        current = [_local(p.detach()).float() for p in params.values()]  # no copy when already fp32
        for decay, avg in zip(self.decays, self.averages):
            torch._foreach_lerp_([_local(avg[name]) for name in params], current, 1.0 - self.effective_decay(decay))
        self.num_updates += 1

    # -- swapping ----------------------------------------------------------------------------
    @torch.no_grad()
    def _swap_in(self, net: nn.Module, index: int) -> None:
        params = self._params(net)
        self._align(params)
        if self._backup is None:  # keep the training weights only once, never an EMA (this process's shards)
            self._backup = {name: _local(p.detach()).clone() for name, p in params.items()}
        avg = self.averages[index]
        torch._foreach_copy_([_local(p) for p in params.values()], [_local(avg[name]) for name in params])
        self._swapped_index = index

    @torch.no_grad()
    def _swap_out(self, net: nn.Module) -> None:
        if self._backup is not None:
            params = self._params(net)
            torch._foreach_copy_([_local(p) for p in params.values()], [self._backup[name] for name in params])
        self._backup = None
        self._swapped_index = None
        self._hook_swapped = False

    @contextmanager
    def swapped(self, pl_module: nn.Module, index: int = 0) -> Iterator[nn.Module]:
        """Run the block with EMA ``decays[index]`` in the weights; yields the averaged module. Re-entrant (one copy
        of the training weights is kept); the previous weights come back on exit, also on an exception."""
        if not self.averages:
            raise RuntimeError("MultiEMA has no averages yet (no fit started and no checkpoint loaded)")
        if not -len(self.decays) <= index < len(self.decays):
            raise IndexError(f"EMA index {index} out of range for decays {self.decays}")
        index %= len(self.decays)
        net = self.net(pl_module)
        previous = self._swapped_index
        if previous == index:
            yield net
            return
        self._swap_in(net, index)
        try:
            yield net
        finally:
            if previous is None:
                self._swap_out(net)
            else:
                self._swap_in(net, previous)

    @property
    def is_swapped(self) -> bool:
        """Whether an EMA currently sits in the module's weights."""
        return self._backup is not None

    # -- Lightning hooks ---------------------------------------------------------------------

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._host_copy = trainer.is_global_zero

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._restored:
            self._align(self._params(self.net(pl_module)))
        else:
            self.reset(pl_module)
            self.last_step = trainer.global_step
        self._restored = False

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        step = trainer.global_step
        if step == self.last_step:  # gradient accumulation: no optimizer step on this batch
            return
        self.last_step = step
        if step % self.update_every == 0:
            self.update(pl_module)

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Validation, test and predict run with ``decays[0]`` swapped in (unless an EMA already is)."""
        if self._backup is not None:  # someone already swapped an EMA in: leave it
            return
        if not self.averages:
            rank_zero_warn("MultiEMA: no averages yet, evaluating with the training weights")
            return
        self._swap_in(self.net(pl_module), 0)
        self._hook_swapped = True

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._hook_swapped:
            self._swap_out(self.net(pl_module))

    on_test_start = on_predict_start = on_validation_start
    on_test_end = on_predict_end = on_validation_end

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if self._backup is not None:
            self._swap_out(self.net(pl_module))

    # -- checkpointing -----------------------------------------------------------------------
    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        """While an EMA is swapped in, put the training weights into ``checkpoint["state_dict"]``."""
        if self._backup is None or "state_dict" not in checkpoint:
            return
        net = self.net(pl_module)
        by_id = {id(p): (p, self._backup[name]) for name, p in self._params(net).items()}
        model_sd = checkpoint["state_dict"]
        for name, t in net.state_dict(keep_vars=True).items():  # also every alias of a tied weight
            key = f"{self.attr}.{name}"
            if id(t) in by_id and key in model_sd:
                p, local = by_id[id(t)]
                saved = local.to(_local(model_sd[key]).device, copy=True)
                if isinstance(p, DTensor):  # a sharded checkpoint: this process's shard, as a DTensor
                    saved = DTensor.from_local(saved, p.device_mesh, p.placements, shape=p.shape, stride=p.stride())
                model_sd[key] = saved

    def state_dict(self) -> dict[str, Any]:
        sharded = any(isinstance(t, DTensor) for avg in self.averages for t in avg.values())
        if not self.averages or not (sharded or self._host_copy):
            return {}  # DDP: only rank 0's checkpoint is written; the other ranks copy nothing
        # sharded: the strategy saves each process's shard of these DTensors (jitlab.train.strategy)
        averages = [dict(avg) if sharded else {name: t.detach().to("cpu", copy=True) for name, t in avg.items()}
                    for avg in self.averages]
        return {"decays": list(self.decays), "attr": self.attr, "num_updates": self.num_updates,
                "last_step": self.last_step, "averages": averages}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if [float(d) for d in state_dict["decays"]] != self.decays:
            raise ValueError(f"MultiEMA checkpoint has decays {state_dict['decays']}, this callback {self.decays}")
        self.averages = [dict(avg) for avg in state_dict["averages"]]  # device and dtype fixed by _align
        self.num_updates = int(state_dict["num_updates"])
        self.last_step = int(state_dict["last_step"])
        self._restored = True


def ema_state_dicts(checkpoint: dict[str, Any], attr: str = "net") -> dict[float, dict[str, Tensor]]:
    """decay -> EMA state dict of ``<attr>`` from a loaded Lightning checkpoint dict (names as in
    ``net.named_parameters()``: load with ``net.load_state_dict(sd, strict=False)``)."""
    callbacks = checkpoint.get("callbacks")
    if not callbacks:
        raise KeyError(
            f"checkpoint has no callback states (keys: {sorted(checkpoint)}); was it saved with weights_only=True?"
        )
    found: dict[float, dict[str, Tensor]] = {}
    for state in callbacks.values():
        if isinstance(state, dict) and "averages" in state and "decays" in state and state.get("attr") == attr:
            found.update({float(d): avg for d, avg in zip(state["decays"], state["averages"])})
    if not found:
        held = sorted(map(str, callbacks))
        raise KeyError(f"no MultiEMA state for '{attr}' in checkpoint['callbacks']; it holds {held}")
    return found
