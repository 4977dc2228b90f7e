"""nca3d.jit: numba's compile of plain loops, cached on disk where it can be."""

import numpy as np

from nca3d import jit


def test_a_loop_without_a_writable_cache_place_still_compiles():
    """numba refuses to cache a function it cannot find a cache folder for (here: one defined
    from a string, as for an install and home that are both read-only); compiled() then compiles
    it without a cache instead of failing."""
    scope: dict = {}
    exec("def doubled(values):\n    for i in range(values.size):\n        values[i] *= 2\n", scope)
    kernel = jit.compiled(scope["doubled"])
    values = np.arange(5, dtype=np.float32)
    kernel(values)
    assert values.tolist() == [0, 2, 4, 6, 8]
    assert not kernel._cache.__class__.__name__.endswith("FunctionCache")  # the uncached dispatcher


def test_helpers_are_compiled_and_seen_by_the_loop():
    scope: dict = {"np": np}
    exec("def twice(x):\n    return x * 2\n\ndef apply(values):\n    for i in range(values.size):\n"
         "        values[i] = twice(values[i])\n", scope)
    kernel = jit.compiled(scope["apply"], helpers=(scope["twice"],))
    values = np.ones(3)
    kernel(values)
    assert values.tolist() == [2.0, 2.0, 2.0]
