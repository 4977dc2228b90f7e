"""`nca3d maps`: tileable PBR map sets from 2D models."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from nca3d.cli import main
from nca3d.commands.texture import tileable_maps
from nca3d.io.model_file import save_model
from nca3d.ops.pbr import normal_height_agreement
from nca3d.progress import Progress
from nca3d.render.maps import MapsConfig
from tests.conftest import random_model


@pytest.fixture
def pbr_model(tmp_path):
    model = random_model("2d", outputs="pbr", grid_size=[16, 16], harmonics=1)
    with torch.no_grad():
        for param in model.lppn.parameters():
            param.mul_(3.0)  # more contrast, so the tiling check has structure to compare
    path = tmp_path / "tiles.nca3d"
    save_model(model, path)
    return path


def _read(path):
    return np.asarray(Image.open(path)).astype(np.float64)


def test_maps_tile_seamlessly_and_write_what_the_model_has(tmp_path, pbr_model):
    out = tmp_path / "out"
    files = tileable_maps(MapsConfig(model=str(pbr_model), out=str(out), size=128, steps=8, device="cpu"),
                          Progress("none"))
    names = sorted(p.split("/")[-1] for p in files)
    assert names == ["tiles.json", "tiles_albedo.png", "tiles_ao.png", "tiles_height.png", "tiles_normal.png",
                     "tiles_orm.png", "tiles_preview.png", "tiles_roughness.png"]
    assert Image.open(out / "tiles_height.png").mode == "I;16"
    for kind in ("albedo", "normal", "height"):
        image = _read(out / f"tiles_{kind}.png")
        assert image.std() > 1.0, kind  # not flat
        # the wrap-around step (last column -> first, last row -> first) is like any other step
        inner_x = np.abs(np.diff(image, axis=1)).mean()
        inner_y = np.abs(np.diff(image, axis=0)).mean()
        wrap_x = np.abs(image[:, 0] - image[:, -1]).mean()
        wrap_y = np.abs(image[0] - image[-1]).mean()
        assert wrap_x < 2.0 * inner_x and wrap_y < 2.0 * inner_y, kind
    orm = _read(out / "tiles_orm.png")
    assert np.array_equal(orm[..., 0], _read(out / "tiles_ao.png"))
    assert np.array_equal(orm[..., 1], _read(out / "tiles_roughness.png")) and (orm[..., 2] == 0).all()
    record = json.loads((out / "tiles.json").read_text())
    assert record["config"]["size"] == 128 and record["lattice"]["grid"] == [16, 16]
    agreement = record["normal_height_agreement"]  # measured on the written maps, as ops.pbr does
    normal, height = _read(out / "tiles_normal.png") / 255.0, _read(out / "tiles_height.png") / 65535.0
    assert agreement == pytest.approx({k: round(v, 4) for k, v in normal_height_agreement(normal, height).items()},
                                      abs=1e-4)


def test_directx_normals_flip_green_only(tmp_path, pbr_model):
    for convention in ("opengl", "directx"):
        tileable_maps(MapsConfig(model=str(pbr_model), out=str(tmp_path / convention), size=32, steps=4,
                                 normal_convention=convention, preview_size=0, device="cpu"), Progress("none"))
    gl, dx = (_read(tmp_path / c / "tiles_normal.png") for c in ("opengl", "directx"))
    assert np.array_equal(gl[..., [0, 2]], dx[..., [0, 2]])
    assert np.abs(gl[..., 1] + dx[..., 1] - 255).max() <= 1


def test_animated_maps_write_numbered_frames(tmp_path, pbr_model):
    files = tileable_maps(MapsConfig(model=str(pbr_model), out=str(tmp_path), size=32, steps=4, frames=3, every=2,
                                     preview_size=0, device="cpu"), Progress("none"))
    albedo = sorted(p.split("/")[-1] for p in files if "_albedo" in p)
    assert albedo == ["tiles_albedo.0001.png", "tiles_albedo.0002.png", "tiles_albedo.0003.png"]
    frames = [_read(tmp_path / name) for name in albedo]
    assert not np.array_equal(frames[0], frames[2])  # it keeps evolving


def test_maps_refuse_other_models_and_bad_numbers(tmp_path, capsys):
    volume = tmp_path / "v.nca3d"
    save_model(random_model("volume", grid_size=[8, 8, 8]), volume)
    assert main(["maps", "--model", str(volume), "--out", str(tmp_path / "o")]) == 2
    assert "needs a 2D model" in capsys.readouterr().err
    assert main(["maps", "--model", str(volume), "--out", str(tmp_path / "o"), "--size", "9"]) == 2
    assert "--size 9 is out of range" in capsys.readouterr().err
    assert main(["maps", "--model", "no_such_model", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "neither a model file nor a bundled model" in err[0]
