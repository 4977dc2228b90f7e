"""nca3d.device: CPU allocations kept for speed, handed back when the machine runs short of memory."""

import os
import sys

import pytest
import torch

from nca3d import device

GLIBC = sys.platform.startswith("linux") and hasattr(device._libc(), "malloc_trim")


def _rss() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not GLIBC, reason="glibc's malloc_trim")
def test_kept_allocations_go_back_only_when_memory_is_short(monkeypatch):
    """Freed blocks under the kept-allocation threshold stay in the process (the speed they buy)
    while memory is plentiful, and return to the system once available memory is short."""
    assert device.keep_cpu_allocations()
    blocks = [torch.ones(1 << 24) for _ in range(8)]  # 8 x 64 MiB, each written
    del blocks
    kept = _rss()
    monkeypatch.setattr(device, "available_memory", lambda: (90, 100))  # plenty
    assert not device.release_kept_allocations()
    assert _rss() > kept - (64 << 20)
    monkeypatch.setattr(device, "available_memory", lambda: (10, 100))  # short: under a quarter
    assert device.release_kept_allocations()
    assert _rss() < kept - (400 << 20)
