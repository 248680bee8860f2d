"""How a run spreads over its processes: replicated DDP or sharded FSDP2, as the Trainer's ``strategy`` value.

A sharded checkpoint is a directory (``torch.distributed.checkpoint``: one file per process plus ``meta.pt``)
that also holds the callbacks' DTensors (MultiEMA's averages, each process its shard); :func:`consolidate` turns
it into the one-file layout `jitlab eval`, `sample` and `convert` read.
"""

from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path
from typing import Any, Literal

import torch
from lightning.pytorch.strategies import ModelParallelStrategy
from lightning.fabric.utilities.apply_func import apply_to_collection
from torch import nn
from torch.distributed.tensor import DTensor

from jitlab.atomic import atomic_path
from jitlab.errors import ConfigError

__all__ = ["StrategyKind", "ShardedStrategy", "strategy_config", "shard_net", "is_sharded", "consolidate"]

StrategyKind = Literal["ddp", "fsdp2"]
META = "meta.pt"  # Lightning's name for the non-tensor part of a sharded checkpoint
SHARDED = "sharded:"  # in meta.pt, the place of a callback's DTensor saved in the shards: SHARDED + its key


def strategy_config(kind: StrategyKind) -> dict[str, Any]:
    """The ``trainer.strategy`` value (``{"class_path": ..., "init_args": {...}}``) of ``kind``.

    ``ddp``: the gradients live in DDP's buckets (no second fp32 copy) and every parameter is used; ``fsdp2``:
    :class:`ShardedStrategy` (Lightning's FSDPStrategy refuses CPU, ModelParallelStrategy runs there with gloo).
    """
    if kind == "ddp":
        return {"class_path": "lightning.pytorch.strategies.DDPStrategy",
                "init_args": {"gradient_as_bucket_view": True, "find_unused_parameters": False}}
    if kind == "fsdp2":
        return {"class_path": "jitlab.train.strategy.ShardedStrategy", "init_args": {}}
    raise ConfigError("trainer.strategy", f"unknown strategy kind {kind!r}; valid: ddp, fsdp2")


def is_sharded(module: nn.Module) -> bool:
    """Whether ``module``'s parameters are DTensors (sharded by FSDP2)."""
    return any(isinstance(p, DTensor) for p in module.parameters())


def shard_net(net: nn.Module, mesh: Any, bf16: bool = False) -> None:
    """FSDP2 (``fully_shard``) on each of ``net.blocks`` (gathered one at a time) and on ``net`` itself, in place.
    ``bf16``: weights gathered as bf16, gradients reduced in fp32 (the sharded weights, moments and EMAs stay fp32)."""
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if bf16 else None
    kwargs: dict[str, Any] = {"mesh": mesh} | ({"mp_policy": policy} if policy is not None else {})
    for block in getattr(net, "blocks", ()):
        fully_shard(block, **kwargs)
    fully_shard(net, **kwargs)


class ShardedStrategy(ModelParallelStrategy):
    """FSDP2 over every process (one data-parallel group: ModelParallelStrategy's "auto" would put a node's
    processes in a tensor-parallel group), weights, gradients, AdamW's moments and MultiEMA's averages sharded."""

    def __init__(self, save_distributed_checkpoint: bool = True, process_group_backend: str | None = None) -> None:
        super().__init__(data_parallel_size="auto", tensor_parallel_size=1,
                         save_distributed_checkpoint=save_distributed_checkpoint,
                         process_group_backend=process_group_backend)

    def setup_environment(self) -> None:
        self._data_parallel_size = self.num_nodes * self.num_processes
        super().setup_environment()

    @property
    def shard_mesh(self) -> Any:
        """The 1-D mesh of all processes that FSDP2 shards over."""
        return self.device_mesh["data_parallel"]

    def save_checkpoint(self, checkpoint: dict[str, Any], filepath: Any, storage_options: Any = None) -> None:
        if not self._save_distributed_checkpoint:  # one file: every process helps gather the full tensors
            checkpoint["callbacks"] = apply_to_collection(checkpoint.get("callbacks", {}), DTensor,
                                                          lambda t: t.full_tensor().cpu())
            return super().save_checkpoint(checkpoint, filepath, storage_options)
        if storage_options is not None:
            raise TypeError("ShardedStrategy.save_checkpoint takes no storage_options")
        from torch.distributed.checkpoint import save

        # written here rather than by ModelParallelStrategy.save_checkpoint: that one pickles the callbacks' states
        # into rank 0's meta.pt (a DTensor there keeps rank 0's shard only) and writes into the final directory
        path = Path(self.broadcast(str(filepath)))
        tmp, old = path.with_name(f".{path.name}.tmp"), path.with_name(f".{path.name}.old")
        if self.global_rank == 0:
            shutil.rmtree(tmp, ignore_errors=True)
        self.barrier()
        shards: dict[str, Any] = {}
        checkpoint["callbacks"] = _pull_dtensors(checkpoint.get("callbacks", {}), "", shards)
        state = {"state_dict": checkpoint.pop("state_dict")}
        state.update({f"optimizer_{i}": s for i, s in enumerate(checkpoint.pop("optimizer_states", []))})
        if shards:
            state["callbacks"] = shards
        save(state, checkpoint_id=tmp)
        if self.global_rank == 0:  # a reader sees the whole new directory or the old one (a kill between the two
            # renames leaves neither under the name: `--ckpt_path last` then takes the newest other checkpoint)
            torch.save(checkpoint, tmp / META)
            if path.is_file():
                path.unlink()
            if path.exists():
                os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        self.barrier()

    def load_checkpoint(self, checkpoint_path: Any, weights_only: bool | None = None) -> dict[str, Any]:
        checkpoint = super().load_checkpoint(checkpoint_path, weights_only)
        keys = _markers(checkpoint.get("callbacks", {}))
        if keys:
            from torch.distributed.checkpoint import FileSystemReader, load
            from torch.distributed.tensor import Shard, empty

            path = Path(self.broadcast(str(checkpoint_path)))
            saved = FileSystemReader(str(path)).read_metadata().state_dict_metadata
            metas = {key: saved[f"callbacks.{key}"] for key in keys}
            shards = {key: empty(*meta.size, dtype=meta.properties.dtype, device_mesh=self.shard_mesh,
                                 placements=[Shard(0)]) for key, meta in metas.items()}  # FSDP2's: dim 0 split
            load({"callbacks": shards}, checkpoint_id=path)
            checkpoint["callbacks"] = _put_back(checkpoint["callbacks"], shards)
        return checkpoint


