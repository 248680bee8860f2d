"""What the device can do: the measured matmul peak, the process's peak memory, the machine's facts."""

from __future__ import annotations

import os
import platform
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
    """GFLOP/s of the best of ``repeats`` large square matmuls (``2 n^3`` FLOPs each) after two warm-ups: the MFU's
    denominator, measured rather than taken from a data sheet (a shared or throttled CPU is slower than its spec)."""
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


def _proc_field(name: str, key: str) -> str | None:
    """The value of the first ``key: value`` line of ``/proc/NAME`` (None: no such file or line)."""
    try:
        with open(f"/proc/{name}") as handle:
            return next((line.split(":", 1)[1].strip() for line in handle if line.startswith(key)), None)
    except OSError:
        return None


def machine_facts(versions: dict[str, str], device: torch.device | None = None) -> dict[str, str]:
    """CPU, memory, system, Python, torch and ``versions``; with ``device`` Lightning's version and the device."""
    kb = _proc_field("meminfo", "MemTotal")  # "16384 kB"
    facts = {
        "CPU": f"{_proc_field('cpuinfo', 'model name') or platform.processor() or '?'}, {os.cpu_count()} logical cores",
        "memory": f"{int(kb.split()[0]) / 2**20:.0f} GiB" if kb else "?",
        "system": f"{platform.system()} {platform.release()}",
        "Python": platform.python_version(),
        "torch": torch.__version__,
        **versions,
        "torch threads": str(torch.get_num_threads()),
    }
    if device is not None:
        import lightning

        facts["Lightning"] = lightning.__version__
        facts["device"] = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    return facts
