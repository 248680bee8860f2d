"""What the device can do: the measured matmul peak, the process's peak memory, the machine's facts."""

from __future__ import annotations

import resource
import time

import torch


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (a GPU runs asynchronously; the CPU needs nothing)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_dtype(device: torch.device) -> torch.dtype:
    """The precision the bench trains and compares in: fp32 on CPU, bf16 on a GPU."""
    return torch.bfloat16 if device.type == "cuda" else torch.float32


def matmul_peak_gflops(device: torch.device, size: int | None = None, repeats: int = 5) -> float:
    """GFLOP/s of the best of ``repeats`` large square matmuls (``2 n^3`` FLOPs each) after two warm-ups.

    The denominator of the MFU: what this device reaches on the kind of work a transformer is made of,
    measured here rather than taken from a data sheet (a shared or throttled CPU is slower than its spec).
    """
    n = size or (8192 if device.type == "cuda" else 2048)
    a = torch.randn(n, n, device=device, dtype=matmul_dtype(device))  # (n, n)
    b = torch.randn(n, n, device=device, dtype=matmul_dtype(device))  # (n, n)
    best = float("inf")
    for i in range(repeats + 2):
        synchronize(device)
        start = time.perf_counter()
        torch.mm(a, b)
        synchronize(device)
        if i >= 2:
            best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory in MiB: the GPU's allocated tensors since the last reset, or the process's resident set size
    (``ru_maxrss``, the high-water mark of the whole process so far: it cannot be reset)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def machine_facts(device: torch.device) -> dict[str, str]:
    """CPU, memory, system and versions (the data benchmark's facts), plus Lightning and the GPU."""
    import lightning

    from jitlab.experiments.bench.data import machine_facts as data_machine_facts

    facts = data_machine_facts()
    facts.pop("Pillow", None)
    facts.pop("litdata", None)
    facts["Lightning"] = lightning.__version__
    facts["device"] = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    return facts
