"""`nca3d render`: offscreen pyvista renders of every domain, turntables, the settings' checks and
the --damage panel."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from nca3d.cli import main
from nca3d.commands.render import RenderConfig, render
from nca3d.errors import NCA3DError
from nca3d.io.model_file import save_model
from tests.render.test_scenes import FAST, GRIDS, needs_pyvista, not_flat, saved
from tests.train.test_damage import relaxing_model


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


def test_cli_render(tmp_path, capsys):
    needs_pyvista()
    out = tmp_path / "c.png"
    assert main(["render", "--model", saved(tmp_path, "2d", "rgb"), "--out", str(out), "--size", "64",
                 "--steps", "4", "--map-size", "64", "--progress", "none"]) == 0
    record = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert record["written"] == [str(out)] and out.is_file()


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


