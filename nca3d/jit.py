"""numba, where it imports: loops compiled on first use (and cached on disk) for the CPU's hot spots
that numpy can only do in many passes (the decode's sine, the UV rasteriser's scoring). Each
caller keeps a plain numpy path: the reference its tests compare with, and the fallback where
numba has no wheel."""

from __future__ import annotations

import functools
from collections.abc import Callable


@functools.cache
def compiled(function: Callable, fastmath: frozenset[str] = frozenset()) -> Callable | None:
    """numba.njit(function) without the GIL, cached on disk; None where numba does not import.
    fastmath: LLVM's flags (e.g. {"contract"} for fused multiply-adds)."""
    try:
        import numba
    except ImportError:
        return None
    return numba.njit(function, fastmath=set(fastmath), nogil=True, cache=True)
