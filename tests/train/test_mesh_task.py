import math

import numpy as np
import pytest
import torch

from nca3d.train import mesh_task
from nca3d.train.mesh_task import MeshTask, default_cache_dir, view_frames
from tests.conftest import random_model, requires_raycaster

pytestmark = requires_raycaster

# Frequency 8 (642 cells): 8 cells across a view give the same 64-degree window as 64 at frequency 64.
SMALL = {"frequency": 8, "patch": 16, "scales": (1, 2, 4), "views": 6, "view_cells": 8}


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("raycast")


@pytest.fixture(scope="module")
def task(cache):
    return MeshTask(cache_dir=cache, **SMALL)


def _hit_points(task, points):
    vertices = task.lattice.vertices.double()
    corners = vertices[task.lattice.faces[points.face]]  # (Q, 3, 3)
    return torch.einsum("qk,qkd->qd", points.bary.double(), corners).numpy()


def test_geometry(task):
    assert task.lattice.num_cells == 642 and task.resolution == 64
    assert math.isclose(task.window, 8 * math.sqrt(4 * math.pi / 642))
    assert task.face.shape == (6, 64, 64) and task.uv.shape == (6, 64, 64, 2)
    # A full frequency-64 view: 64 cells of sqrt(4 pi / N) rad = 1.121 rad a side.
    assert abs(64 * math.sqrt(4 * math.pi / 40962) - 1.121) < 1e-3


def test_render_shapes_and_gradients(task):
    model = random_model("mesh", channels=8, hidden=16)
    state = model.rollout(torch.randn(2, task.lattice.num_cells, 8) * 0.1, task.lattice, 2)
    crops = task.render(model, state, torch.Generator().manual_seed(0))
    assert len(crops) == 1 + 2 + 4
    assert all(c.shape == (2, model.num_outputs, 16, 16) for c in crops)
    sum((c - 0.3).square().mean() for c in crops).backward()
    for name, param in model.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name


