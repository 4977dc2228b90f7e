"""numba, where it imports: loops compiled on first use (and cached on disk) for the CPU's hot spots
that numpy or torch can only do in many passes (the decode's sine, grid and triangle locates; in
the mesh bake the UV rasteriser, texel frames, reused ray hits, the normals and stores, the seam
dilation). Each caller keeps a plain numpy or torch path: the
reference its tests compare with, and the fallback where numba has no wheel."""

from __future__ import annotations

import functools
import types
from collections.abc import Callable


@functools.cache
def compiled(function: Callable, fastmath: frozenset[str] = frozenset(),
             helpers: tuple[Callable, ...] = (), inline: bool = False) -> Callable | None:
    """numba.njit(function) without the GIL, cached on disk (beside the module, else in the user's
    cache folder; where neither is writable, compiled anew in each process); None where numba does
    not import.
    fastmath: LLVM's flags (e.g. {"contract"} for fused multiply-adds). helpers: plain functions
    `function` calls by their global names, compiled too and seen by it in their place, inlined
    (numba's inline="always": a call LLVM is left to inline is not, and costs 8x the span loop's
    work)."""
    try:
        import numba
    except ImportError:
        return None
    if helpers:
        scope = {**function.__globals__, **{helper.__name__: compiled(helper, fastmath, inline=True)
                                            for helper in helpers}}
        function = types.FunctionType(function.__code__, scope, function.__name__, function.__defaults__)
    options = dict(fastmath=set(fastmath), nogil=True, inline="always" if inline else "never")
    try:
        return numba.njit(function, cache=True, **options)
    except RuntimeError:  # no writable place for the cache (read-only install and home): compile each run
        return numba.njit(function, **options)
