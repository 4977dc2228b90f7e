"""`nca3d view`: the per-tick update, display detection, the no-display refusal and the wiring."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from nca3d.commands import view as view_cmd
from nca3d.errors import NCA3DError
from nca3d.models import load_named_model
from nca3d.render import scenes
from tests.render.test_scenes import needs_pyvista, saved


def test_view_tick_updates_what_is_shown(tmp_path):
    """The view's timer work, headless: steps run, the texture / volume is decoded again."""
    needs_pyvista()
    for domain, outputs in (("mesh", "pbr"), ("volume", "rgba"), ("2d", "pbr")):
        model = load_named_model(saved(tmp_path, domain, outputs))
        scene = scenes.make_scene(model, map_size=64, cells=1500, volume_res=24)
        plotter = scenes.new_plotter(64)
        scene.add_to(plotter)
        scene.place_camera(plotter)

        def shown(scene=scene):
            if isinstance(scene, scenes.VolumeScene):
                return np.array(scene.grid.point_data["rgba"])
            texture = scene.actor.GetProperty().GetTexture("albedoTex")
            return scenes.require_pyvista().Texture(texture).to_array().copy()

        before = shown()
        assert view_cmd.view_tick(scene, plotter, steps=3) == 3
        assert view_cmd.view_tick(scene, plotter, steps=3) == 6
        assert not np.array_equal(before, shown()), domain
        erased = scene.damage()
        assert erased > 0
        flat = scene.state.reshape(-1, scene.state.shape[-1])
        assert (flat.abs().sum(1) == 0).sum() >= erased
        scene.reset()
        assert scene.steps_done == 0 and float(scene.state.abs().sum()) == 0.0
        plotter.close()


def test_display_detection():
    assert view_cmd.display_available("linux", {"DISPLAY": ":0"})
    assert view_cmd.display_available("linux", {"WAYLAND_DISPLAY": "wayland-0"})
    assert not view_cmd.display_available("linux", {})
    assert not view_cmd.display_available("linux", {"DISPLAY": ""})
    assert view_cmd.display_available("darwin", {}) and view_cmd.display_available("win32", {})
    with pytest.raises(NCA3DError, match="no display"):
        view_cmd.check_display("linux", {})


@pytest.mark.skipif(sys.platform in ("darwin", "win32"), reason="a display is assumed there")
def test_view_refuses_without_display(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    result = subprocess.run([sys.executable, "-m", "nca3d", "view", "--model", "volume_default"], env=env, check=False,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("nca3d: error: no display"), result.stderr
    assert "nca3d render" in lines[0]


def test_view_wiring_headless(tmp_path, monkeypatch):
    """view() with the window faked: the timer runs ticks, d damages, r restarts, space pauses."""
    needs_pyvista()
    monkeypatch.setattr(view_cmd, "check_display", lambda *a: None)
    real_new_plotter, real_make_scene = view_cmd.new_plotter, view_cmd.make_scene
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

    monkeypatch.setattr(view_cmd, "new_plotter", FakeWindow)
    monkeypatch.setattr(view_cmd, "make_scene", make_scene)
    view_cmd.view(view_cmd.ViewConfig(model=saved(tmp_path, "volume"), size=64, volume_res=16, speed=3))
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
