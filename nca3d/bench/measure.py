"""Measuring helpers of the benches: the matmul rate every speed is a ratio to, timers, device
sync and peak resident memory. Imports nothing of nca3d."""

from __future__ import annotations

import contextlib
import sys
import time
from typing import Iterator

import torch


def timed(fn, repeats: int = 5, warmup: int = 1) -> float:
    """Median wall time of fn() in seconds."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return sorted(samples)[len(samples) // 2]


def matmul_gflops(size: int = 2048, device="cpu") -> float:
    """Dense fp32 matmul rate in GFLOP/s: the yardstick for every ratio."""
    return 2 * size ** 3 / timed(_matmul(size, device), repeats=5) / 1e9


def _matmul(size: int, device) -> callable:
    a = torch.randn(size, size, device=device)
    b = torch.randn(size, size, device=device)
    return lambda: sync(a @ b, device)


def rate_beside_matmul(fn, flops: float, repeats: int = 5, size: int = 2048, device="cpu") -> tuple[float, float]:
    """(median seconds of fn(), median ratio of its FLOP rate to the matmul's): each run of fn()
    follows one matmul and the ratio is taken per pair, so a noisy machine's swings cancel (one
    matmul sample taken before a bench can read half the rate the bench then runs at)."""
    matmul = _matmul(size, device)
    matmul(), fn()
    seconds, ratios = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        matmul()
        middle = time.perf_counter()
        fn()
        seconds.append(time.perf_counter() - middle)
        ratios.append(flops / seconds[-1] / (2 * size ** 3 / (middle - start)))
    return sorted(seconds)[repeats // 2], sorted(ratios)[repeats // 2]


def sync(result, device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()
    return result


def _proc_status_bytes(key: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _ru_maxrss_bytes() -> int:
    """getrusage's lifetime peak resident set, in bytes (kB on Linux, bytes on macOS)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)


def process_peak_rss_bytes() -> int:
    """This process's peak resident set so far (VmHWM on Linux, else getrusage's ru_maxrss)."""
    return _proc_status_bytes("VmHWM") or _ru_maxrss_bytes()


@contextlib.contextmanager
def peak_memory() -> Iterator[dict]:
    """Measure the peak resident memory a block adds above the resident memory before it.

    tracemalloc does not see torch's allocations, so this reads the kernel's counters: on Linux
    it resets the high-water mark (writing 5 to /proc/self/clear_refs) and reads VmHWM after the
    block ('reset' method). Elsewhere, or where the reset is refused, it falls back to
    getrusage's ru_maxrss, which never goes down: its delta is then only the growth of the
    process-lifetime peak, a lower bound ('ru_maxrss' method).
    """
    result: dict = {}
    before = _proc_status_bytes("VmRSS")
    method = None
    if before is not None:
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            method = "reset"
        except OSError:
            method = None
    if method is None:
        start_peak = _ru_maxrss_bytes()
        before = start_peak if before is None else before
    try:
        yield result
    finally:
        if method == "reset":
            peak = _proc_status_bytes("VmHWM") or before
        else:
            peak = _ru_maxrss_bytes()
            before = start_peak
            method = "ru_maxrss"
        result.update(peak_extra_bytes=max(0, peak - before), method=method)
