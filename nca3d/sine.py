"""sin in place on float32 CPU tensors: the activation of the fast LPPN decode (core.lppn.SIREN.fast)
and the harmonics of the compiled grid locate (lattices.grid).

The sine is reduced by multiples of pi (pi split in three parts, Cody-Waite) to r in [-pi/2, pi/2],
then an odd Taylor polynomial of degree 11 in r (truncation at most (pi/2)^13 / 13! = 6e-8), the
sign flipped on odd multiples. numba compiles it to one SIMD loop: about 3x numpy's float32 sine
here (itself about 4x torch.sin's). Within MAX_ERROR of the float64 sine for |x| <= ERROR_RANGE
(tested); SIREN pre-activations stay far inside that range. Where numba does not import (a platform
without its wheels), numpy's sine does the same in place.
"""

from __future__ import annotations

import math

import numpy as np
from torch import Tensor

from .jit import compiled

MAX_ERROR = 5e-7  # absolute, against the float64 sine of the float32 input, for |x| <= ERROR_RANGE
ERROR_RANGE = 1e4

# float32 constants (numba compiles module globals in as constants)
_INV_PI = np.float32(1 / math.pi)
_PI_HI = np.float32(3.140625)  # 8 significant bits: k * _PI_HI is exact in float32 for |k| < 2**16
_PI_MID = np.float32(0.0009670257568359375)  # the next 12 bits
_PI_LO = np.float32(math.pi - 3.140625 - 0.0009670257568359375)
_C3, _C5, _C7, _C9, _C11 = (np.float32(c) for c in (-1 / 6, 1 / 120, -1 / 5040, 1 / 362880, -1 / 39916800))
_REDUCED = np.float32(1e5)  # beyond this libm's sine (k * _PI_HI exact needs |x| < 2e5)
_HALF, _ONE, _FOUR = np.float32(0.5), np.float32(1.0), np.float32(4.0)


def sine_(h: Tensor) -> Tensor:
    """sin in place on a contiguous float32 CPU tensor (numba's polynomial sine, else numpy's);
    returns h."""
    values = h.numpy().reshape(-1)
    kernel = compiled(_polynomial_sine, frozenset({"contract", "nsz", "arcp"}))
    if kernel is None:
        np.sin(values, out=values)
    else:
        kernel(values)
    return h


def _polynomial_sine(values: np.ndarray) -> None:
    """The loops numba compiles: float32 throughout, with no reassociation, so the reduction stays
    exact. An array with any |x| beyond _REDUCED (or a NaN) takes libm's sine instead."""
    outside = False
    for index in range(values.size):
        outside |= not abs(values[index]) <= _REDUCED
    if outside:
        for index in range(values.size):
            values[index] = np.sin(values[index])
        return
    for index in range(values.size):
        x = values[index]
        k = np.floor(x * _INV_PI + _HALF)  # the nearest multiple of pi
        r = ((x - k * _PI_HI) - k * _PI_MID) - k * _PI_LO
        r2 = r * r
        s = r + r * r2 * (_C3 + r2 * (_C5 + r2 * (_C7 + r2 * (_C9 + r2 * _C11))))
        parity = k * _HALF - np.floor(k * _HALF)  # 0 for even k, 0.5 for odd
        values[index] = s * (_ONE - _FOUR * parity)
