import json
import math

import numpy as np
import torch

from nca3d.bench import main
from nca3d.bench.realtime import SPHERE_FILL, screen_points, sphere_gbuffer
from nca3d.core.model import Model, ModelConfig
from nca3d.lattices import icosphere


def test_realtime_bench_prints_each_domain(capsys):
    assert main(["realtime", "--quick", "--json", "--device", "cpu", "--steps-per-frame", "2"]) == 0
    results = json.loads(capsys.readouterr().out)
    assert results["matmul_gflops"] > 0 and results["steps_per_frame"] == 2
    rows = {row["domain"]: row for row in results["domains"]}
    assert list(rows) == ["2d", "mesh", "volume"]
    assert rows["2d"]["pixels"] == 96 * 54 and rows["volume"]["pixels"] == 32 * 32
    assert 0 < rows["mesh"]["pixels"] < 96 * 54 and rows["mesh"]["gbuffer_ms"] > 0
    for row in rows.values():
        assert row["fps"] > 0 and row["step_ms"] > 0 and row["decode_ms"] > 0
    assert main(["realtime", "--quick", "--device", "cpu"]) == 0
    assert "FPS" in capsys.readouterr().out


def test_realtime_refuses_zero_steps(capsys):
    assert main(["realtime", "--quick", "--steps-per-frame", "0"]) == 2
    assert "--steps-per-frame" in capsys.readouterr().err


def test_screen_points_tile_the_period_across_the_width():
    torch.manual_seed(0)
    model = Model(ModelConfig(domain="2d", outputs="rgb", grid_size=[8, 8])).eval()
    lattice = model.make_lattice()
    state = torch.randn(1, 8, 8, model.config.channels)
    height = 12
    points = screen_points(2 * height, height, lattice)
    assert points[:, 1].max() < 8 < points[:, 0].max()  # one period tall, two wide
    with torch.no_grad():
        image = model.decode(state, lattice, points)[0].reshape(height, 2 * height, -1)
    assert torch.allclose(image[:, :height], image[:, height:], atol=1e-5)
    assert image[:, :height].std() > 1e-3  # not a flat image


def test_sphere_gbuffer_locates_the_pixels_the_sphere_covers():
    vertices, faces = icosphere(8)
    width, height = 64, 48
    pixels, points = sphere_gbuffer(vertices, faces, width, height)
    disc = math.pi * (SPHERE_FILL * height / 2) ** 2
    assert abs(len(pixels) - disc) < 0.06 * disc
    # every located point lies on the lattice under its pixel's centre, on the side facing the camera
    surface = np.einsum("pk,pkd->pd", points.bary.numpy(), vertices[faces[points.face.numpy()]])
    half = 1.0 / SPHERE_FILL
    row, col = np.divmod(pixels, width)
    x = ((col + 0.5) / width - 0.5) * 2 * half * width / height
    y = (0.5 - (row + 0.5) / height) * 2 * half
    assert np.allclose(surface[:, 0], x, atol=1e-4) and np.allclose(surface[:, 1], y, atol=1e-4)
    assert (surface[:, 2] > -1e-6).all()