def test_supersampled_px_average_the_cached_rays_they_cover(cache, monkeypatch):
    """With supersample n, a crop's px is the mean of n x n of the cached rays it covers (as many as
    the cache holds at its scale): a scale-1 crop of 16 px over 64 cached rays a side, at 4 rays a px,
    equals the 4 x 4 means of a 64-px crop that decodes each ray; supersample 1 is the training's
    render, one ray at each px centre."""
    model = random_model("mesh", channels=8, hidden=16)
    with torch.no_grad():  # detail within a cell, so that rays a px apart differ
        model.lppn.layers[0].weight[:, :model.local_dim] *= 50
    fine = MeshTask(cache_dir=cache, **{**SMALL, "supersample": 4})
    every_ray = MeshTask(cache_dir=cache, **{**SMALL, "patch": 64, "scales": (1,)})  # the same cache
    assert fine.cache_path == every_ray.cache_path and fine.rays_per_px == {1: 4, 2: 2, 4: 1}
    state = model.rollout(model.seed(fine.lattice, 2), fine.lattice, 4, torch.Generator().manual_seed(0))
    for scale_task, plan in ((fine, [(1, 3, 0, 0), (2, 3, 5, 7)]), (every_ray, [(1, 3, 0, 0)])):
        monkeypatch.setattr(scale_task, "crop_plan", lambda generator, plan=plan: plan)
    with torch.no_grad():
        averaged, half = fine.render(model, state, None)
        (rays,) = every_ray.render(model, state, None)
        point = MeshTask(cache_dir=cache, **SMALL)
        monkeypatch.setattr(point, "crop_plan", lambda generator: [(1, 3, 0, 0)])
        (centres,) = point.render(model, state, None)
    assert averaged.shape == half.shape == centres.shape == (2, model.num_outputs, 16, 16)
    torch.testing.assert_close(averaged, torch.nn.functional.avg_pool2d(rays, 4), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(centres, rays[..., 2::4, 2::4])  # the ray at each px centre
    assert float((averaged - centres).abs().max()) > 0.05  # the detail is there to average
    # scale 2: 2 x 2 rays a px, from row 5, column 7 of the same view
    torch.testing.assert_close(half, torch.nn.functional.avg_pool2d(rays[..., 5:37, 7:39], 2), atol=1e-5, rtol=1e-5)


def test_every_pixel_hits(task):
    assert (task.face >= 0).all() and (task.face < len(task.lattice.faces)).all()
    plan = task.crop_plan(torch.Generator().manual_seed(1))
    points = task.crop_points(plan)
    assert len(points) == 7 * 16 * 16 and (points.face >= 0).all()
    assert torch.allclose(points.bary.sum(1), torch.ones(len(points))) and (points.bary >= 0).all()
    radius = np.linalg.norm(_hit_points(task, points), axis=1)
    assert radius.min() > 0.98 and radius.max() < 1.0 + 1e-5  # on the icosphere (inradius ~0.985)


def test_cache_is_built_once_then_reused(task, cache, monkeypatch):
    files = sorted(cache.glob("*.npz"))
    assert files == [task.cache_path] and not list(cache.glob(".*part*"))
    mtime = task.cache_path.stat().st_mtime_ns

    def fail(*args, **kwargs):
        raise AssertionError("the cache was rebuilt")

    monkeypatch.setattr(mesh_task, "build_view_cache", fail)
    again = MeshTask(cache_dir=cache, **SMALL)
    assert np.array_equal(again.face, task.face) and np.array_equal(again.uv, task.uv)
    assert task.cache_path.stat().st_mtime_ns == mtime
    # Other settings are another file; a different patch with the same finest resolution is not.
    assert MeshTask(cache_dir=cache, **{**SMALL, "patch": 32, "scales": (1, 2)}).cache_path == task.cache_path
    with pytest.raises(AssertionError, match="rebuilt"):
        MeshTask(cache_dir=cache, **{**SMALL, "views": 5})


def test_broken_cache_is_rebuilt(tmp_path):
    first = MeshTask(cache_dir=tmp_path, **{**SMALL, "views": 2})
    first.cache_path.write_bytes(b"not a zip file")
    second = MeshTask(cache_dir=tmp_path, **{**SMALL, "views": 2})
    assert np.array_equal(second.face, first.face)
    with np.load(second.cache_path, allow_pickle=False) as data:
        assert data["face"].shape == (2, 64, 64)


def test_same_seed_same_crops(task):
    model = random_model("mesh", channels=8, hidden=16)
    state = torch.randn(2, task.lattice.num_cells, 8) * 0.1
    with torch.no_grad():
        a = task.render(model, state, torch.Generator().manual_seed(7))
        b = task.render(model, state, torch.Generator().manual_seed(7))
        c = task.render(model, state, torch.Generator().manual_seed(8))
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not all(torch.equal(x, y) for x, y in zip(a, c))


def _side_angles(task, plan):
    """Mean angle spanned by each crop's middle row and middle column (radians)."""
    points = _hit_points(task, task.crop_points(plan)).reshape(len(plan), 16, 16, 3)
    points /= np.linalg.norm(points, axis=-1, keepdims=True)

    def angle(p, q):
        return np.arccos(np.clip(np.sum(p * q, -1), -1, 1))

    return (angle(points[:, 8, 0], points[:, 8, -1]) + angle(points[:, 0, 8], points[:, -1, 8])) / 2


def test_finer_scales_see_smaller_windows(task):
    plan = task.crop_plan(torch.Generator().manual_seed(3))
    spans = _side_angles(task, plan)
    full = spans[0]
    assert abs(full - task.window * 15 / 16) < 0.02  # equidistant: pixel offsets are arc lengths
    assert np.allclose(spans[1:3] / full, 0.5, atol=0.05)
    assert np.allclose(spans[3:] / full, 0.25, atol=0.03)


def test_views_are_seen_from_outside(task):
    right, up = view_frames(task.centres)
    assert np.allclose(np.sum(np.cross(right, up) * task.centres, axis=1), 1.0)  # right x up = outward
    plan = [(1, v, 0, 0) for v in range(task.views)]
    points = _hit_points(task, task.crop_points(plan)).reshape(task.views, 16, 16, 3)
    for v in range(task.views):
        assert points[v, 8, -1] @ right[v] > points[v, 8, 0] @ right[v]  # columns go right
        assert points[v, 0, 8] @ up[v] > points[v, -1, 8] @ up[v]  # row 0 is at the top
        assert points[v, 8, 8] @ task.centres[v] > 0.99


def test_gnomonic_projection_also_hits_everywhere(tmp_path):
    gnomonic = MeshTask(cache_dir=tmp_path, projection="gnomonic", **{**SMALL, "views": 2})
    assert (gnomonic.face >= 0).all()
    with pytest.raises(ValueError):
        MeshTask(cache_dir=tmp_path, **{**SMALL, "view_cells": 64})  # a window wider than the sphere


def test_preview(task):
    model = random_model("mesh", channels=8, hidden=16)
    image = task.preview(model, torch.randn(1, task.lattice.num_cells, 8) * 0.1, size=32)
    assert image.shape == (32, 32, model.num_outputs) and image.dtype == np.float32
    assert np.all(image[0, 0] == 0.5) and np.all(image[-1, -1] == 0.5)
    assert not np.all(image[16, 16] == 0.5)


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("NCA3D_CACHE", str(tmp_path / "mine"))
    assert default_cache_dir() == tmp_path / "mine" / "raycast"
    monkeypatch.delenv("NCA3D_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "nca3d" / "raycast"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_cache_dir() == tmp_path / ".cache" / "nca3d" / "raycast"
