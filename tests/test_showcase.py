"""`nca3d render` / `nca3d view`: offscreen pyvista renders of every domain, turntables, the
normal map on mirrored UV islands, the view's per-tick update, the no-display refusal, and the
damage experiment (healing shown on a model built to heal; mechanics on a random one)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from nca3d import showcase
from nca3d.cli import main
from nca3d.errors import NCA3DError
from nca3d.io.model_file import save_model
from nca3d.core.model import Model, ModelConfig
from nca3d.showcase import RenderConfig, render
from tests.conftest import optional_import, random_model

SMALL = {"channels": 8, "hidden": 16}
GRIDS = {"2d": {"grid_size": [24, 24]}, "volume": {"grid_size": [12, 12, 12]}, "mesh": {"icosphere_frequency": 8}}
FAST = {"size": 96, "steps": 8, "map_size": 128, "cells": 1500, "volume_res": 32}


def needs_pyvista():
    return optional_import("pyvista", "rendering needs pyvista (pip install 'nca3d[render]')")


@pytest.fixture(scope="module")
def stats():
    from nca3d.train.quality import TextureStatistics

    optional_import("plenoptic", "the damage figures need plenoptic (pip install 'nca3d[bench]')")
    return TextureStatistics()


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


# --------------------------------------------------------------------------- render


@pytest.mark.parametrize("domain,outputs,mesh", [("2d", "rgb", ""), ("2d", "pbr", ""), ("mesh", "pbr", ""),
                                                 ("mesh", "rgb", "torus"), ("volume", "rgba", ""),
                                                 ("volume", "rgba", "capsule")])
def test_render_each_domain_writes_a_real_image(tmp_path, domain, outputs, mesh):
    needs_pyvista()
    out = tmp_path / "shot.png"
    record = render(RenderConfig(model=saved(tmp_path, domain, outputs), out=str(out), mesh=mesh, **FAST))
    assert record["written"] == [str(out)] and record["domain"] == domain
    image = np.asarray(Image.open(out))
    assert image.shape == (FAST["size"], FAST["size"], 3)
    assert not_flat(image)
    assert [p.name for p in tmp_path.iterdir() if p.suffix == ".png"] == ["shot.png"]  # no temporaries left
    if domain != "2d":  # an object over the background: the centre differs from the corners
        centre = image[40:56, 40:56].reshape(-1, 3).mean(0)
        corner = image[:8, :8].reshape(-1, 3).mean(0)
        assert np.abs(centre - corner).max() > 15


def test_unlit_tile_is_the_albedo_tiled_2x2(tmp_path):
    needs_pyvista()
    model = showcase.load_showcase_model(saved(tmp_path, "2d", "rgb"))
    scene = showcase.TileScene(model, map_size=32)  # 2 x 2 tiles = 64 px: one texel per pixel
    scene.advance(6)
    image = showcase.render_frames(scene, 64)[0].astype(float)
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
    mirrored = showcase.mirrored_texels(mesh, frames.sign, size, 4)

    def shot(normals, tangents, normal_map):
        plotter = showcase.new_plotter(96)
        poly = showcase._polydata(mesh.vertices, mesh.faces, mesh.uv, normals, tangents)
        actor = plotter.add_mesh(poly, pbr=True, metallic=0.0, roughness=0.5, color="white", smooth_shading=True)
        if normal_map is not None:
            actor.GetProperty().SetNormalTexture(showcase._texture(normal_map))
        showcase.add_lights(plotter)
        showcase.orbit_camera(plotter, (0, 0, 0), 1.0)
        image = showcase.screenshot(plotter, 96).astype(int)
        plotter.close()
        return image

    reference = shot(tilted(frames.normal), frames.tangent, None)
    display = encoded.copy()
    display[mirrored, 0] = 255 - display[mirrored, 0]
    fixed = shot(frames.normal, showcase.display_tangents(frames, mesh.faces), display)
    naive = shot(frames.normal, frames.tangent, encoded)
    assert np.abs(fixed - reference).mean() < 1.0
    assert np.abs(naive - reference).mean() > 2.0


@pytest.mark.parametrize("suffix", [".gif", ".png"])
def test_turntable(tmp_path, suffix):
    needs_pyvista()
    out = tmp_path / f"spin{suffix}"
    record = render(RenderConfig(model=saved(tmp_path, "volume"), out=str(out), turntable=3, **FAST))
    if suffix == ".gif":
        assert record["written"] == [str(out)]
        gif = Image.open(out)
        assert gif.n_frames == 3
        frames = []
        for index in range(3):
            gif.seek(index)
            frames.append(np.asarray(gif.convert("RGB")).astype(int))
    else:
        names = [f"spin.{k:04d}.png" for k in (1, 2, 3)]
        assert [Path(p).name for p in record["written"]] == names
        assert sorted(p.name for p in tmp_path.glob("*.png")) == names
        frames = [np.asarray(Image.open(tmp_path / n)).astype(int) for n in names]
    assert all(not_flat(f.astype(np.uint8)) for f in frames)
    assert np.abs(frames[0] - frames[1]).mean() > 1.0  # it turns


def test_tile_turntable_orbits(tmp_path):
    needs_pyvista()
    record = render(RenderConfig(model=saved(tmp_path, "2d", "pbr"), out=str(tmp_path / "t.png"), turntable=2,
                                 **FAST))
    a, b = (np.asarray(Image.open(p)).astype(int) for p in record["written"])
    assert np.abs(a - b).mean() > 1.0


def test_settings_are_checked(tmp_path):
    for options, message in (({"out": "x.jpg"}, "must end in .png"), ({"out": "x.gif"}, "with --turntable"),
                             ({"damage": True, "turntable": 4}, "not both"), ({"size": 8}, "out of range"),
                             ({"steps": -1}, ">= 0")):
        with pytest.raises(NCA3DError, match=message):
            RenderConfig(**{"model": "m", "out": "x.png", **options})


def test_2d_model_refuses_a_mesh(tmp_path):
    needs_pyvista()
    with pytest.raises(NCA3DError, match="tile"):
        render(RenderConfig(model=saved(tmp_path, "2d", "rgb"), out=str(tmp_path / "x.png"), mesh="rock", **FAST))
    assert not list(tmp_path.glob("*.png"))


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
        showcase.write_frames(frames, tmp_path / "f.png", turntable=True)
    assert list(tmp_path.iterdir()) == []


def test_cli_render(tmp_path, capsys):
    needs_pyvista()
    out = tmp_path / "c.png"
    assert main(["render", "--model", saved(tmp_path, "2d", "rgb"), "--out", str(out), "--size", "64",
                 "--steps", "4", "--map-size", "64", "--progress", "none"]) == 0
    record = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert record["written"] == [str(out)] and out.is_file()


# --------------------------------------------------------------------------- view


def test_view_tick_updates_what_is_shown(tmp_path):
    """The view's timer work, headless: steps run, the texture / volume is decoded again."""
    needs_pyvista()
    for domain, outputs in (("mesh", "pbr"), ("volume", "rgba"), ("2d", "pbr")):
        model = showcase.load_showcase_model(saved(tmp_path, domain, outputs))
        scene = showcase.make_scene(model, map_size=64, cells=1500, volume_res=24)
        plotter = showcase.new_plotter(64)
        scene.add_to(plotter)
        scene.place_camera(plotter)

        def shown(scene=scene):
            if isinstance(scene, showcase.VolumeScene):
                return np.array(scene.grid.point_data["rgba"])
            texture = scene.actor.GetProperty().GetTexture("albedoTex")
            return showcase._pyvista().Texture(texture).to_array().copy()

        before = shown()
        assert showcase.view_tick(scene, plotter, steps=3) == 3
        assert showcase.view_tick(scene, plotter, steps=3) == 6
        assert not np.array_equal(before, shown()), domain
        erased = scene.damage()
        assert erased > 0
        flat = scene.state.reshape(-1, scene.state.shape[-1])
        assert (flat.abs().sum(1) == 0).sum() >= erased
        scene.reset()
        assert scene.steps_done == 0 and float(scene.state.abs().sum()) == 0.0
        plotter.close()


