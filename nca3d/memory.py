"""Memory sizes: what this machine has free, and byte counts in human units."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def human_bytes(nbytes: float) -> str:
    """1536 -> '1.5 KiB'."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(nbytes) < 1024 or unit == "PiB":
            return f"{nbytes:.0f} {unit}" if unit == "B" else f"{nbytes:.1f} {unit}"
        nbytes /= 1024.0
    return f"{nbytes:.1f} PiB"


def available_memory() -> tuple[int | None, int | None]:
    """(available, total) physical memory in bytes for this process, None where unknown.

    Available is MemAvailable from /proc/meminfo (free + reclaimable cache), else the free pages
    from sysconf, capped by a cgroup (container) limit minus its usage when one is set.
    """
    available = total = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                key, _, rest = line.partition(":")
                if key in ("MemAvailable", "MemTotal"):
                    value = int(rest.split()[0]) * 1024
                    if key == "MemAvailable":
                        available = value
                    else:
                        total = value
    except (OSError, ValueError, IndexError):
        pass
    with contextlib.suppress(ValueError, OSError, AttributeError):
        page = os.sysconf("SC_PAGE_SIZE")
        if total is None:
            total = os.sysconf("SC_PHYS_PAGES") * page
        if available is None:
            available = os.sysconf("SC_AVPHYS_PAGES") * page
    for limit_file, usage_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                    "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            limit_text = Path(limit_file).read_text().strip()
            if limit_text == "max":
                continue
            limit, usage = int(limit_text), int(Path(usage_file).read_text().strip())
        except (OSError, ValueError):
            continue
        if limit >= 1 << 60:  # cgroup v1 "unlimited"
            continue
        total = min(total, limit) if total else limit
        room = max(0, limit - usage)
        available = min(available, room) if available is not None else room
    return available, total
