"""normal_height_agreement on height fields whose normals are known analytically."""

from __future__ import annotations

import numpy as np

from nca3d.ops.pbr import (
    DERIVED_RELIEF,
    ambient_occlusion,
    derive_missing_maps,
    height_from_normal,
    normal_height_agreement,
    normals_from_height,
)


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


def test_frankot_chellappa_recovers_the_height_of_a_normal_map():
    height, _, _ = sines()
    recovered, strength = height_from_normal(normals_from_height(height, 5.0))
    assert recovered.min() == 0.0 and recovered.max() == 1.0
    assert np.corrcoef(recovered.ravel(), height.ravel())[0, 1] > 0.999
    span = height.max() - height.min()
    assert abs(strength - 5.0 * span) < 0.02 * 5.0 * span  # normals_from_height(recovered, strength) ≈ the input
    assert normal_height_agreement(normals_from_height(height, 5.0), recovered)["mean_angle_deg"] < 0.5


def test_a_height_from_an_albedo_gives_a_normal_that_matches_its_gradient():
    """--derive-pbr from one photo: bright bumps become height, and the derived normal is the
    normal of that height (agreement ~0 degrees), tilted as much as DERIVED_RELIEF says."""
    height, _, _ = sines(seed=3)
    albedo = np.repeat(((height - height.min()) / np.ptp(height))[..., None], 3, axis=2) * 0.6 + 0.2
    maps, notes = derive_missing_maps({"albedo": albedo.astype(np.float32)})
    assert sorted(maps) == ["albedo", "ao", "height", "normal", "roughness"] and len(notes) == 4
    assert np.corrcoef(maps["height"][..., 0].ravel(), height.ravel())[0, 1] > 0.9  # the band-pass drops the slowest waves
    agreement = normal_height_agreement(maps["normal"], maps["height"])
    assert agreement["mean_angle_deg"] < 0.5 and agreement["slope_correlation"] > 0.999
    tilt = np.linalg.norm(maps["normal"][..., :2] * 2 - 1, axis=-1).mean()
    assert abs(tilt - DERIVED_RELIEF) < 0.01
    for kind in ("roughness", "ao"):
        assert maps[kind].shape == (128, 128, 1) and maps[kind].dtype == np.float32
    assert 0.35 <= maps["roughness"].min() and maps["roughness"].max() <= 0.95


def test_dark_is_high_derives_the_inverted_relief_for_light_grout_in_recesses():
    height, _, _ = sines(seed=4)
    albedo = np.repeat((1.0 - (height - height.min()) / np.ptp(height))[..., None], 3, axis=2).astype(np.float32)
    bright, notes = derive_missing_maps({"albedo": albedo})  # light recesses read as high: the relief inverted
    dark, dark_notes = derive_missing_maps({"albedo": albedo}, dark_is_high=True)
    assert np.corrcoef(bright["height"][..., 0].ravel(), height.ravel())[0, 1] < -0.9
    assert np.corrcoef(dark["height"][..., 0].ravel(), height.ravel())[0, 1] > 0.9
    assert "bright = high; --dark-is-high" in notes[0] and "(dark = high)" in dark_notes[0]
    agreement = normal_height_agreement(dark["normal"], dark["height"])
    assert agreement["mean_angle_deg"] < 0.5 and agreement["strength"] > 0


def test_horizon_ao_darkens_a_pit_and_leaves_flat_ground_open():
    height = np.ones((64, 64))
    height[28:36, 28:36] = 0.0  # a square pit
    ao = ambient_occlusion(height, strength=4.0)
    assert ao[0, 0] == 1.0 and ao[26, 26] == 1.0  # the rim looks down into the pit: open
    assert ao[32, 32] < 0.5 and ao[28, 28] < ao[32, 32]  # its corner sees less sky than its middle
    assert np.all(ambient_occlusion(np.zeros((16, 16)), 4.0) == 1.0)


def test_derive_keeps_the_maps_given_and_uses_the_normal_for_the_height():
    height, _, _ = sines(seed=5)
    normal = normals_from_height(height, 6.0)
    roughness = np.full((128, 128, 1), 0.4, np.float32)
    maps, notes = derive_missing_maps({"albedo": np.full((128, 128, 3), 0.5, np.float32), "normal": normal,
                                       "roughness": roughness})
    assert maps["normal"] is normal and maps["roughness"] is roughness
    assert notes[0].startswith("height: integrated from the normal map") and len(notes) == 2
    assert np.corrcoef(maps["height"][..., 0].ravel(), height.ravel())[0, 1] > 0.999


def test_derived_ao_follows_the_normal_when_the_height_is_inverted():
    """A set whose height map is stored inverted (high = recess) against its normal map: the AO
    comes from the relief the normal shows, as if the height had the normal's sign."""
    height, _, _ = sines(seed=3)
    normal = normals_from_height(height, 6.0)
    albedo = np.full((128, 128, 3), 0.5, np.float32)
    agreeing, _ = derive_missing_maps({"albedo": albedo, "normal": normal, "height": height[..., None]})
    inverted, _ = derive_missing_maps({"albedo": albedo, "normal": normal, "height": -height[..., None]})
    assert np.allclose(inverted["ao"], agreeing["ao"], atol=1e-5)
    assert agreeing["ao"].std() > 0.01  # the AO has structure: the comparison means something
