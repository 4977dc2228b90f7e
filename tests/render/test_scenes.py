"""The offscreen scenes: the unlit 2D tile is the albedo tiled 2 x 2, the normal map on mirrored UV
islands, frame sequences that appear whole or not at all; and the helpers the command tests share."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from nca3d.io.model_file import save_model
from nca3d.models import load_named_model
from nca3d.render import scenes
from tests.conftest import optional_import, random_model

SMALL = {"channels": 8, "hidden": 16}
GRIDS = {"2d": {"grid_size": [24, 24]}, "volume": {"grid_size": [12, 12, 12]}, "mesh": {"icosphere_frequency": 8}}
FAST = {"size": 96, "steps": 8, "map_size": 128, "cells": 1500, "volume_res": 32}


def needs_pyvista():
    return optional_import("pyvista", "rendering needs pyvista (pip install 'nca3d[render]')")


def saved(tmp_path: Path, domain: str, outputs: str = "", name: str = "") -> str:
    torch.manual_seed(0)
    model = random_model(domain, outputs=outputs, **SMALL, **GRIDS[domain])
    path = tmp_path / f"{name or domain + '_' + (outputs or 'default')}.nca3d"
    save_model(model, path)
    return str(path)


def not_flat(image: np.ndarray) -> bool:
    """Some contrast and many colours (random tiny models make low-contrast textures)."""
    colours = len(np.unique(image.reshape(-1, image.shape[-1]), axis=0))
    return float(image.astype(np.float32).std(axis=(0, 1)).max()) > 2.0 and colours > 100


def test_unlit_tile_is_the_albedo_tiled_2x2(tmp_path):
    needs_pyvista()
    model = load_named_model(saved(tmp_path, "2d", "rgb"))
    scene = scenes.TileScene(model, map_size=32)  # 2 x 2 tiles = 64 px: one texel per pixel
    scene.advance(6)
    image = scenes.render_frames(scene, 64)[0].astype(float)
    maps, _ = scene.baker.bake(scene.state)
    expected = np.tile(maps.arrays["albedo"], (2, 2, 1)).astype(float)
    assert np.abs(image.mean((0, 1)) - expected.mean((0, 1))).max() < 2.0  # unlit: the colours themselves

    def correlation(a, b):
        a, b = a - a.mean(), b - b.mean()
        return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))

    # the same picture (texture filtering blurs this fine random texture a little), not mirrored
    same = correlation(image, expected)
    assert same > 0.6
    assert same > correlation(image, expected[::-1]) + 0.2 and same > correlation(image, expected[:, ::-1]) + 0.2


def test_normal_map_on_mirrored_islands_matches_per_vertex_normals():
    """VTK builds the bitangent as N x T with no handedness; on xatlas' mirrored islands the display
    tangents and the red channel are flipped so that the normal-mapped render equals a render with
    the same tilted normals as per-vertex normals. Without the fix it does not."""
    needs_pyvista()
    from nca3d.ops.bake import UVRasteriser, dilate, tangent_frames, texel_frames
    from nca3d.ops.demo_meshes import load_demo_or_mesh
    from nca3d.render.maps import encode_normals

    mesh = load_demo_or_mesh("rock")
    frames = tangent_frames(mesh.vertices, mesh.faces, mesh.uv)
    assert (frames.sign < 0).any() and (frames.sign > 0).any()  # both kinds of island

    def tilted(n):
        t = n + np.array([0.7, 0.7, 0.0])
        return t / np.linalg.norm(t, axis=1, keepdims=True)

    size = 256
    rasteriser = UVRasteriser(mesh.uv, mesh.faces, size)
    encoded = np.zeros((size * size, 3), np.uint8)
    for texels in rasteriser:
        t, b, n = texel_frames(frames, mesh.faces, texels.face, texels.bary)
        o = tilted(n)
        local = np.stack([(o * t).sum(1), (o * b).sum(1), (o * n).sum(1)], 1)
        encoded[texels.index] = np.round(encode_normals(local) * 255).astype(np.uint8)
    encoded = encoded.reshape(size, size, 3)
    dilate([encoded], rasteriser.covered, 4)
    mirrored = scenes.mirrored_texels(mesh, frames.sign, size, 4)

    def shot(normals, tangents, normal_map):
        plotter = scenes.new_plotter(96)
        poly = scenes._polydata(mesh.vertices, mesh.faces, mesh.uv, normals, tangents)
        actor = plotter.add_mesh(poly, pbr=True, metallic=0.0, roughness=0.5, color="white", smooth_shading=True)
        if normal_map is not None:
            actor.GetProperty().SetNormalTexture(scenes._texture(normal_map))
        scenes.add_lights(plotter)
        scenes.orbit_camera(plotter, (0, 0, 0), 1.0)
        image = scenes.screenshot(plotter, 96).astype(int)
        plotter.close()
        return image

    reference = shot(tilted(frames.normal), frames.tangent, None)
    display = encoded.copy()
    display[mirrored, 0] = 255 - display[mirrored, 0]
    fixed = shot(frames.normal, scenes.display_tangents(frames, mesh.faces), display)
    naive = shot(frames.normal, frames.tangent, encoded)
    assert np.abs(fixed - reference).mean() < 1.0
    assert np.abs(naive - reference).mean() > 2.0


def test_failed_sequence_leaves_no_frames(tmp_path, monkeypatch):
    from nca3d.io import images

    real, calls = images.write_png, []

    def flaky(path, pixels, bits=8):
        calls.append(path)
        if len(calls) == 3:
            raise OSError("disk full")
        real(path, pixels, bits)

    monkeypatch.setattr(images, "write_png", flaky)
    frames = [np.full((8, 8, 3), k * 40, np.uint8) for k in range(4)]
    with pytest.raises(OSError):
        scenes.write_frames(frames, tmp_path / "f.png", turntable=True)
    assert list(tmp_path.iterdir()) == []
