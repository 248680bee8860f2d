"""Which device on its node a process uses: one answer for training's evaluation, sampling and statistics.

torchrun sets ``LOCAL_RANK``; SLURM's ``srun`` tasks get only ``SLURM_LOCALID`` (a reader of ``LOCAL_RANK`` alone
puts every task of a node on device 0).
"""

from __future__ import annotations

import os

import torch

# the most specific first: torchrun inside one SLURM task (``srun torchrun --nproc_per_node 8``) shares
# SLURM_LOCALID=0 among its 8 processes, each with its own LOCAL_RANK
LOCAL_INDEX_VARIABLES = ("LOCAL_RANK", "SLURM_LOCALID")


def local_device_index(device_count: int | None = None) -> int:
    """``LOCAL_RANK``, else ``SLURM_LOCALID``, else the process group's rank, else 0; modulo ``device_count``.

    ``device_count``: the devices this process sees (None: the visible GPUs); a SLURM job that binds one GPU to each
    task (``--gpus-per-task 1``) shows every task one device, ``cuda:0``, whatever its local id.
    """
    count = torch.cuda.device_count() if device_count is None else device_count
    values = [os.environ.get(name, "").strip() for name in LOCAL_INDEX_VARIABLES]
    index = next((int(value) for value in values if value), None)
    if index is None:
        dist = torch.distributed
        index = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
        if count < 1:
            return 0  # a rank is no device index without devices to wrap it to
    return index % count if count > 0 else index