def test_display_detection():
    assert showcase.display_available("linux", {"DISPLAY": ":0"})
    assert showcase.display_available("linux", {"WAYLAND_DISPLAY": "wayland-0"})
    assert not showcase.display_available("linux", {})
    assert not showcase.display_available("linux", {"DISPLAY": ""})
    assert showcase.display_available("darwin", {}) and showcase.display_available("win32", {})
    with pytest.raises(NCA3DError, match="no display"):
        showcase.check_display("linux", {})


@pytest.mark.skipif(sys.platform in ("darwin", "win32"), reason="a display is assumed there")
def test_view_refuses_without_display(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    result = subprocess.run([sys.executable, "-m", "nca3d", "view", "--model", "volume_default"], env=env, check=False,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("nca3d: error: no display"), result.stderr
    assert "nca3d render" in lines[0]


# --------------------------------------------------------------------------- damage


def relaxing_model(domain: str, target: float = 0.6, rate: float = 0.5, **config) -> Model:
    """A model that heals by construction: every cell relaxes to a fixed state t (update = -rate (s - t),
    built from the identity perception with relu(s - t) and relu(t - s) hidden units), and the
    random LPPN decodes t as a fine periodic pattern."""
    channels = 6
    model = Model(ModelConfig(domain=domain, channels=channels, hidden=2 * channels, **config))
    goal = torch.linspace(-target, target, channels)
    with torch.no_grad():
        first, last = model.nca.perceive_to_hidden, model.nca.hidden_to_update
        first.weight.zero_()
        last.weight.zero_()
        for c in range(channels):  # the identity filter comes first in every lattice's perception
            first.weight[2 * c, c], first.bias[2 * c] = 1.0, -goal[c]
            first.weight[2 * c + 1, c], first.bias[2 * c + 1] = -1.0, goal[c]
            last.weight[c, 2 * c], last.weight[c, 2 * c + 1] = -rate, rate
    return model.eval()


@pytest.mark.parametrize("domain", ["2d", "volume", "mesh"])
def test_damage_heals_on_a_healing_model(domain, stats):
    outputs = {"2d": "rgb", "volume": "rgba", "mesh": "rgb"}[domain]
    model = relaxing_model(domain, outputs=outputs, **GRIDS[domain])
    result = showcase.damage_experiment(model, steps=40, heal_steps=40, pixels=48, stats=stats)
    f = result.figures
    assert f["erased_cells"] > 0 and 0 < f["erased_fraction"] < 0.5
    assert f["error_damaged"] > 0.05
    assert f["error_healed"] < 0.2 * f["error_damaged"]
    assert f["recovery"] > 0.8
    assert result.panel.shape == (48, 3 * 48 + 4, 3)


def test_damage_mechanics_on_a_random_model(tmp_path, stats, monkeypatch):
    """A random model need not heal; the experiment still erases, measures and draws."""
    model = random_model("2d", outputs="pbr", **SMALL, **GRIDS["2d"]).eval()
    erased_states = []
    real = showcase.erase_ball

    def spy(state, lattice, centre, radius):
        mask = real(state, lattice, centre, radius)
        erased_states.append((state.reshape(-1, state.shape[-1])[mask].clone(), mask))
        return mask

    monkeypatch.setattr(showcase, "erase_ball", spy)
    result = showcase.damage_experiment(model, steps=12, heal_steps=12, pixels=40, stats=stats)
    (values, mask), = erased_states
    assert mask.any() and float(values.abs().max()) == 0.0  # the region really is the seed state
    assert int(mask.sum()) == result.figures["erased_cells"]
    for key in ("error_damaged", "error_healed", "error_intact"):
        assert np.isfinite(result.figures[key]) and result.figures[key] >= 0
    panel = result.panel
    assert panel.shape == (40, 124, 3) and panel.dtype == np.uint8
    before, after = panel[:, :40].astype(int), panel[:, 42:82].astype(int)
    assert np.abs(before[16:24, 16:24] - after[16:24, 16:24]).mean() > 1.0  # the hole shows
    assert np.abs(before[34:, 30:] - after[34:, 30:]).mean() < 1e-9  # far from it nothing changed (yet)


def test_render_damage_writes_panel_and_figures(tmp_path, stats, capsys):
    path = tmp_path / "heal.nca3d"
    save_model(relaxing_model("2d", outputs="rgb", **GRIDS["2d"]), path)
    out = tmp_path / "panel.png"
    assert main(["render", "--model", str(path), "--out", str(out), "--damage", "--size", "48", "--steps", "30",
                 "--progress", "none"]) == 0
    record = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert record["written"] == [str(out)]
    assert record["figures"]["error_healed"] < record["figures"]["error_damaged"]
    assert np.asarray(Image.open(out)).shape == (48, 148, 3)


def test_missing_pyvista_is_one_clear_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "pyvista", None)  # import pyvista now raises ImportError
    assert main(["render", "--model", saved(tmp_path, "2d", "rgb"), "--out", str(tmp_path / "x.png"),
                 "--progress", "none"]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "pip install 'nca3d[render]'" in error[0]
    assert not list(tmp_path.glob("*.png"))


def test_view_wiring_headless(tmp_path, monkeypatch):
    """view() with the window faked: the timer runs ticks, d damages, r restarts, space pauses."""
    needs_pyvista()
    monkeypatch.setattr(showcase, "check_display", lambda *a: None)
    real_new_plotter, real_make_scene = showcase.new_plotter, showcase.make_scene
    made = {}

    class FakeWindow:
        """An offscreen plotter standing in for the window; records keys, the timer and show()."""

        def __init__(self, size, off_screen=True, supersample=1):
            assert off_screen is False
            self.real = real_new_plotter(size, True, 1)
            self.keys, self.timer = {}, None
            made["window"] = self

        def __getattr__(self, name):
            return getattr(self.real, name)

        def add_key_event(self, key, callback):
            self.keys[key] = callback

        def add_timer_event(self, max_steps, duration, callback):
            self.timer = callback

        def show(self, title=None):
            made["title"] = title

    def make_scene(*args, **kwargs):
        made["scene"] = real_make_scene(*args, **kwargs)
        return made["scene"]

    monkeypatch.setattr(showcase, "new_plotter", FakeWindow)
    monkeypatch.setattr(showcase, "make_scene", make_scene)
    showcase.view(showcase.ViewConfig(model=saved(tmp_path, "volume"), size=64, volume_res=16, speed=3))
    window, scene = made["window"], made["scene"]
    assert made["title"].startswith("nca3d view") and set(window.keys) == {"d", "r", "space"}
    window.timer(0)
    window.timer(1)
    assert scene.steps_done == 6
    window.keys["space"]()
    window.timer(2)
    assert scene.steps_done == 6  # paused
    window.keys["space"]()
    window.keys["d"]()
    assert (scene.state.reshape(-1, scene.state.shape[-1]).abs().sum(1) == 0).any()
    window.keys["r"]()
    assert scene.steps_done == 0
    window.real.close()
