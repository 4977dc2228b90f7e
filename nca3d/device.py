"""Run-time device choice: CUDA when present, otherwise CPU."""

from __future__ import annotations

import functools

import torch

from .errors import NCA3DError
from .memory import available_memory


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """Map 'auto' | 'cpu' | 'cuda' | 'cuda:N' to a usable torch.device."""
    if isinstance(name, torch.device):
        return name
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise NCA3DError(f"unknown device '{name}'; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise NCA3DError(f"device '{name}' requested but CUDA is not available; use --device cpu or auto")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise NCA3DError(
                f"device '{name}' does not exist ({torch.cuda.device_count()} CUDA devices); use cuda:0 or auto"
            )
    elif device.type != "cpu":
        raise NCA3DError(f"unsupported device '{name}'; use auto, cpu, cuda or cuda:N")
    return device


SHORT_OF_MEMORY = 0.25  # available / total memory under which training hands kept allocations back


@functools.cache
def _libc():
    """The C library through ctypes, or None where it cannot be loaded."""
    import ctypes
    import ctypes.util

    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


def keep_cpu_allocations(threshold_bytes: int = 1 << 30) -> bool:
    """Let glibc keep large freed blocks instead of unmapping them after every operation.

    On CPU, each large activation is otherwise a fresh ``mmap`` whose pages fault in again on
    every iteration; for the ``effnet`` loss this roughly doubles the wall time. Process-wide;
    call once before CPU training (the process then keeps its peak memory, and more: see
    release_kept_allocations). Returns False where it does not apply (not glibc).
    """
    import ctypes

    mallopt = getattr(_libc(), "mallopt", None)
    if mallopt is None:
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    value = ctypes.c_int(min(int(threshold_bytes), 2**31 - 1))
    return bool(mallopt(m_mmap_threshold, value)) and bool(mallopt(m_trim_threshold, value))


def release_kept_allocations(short: float = SHORT_OF_MEMORY) -> bool:
    """When the machine's available memory is under `short` of its total, hand the heap's free
    pages back to the system (glibc's malloc_trim); returns whether it did. The blocks that
    keep_cpu_allocations keeps fragment between iterations of different sizes: a frequency-64
    mesh training whose live peak is about 5 GB climbed to 9-14 GB RSS, and two trainings that
    fit together were OOM-killed. With memory to spare the blocks stay (the speed they buy)."""
    available, total = available_memory()
    trim = getattr(_libc(), "malloc_trim", None)
    if trim is None or available is None or not total or available >= short * total:
        return False
    trim(0)
    return True


_BF16_FASTER: dict[str, bool] = {}


def bf16_matmul_pays(device: torch.device, min_speedup: float = 1.3) -> bool:
    """Whether bfloat16 autocast runs an NCA-sized MLP forward + backward at least `min_speedup`x
    faster than float32 here: measured once per process (about 0.2 s) on CPUs, where it pays only
    with native bf16 (AVX512-BF16, AMX); False on other devices, which keep float32."""
    if device.type != "cpu":
        return False
    key = str(device)
    if key not in _BF16_FASTER:
        import time

        generator = torch.Generator().manual_seed(0)
        x = torch.randn(8192, 48, generator=generator)
        layers = torch.nn.Sequential(torch.nn.Linear(48, 96), torch.nn.ReLU(), torch.nn.Linear(96, 12))

        def best_of(bf16: bool) -> float:
            times = []
            for _ in range(4):
                start = time.perf_counter()
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                    out = layers(x.requires_grad_())
                out.float().square().mean().backward()
                times.append(time.perf_counter() - start)
            return min(times[1:])

        try:
            _BF16_FASTER[key] = best_of(False) >= min_speedup * best_of(True)
        except RuntimeError:  # no bf16 kernels in this build
            _BF16_FASTER[key] = False
    return _BF16_FASTER[key]
