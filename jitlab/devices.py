"""Which device on its node a process uses: one answer for training's evaluation, sampling and statistics.

Launchers say it differently: torchrun sets ``LOCAL_RANK`` for each process it starts; SLURM's ``srun`` tasks get
``SLURM_LOCALID`` and no ``LOCAL_RANK`` (Lightning's SLURM environment reads it, but sets no variable), so a reader
of ``LOCAL_RANK`` alone puts every task of a node on device 0. A process group without either falls back to its
rank modulo the node's devices.
"""

from __future__ import annotations

import os

import torch

# the launcher's variable for "my index on this node", the most specific first: torchrun started inside one SLURM
# task (``srun torchrun --nproc_per_node 8``) shares SLURM_LOCALID=0 among its 8 processes, each with its LOCAL_RANK
LOCAL_INDEX_VARIABLES = ("LOCAL_RANK", "SLURM_LOCALID")


def local_device_index(device_count: int | None = None) -> int:
    """This process's device index on its node: ``LOCAL_RANK`` (torchrun), else ``SLURM_LOCALID`` (srun tasks),
    else the process group's rank modulo the devices, else 0.

    ``device_count``: the devices this process sees (None: the visible GPUs). With a count, the index is taken
    modulo it: a SLURM job that binds one GPU to each task (``--gpus-per-task 1``) shows every task one device,
    ``cuda:0``, whatever its local id.
    """
    count = torch.cuda.device_count() if device_count is None else device_count
    index = None
    for name in LOCAL_INDEX_VARIABLES:
        value = os.environ.get(name, "").strip()
        if value:
            index = int(value)
            break
    if index is None:
        dist = torch.distributed
        index = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
        if count < 1:
            return 0  # a rank is no device index without devices to wrap it to
    return index % count if count > 0 else index