# -- callback states holding DTensors --------------------------------------------------------------

def _pull_dtensors(value: Any, key: str, out: dict[str, Any]) -> Any:
    """``value`` with each DTensor moved to ``out[key path]`` and replaced by ``SHARDED + key path``."""
    if isinstance(value, DTensor):
        out[key] = value
        return SHARDED + key
    if isinstance(value, dict):
        return {k: _pull_dtensors(v, f"{key}/{k}", out) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_pull_dtensors(v, f"{key}/{i}", out) for i, v in enumerate(value)]
    return value


def _markers(value: Any) -> list[str]:
    if isinstance(value, str) and value.startswith(SHARDED):
        return [value[len(SHARDED):]]
    if isinstance(value, dict):
        return [k for v in value.values() for k in _markers(v)]
    if isinstance(value, list):
        return [k for v in value for k in _markers(v)]
    return []


def _put_back(value: Any, tensors: dict[str, Any]) -> Any:
    """``value`` with each ``SHARDED + key`` replaced by ``tensors[key]``."""
    return apply_to_collection(value, str, lambda s: tensors[s[len(SHARDED):]] if s.startswith(SHARDED) else s)


# -- consolidation ---------------------------------------------------------------------------------

def is_sharded_checkpoint(path: str | Path) -> bool:
    """A checkpoint directory written by ``ShardedStrategy`` (a shard per process and ``meta.pt``)."""
    return Path(path).is_dir() and (Path(path) / META).is_file()


def consolidate(ckpt_dir: str | Path, out: str | Path) -> Path:
    """Write sharded checkpoint ``ckpt_dir`` as one file ``out`` in jitlab's layout, without optimizer state."""
    checkpoint = read_sharded(ckpt_dir)
    with atomic_path(out) as tmp:
        torch.save(checkpoint, tmp)
    return Path(out)


def sharded_meta(ckpt_dir: str | Path) -> dict[str, Any]:
    """The non-tensor part of sharded checkpoint ``ckpt_dir`` (``global_step``, ``hyper_parameters``, the
    callbacks' states with their DTensors as markers): read without touching the shards."""
    ckpt_dir = Path(ckpt_dir)
    if not is_sharded_checkpoint(ckpt_dir):
        raise ConfigError("CKPT_DIR", f"{ckpt_dir} is not a sharded checkpoint (a directory with {META})")
    return torch.load(ckpt_dir / META, map_location="cpu", weights_only=True)


def read_sharded(ckpt_dir: str | Path) -> dict[str, Any]:
    """Sharded checkpoint ``ckpt_dir`` gathered into jitlab's one-file layout, in memory, in one process on CPU:
    only the weights and the callbacks' tensors (MultiEMA's full averages) are read, not AdamW's moments."""
    from torch.distributed.checkpoint import FileSystemReader, load

    ckpt_dir = Path(ckpt_dir)
    checkpoint = sharded_meta(ckpt_dir)
    saved = FileSystemReader(str(ckpt_dir)).read_metadata().state_dict_metadata
    wanted: dict[str, dict[str, torch.Tensor]] = {"state_dict": {}, "callbacks": {}}
    for fqn, meta in saved.items():
        group, _, key = fqn.partition(".")
        if group in wanted and hasattr(meta, "size"):
            wanted[group][key] = torch.empty(tuple(meta.size), dtype=meta.properties.dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "torch.distributed is ... uninitialized, assuming ... a single process"
        load(wanted, checkpoint_id=ckpt_dir, no_dist=True)
    checkpoint["state_dict"] = wanted["state_dict"]
    checkpoint["callbacks"] = _put_back(checkpoint.get("callbacks", {}), wanted["callbacks"])
    return checkpoint
