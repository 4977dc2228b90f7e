"""Tests for nca3d.render.preview on a textured unit sphere seen from the fixed 3/4 view."""

from __future__ import annotations

import math

import numpy as np
import pytest

from nca3d.errors import NCA3DError
from nca3d.io.mesh import SurfaceMesh
from nca3d.render import preview
from nca3d.render.preview import (
    linear_to_srgb,
    render_pbr_preview,
    sample_bilinear,
    srgb_to_linear,
)
from tests.conftest import requires_raycaster
from tests.io.test_export import uv_sphere

pytestmark = requires_raycaster

SIZE = 96
BACKGROUND = (0.0, 0.0, 0.0)


@pytest.fixture(scope="module")
def sphere():
    return uv_sphere(32, 64)


def checker(height=64, width=128, squares=8) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width]
    on = ((x * squares // width + y * squares // 2 // height) % 2).astype(np.float32)[..., None]
    return on * np.array([0.9, 0.8, 0.3]) + (1 - on) * np.array([0.2, 0.3, 0.8])


def grey(value=0.6):
    return np.full((4, 4, 3), value)


def luminance(image):
    return image @ np.array([0.2126, 0.7152, 0.0722])


def test_silhouette_matches_the_projected_sphere(sphere):
    image = render_pbr_preview(sphere, checker(), size=SIZE, background=BACKGROUND)
    assert image.shape == (SIZE, SIZE, 3) and image.dtype == np.float32
    assert image.min() >= 0 and image.max() <= 1
    coverage = luminance(image) > 0.0  # ambient light keeps every surface pixel above black
    # The camera frames the unit sphere's bounding sphere: its outline is a centred disc.
    half_fov = math.radians(preview.FOV_DEG) / 2
    distance = preview.MARGIN / math.sin(half_fov)
    radius_px = math.tan(math.asin(1 / distance)) / math.tan(half_fov) * SIZE / 2
    y, x = np.mgrid[0:SIZE, 0:SIZE] + 0.5
    disc = np.hypot(x - SIZE / 2, y - SIZE / 2) < radius_px
    iou = (coverage & disc).sum() / (coverage | disc).sum()
    assert iou > 0.97
    edge = np.abs(np.hypot(x - SIZE / 2, y - SIZE / 2) - radius_px) < 1.5
    assert (coverage == disc)[~edge].all()


def test_brighter_side_faces_the_key_light(sphere):
    image = luminance(srgb_to_linear(render_pbr_preview(sphere, grey(), roughness=np.ones((2, 2)), size=SIZE)))
    (right, up, _towards_viewer), _ = preview.KEY_LIGHT
    assert right < 0 < up  # the key light is up and to the left in the image
    half = SIZE // 2
    upper_left, lower_right = image[:half, :half], image[half:, half:]
    mask = np.hypot(*np.mgrid[-half:0, -half:0]) < 0.6 * half  # well inside the silhouette
    assert upper_left[mask].mean() > 2 * lower_right[mask[::-1, ::-1]].mean()


def test_roughness_changes_the_highlight(sphere):
    albedo = grey(0.15)
    shiny = luminance(render_pbr_preview(sphere, albedo, roughness=np.full((2, 2), 0.1), size=SIZE))
    matte = luminance(render_pbr_preview(sphere, albedo, roughness=np.full((2, 2), 0.9), size=SIZE))
    assert shiny.max() > matte.max() + 0.2
    # A sharp highlight: a few very bright pixels, and darker than the matte surface elsewhere.
    assert 0 < (shiny > 0.8).sum() < 0.02 * SIZE * SIZE and (matte > 0.8).sum() == 0
    assert np.median(shiny[shiny > 0.05]) < np.median(matte[matte > 0.05])


def test_texture_orientation_and_ao(sphere):
    top_red = np.zeros((64, 64, 3))
    top_red[:32] = (1, 0, 0)  # image row 0 is v = 1: the north (+Y) half
    top_red[32:] = (0, 0, 1)
    image = render_pbr_preview(sphere, top_red, size=SIZE)
    north, south = image[int(0.3 * SIZE), SIZE // 2], image[int(0.8 * SIZE), SIZE // 2]
    assert north[0] > 3 * north[2] and south[2] > 3 * south[0]
    lit = render_pbr_preview(sphere, grey(), size=SIZE)
    occluded = render_pbr_preview(sphere, grey(), ao=np.zeros((2, 2)), size=SIZE)
    assert (occluded <= lit + 1e-6).all() and occluded.mean() < lit.mean() - 0.01


def test_object_space_normal_map(sphere):
    height, width = 64, 128
    rows, cols = np.mgrid[0:height, 0:width] + 0.5
    theta, phi = rows / height * np.pi, cols / width * 2 * np.pi  # texel centre: v = 1 - rows / height
    radial = np.stack([-np.sin(theta) * np.sin(phi), np.cos(theta), -np.sin(theta) * np.cos(phi)], -1)
    smooth = render_pbr_preview(sphere, grey(), size=SIZE)
    mapped = render_pbr_preview(sphere, grey(), normal_object=radial, size=SIZE)
    assert np.abs(mapped - smooth).mean() < 0.01  # the sphere's own normals change nothing
    up = render_pbr_preview(sphere, grey(), normal_object=np.tile([0.0, 1.0, 0.0], (2, 2, 1)), size=SIZE)
    assert np.abs(up - smooth).mean() > 0.05


def test_double_sided(sphere):
    inverted = SurfaceMesh(sphere.vertices, sphere.faces[:, ::-1], sphere.uv)
    np.testing.assert_allclose(render_pbr_preview(inverted, checker(), size=48),
                               render_pbr_preview(sphere, checker(), size=48), atol=1e-5)


def test_colour_helpers():
    values = np.linspace(0, 1, 101, dtype=np.float32)
    np.testing.assert_allclose(linear_to_srgb(srgb_to_linear(values)), values, atol=1e-5)
    assert abs(srgb_to_linear(np.float32(0.5)) - 0.214) < 1e-3
    texture = np.arange(12, dtype=np.float32).reshape(2, 2, 3)
    centre = sample_bilinear(texture, np.array([[0.5, 0.5]], np.float32))
    np.testing.assert_allclose(centre, texture.reshape(4, 3).mean(0, keepdims=True))
    np.testing.assert_allclose(sample_bilinear(texture, np.array([[0.25, 0.75]], np.float32)), texture[:1, 0])


def test_bad_inputs(sphere):
    with pytest.raises(NCA3DError, match="no UV"):
        render_pbr_preview(SurfaceMesh(sphere.vertices, sphere.faces), grey())
    with pytest.raises(ValueError, match="uv"):
        render_pbr_preview(SurfaceMesh(sphere.vertices, sphere.faces, sphere.uv[:-1]), grey())
    bad_calls = [
        {"albedo": np.zeros((4, 4))},
        {"albedo": np.full((4, 4, 3), np.nan)},
        {"albedo": grey(), "normal_object": np.zeros((4, 4, 2))},
        {"albedo": grey(), "roughness": np.zeros((4, 4, 3))},
        {"albedo": grey(), "ao": np.zeros((0, 4))},
        {"albedo": grey(), "size": 0},
        {"albedo": grey(), "size": 2.5},
        {"albedo": grey(), "background": (1, 2, 3)},
    ]
    for kwargs in bad_calls:
        with pytest.raises(ValueError):
            render_pbr_preview(sphere, **kwargs)
