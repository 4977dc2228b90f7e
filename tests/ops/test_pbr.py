"""normal_height_agreement on height fields whose normals are known analytically."""

from __future__ import annotations

import numpy as np

from nca3d.ops.pbr import normal_height_agreement, normals_from_height


def sines(size: int = 128, seed: int = 0):
    """A periodic height (H, W) made of sines, with its exact derivatives per texel (y up)."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0:size, 0:size].astype(np.float64)
    x, y = cols, -rows  # y up the image
    height, dx, dy = (np.zeros((size, size)) for _ in range(3))
    for kx, ky in rng.integers(1, 4, (5, 2)):
        a, phase = rng.uniform(0.5, 1.0), rng.uniform(0, 2 * np.pi)
        wx, wy = 2 * np.pi * kx / size, 2 * np.pi * ky / size
        height += a * np.sin(wx * x + wy * y + phase)
        dx += a * wx * np.cos(wx * x + wy * y + phase)
        dy += a * wy * np.cos(wx * x + wy * y + phase)
    return height, dx, dy


def encode(nx, ny):
    n = np.stack([nx, ny, np.ones_like(nx)], axis=-1)
    return 0.5 + 0.5 * n / np.linalg.norm(n, axis=-1, keepdims=True)


def test_exact_normals_agree_and_their_strength_is_found():
    height, dx, dy = sines()
    for strength in (3.0, 10.0):
        result = normal_height_agreement(encode(-strength * dx, -strength * dy), height / 7.0)  # any height units
        assert result["mean_angle_deg"] < 0.5 and result["slope_correlation"] > 0.999
        assert abs(result["strength"] - 7.0 * strength) < 0.01 * 7.0 * strength


def test_wrong_normals_disagree():
    height, dx, dy = sines()
    flipped = normal_height_agreement(encode(-5 * dx, 5 * dy), height)  # DirectX green
    other = normal_height_agreement(encode(*(-5 * d for d in sines(seed=1)[1:])), height)  # another surface
    inverted = normal_height_agreement(encode(5 * dx, 5 * dy), height)  # height upside down
    for result in (flipped, other):
        assert result["mean_angle_deg"] > 10 and abs(result["slope_correlation"]) < 0.5
    assert inverted["strength"] < 0 and inverted["slope_correlation"] < -0.99


def test_normals_from_height_round_trip():
    height, _, _ = sines(seed=2)
    normal = normals_from_height(height, 4.0)
    assert normal.dtype == np.float32 and normal.shape == (128, 128, 3)
    result = normal_height_agreement(normal, height[..., None])
    assert result["mean_angle_deg"] < 0.01 and abs(result["strength"] - 4.0) < 1e-3
