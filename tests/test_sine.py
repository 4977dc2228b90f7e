import math
import sys

import numpy as np
import pytest
import torch

from nca3d import sine


def _error(values: np.ndarray) -> float:
    """Largest |sine_(x) - sin(x)| against the float64 sine of the same float32 inputs."""
    result = sine.sine_(torch.from_numpy(values.copy())).numpy()
    return float(np.abs(result.astype(np.float64) - np.sin(values.astype(np.float64))).max())


def test_the_sine_is_within_its_bound_over_its_range():
    """Dense near the reduction's seams (multiples of pi/2) and spread over +-ERROR_RANGE."""
    rng = np.random.default_rng(0)
    seams = (np.arange(-64, 65)[:, None] * (math.pi / 2) + np.linspace(-1e-3, 1e-3, 41)[None]).ravel()
    spread = rng.uniform(-sine.ERROR_RANGE, sine.ERROR_RANGE, 1 << 18)
    small = rng.standard_normal(1 << 16) * 4
    for values in (seams, spread, small):
        assert _error(values.astype(np.float32)) < sine.MAX_ERROR


def test_the_bound_would_catch_a_wrong_sine():
    """A polynomial with its last term dropped, or a cosine, is far outside MAX_ERROR."""
    values = np.linspace(-20, 20, 4001, dtype=np.float32)
    truncated = values - np.float32(math.pi) * np.round(values / math.pi)
    r2 = truncated * truncated
    short = truncated * (1 - r2 / 6 + r2 * r2 / 120 - r2 ** 3 / 5040 + r2 ** 4 / 362880)
    exact = np.sin(values.astype(np.float64))
    assert np.abs(np.abs(short) - np.abs(exact)).max() > sine.MAX_ERROR
    assert np.abs(np.cos(values) - exact).max() > sine.MAX_ERROR


@pytest.mark.parametrize("special", [np.nan, np.inf, -np.inf, 3e5, -1e30])
def test_values_outside_the_reduction_take_libms_sine(special):
    """One value beyond the reduced range sends the whole array through libm: NaN stays NaN, and
    huge arguments stay within [-1, 1] (the polynomial would not)."""
    values = np.array([0.5, special, -2.0], dtype=np.float32)
    with np.errstate(invalid="ignore"):
        result = sine.sine_(torch.from_numpy(values.copy())).numpy()
        expected = np.sin(values)
    assert np.allclose(result[[0, 2]], expected[[0, 2]], atol=1e-6)
    if np.isfinite(special):
        assert abs(result[1] - np.sin(np.float64(values[1]))) < 1e-6
    else:
        assert np.isnan(result[1])


def test_in_place_on_a_2d_tensor_and_numpys_sine_without_numba():
    """The decode's blocks are (rows, width) tensors; where numba does not import, numpy's sine
    gives the same values."""
    from nca3d import jit

    h = torch.randn(37, 32) * 30
    expected = torch.sin(h.double())
    out = sine.sine_(h)
    assert out is h and (h.double() - expected).abs().max() < sine.MAX_ERROR
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setitem(sys.modules, "numba", None)  # `import numba` now raises ImportError
            jit.compiled.cache_clear()
            assert jit.compiled(sine._polynomial_sine) is None
            fallback = torch.randn(5, 8) * 30
            expected = torch.sin(fallback.double())
            sine.sine_(fallback)
            assert (fallback.double() - expected).abs().max() < 1e-6
    finally:
        jit.compiled.cache_clear()
    assert jit.compiled(sine._polynomial_sine) is not None
