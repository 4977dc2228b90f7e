"""nca3d.render.maps: the 2D grid baker (GridBaker) over core.dense's dense-grid decode, and the mesh
baker (MeshBaker) against plain per-texel formulas."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from nca3d.core.nca import make_generator
from nca3d.progress import Progress
from nca3d.render.maps import (
    GridBaker,
    MapsConfig,
    MapSet,
    MeshBaker,
    TextureConfig,
    decoded_normals,
    model_maps,
    store_outputs,
)
from tests.conftest import random_model, requires_raycaster


def _reference_bake(model, lattice, state, size: int, config: MapsConfig) -> MapSet:
    """The maps from the model's own decode at every texel centre ((c + 0.5) W / S, (r + 0.5) H / S)."""
    maps = MapSet(model_maps(model), size, config.exr)
    width, height = lattice.sizes_xyz
    x = (torch.arange(size, dtype=torch.float32) + 0.5) * (width / size)
    y = (torch.arange(size, dtype=torch.float32) + 0.5) * (height / size)
    points = torch.stack(torch.broadcast_tensors(x[None, :], y[:, None]), dim=-1).reshape(-1, 2)
    with torch.no_grad():
        values = model.decode(state, lattice, points)[0].numpy()
    normals = decoded_normals(values[:, model.channel_slices()["normal"]])
    store_outputs(maps, model, values, np.arange(size * size), normals, normals, config.normal_convention)
    return maps


@pytest.mark.parametrize("exr, convention", [(False, "opengl"), (True, "directx")])
def test_grid_bake_equals_the_models_decode_at_every_texel(exr, convention):
    """Every map (albedo, normal, roughness, height, AO) as the model's decode gives it, within
    float rounding: at most one quantisation step apart, nearly all texels identical."""
    torch.manual_seed(0)
    model = random_model("2d", outputs="pbr", grid_size=[7, 10], harmonics=1)  # non-square
    lattice = model.make_lattice()
    with torch.inference_mode():
        state = model.rollout(model.seed(lattice), lattice, 6, make_generator(3))
    size = 45  # no multiple of the lattice
    config = MapsConfig(model="m", out=".", size=size, exr=exr, normal_convention=convention)
    reference = _reference_bake(model, lattice, state, size, config)
    for method in ("separable", "generic"):
        maps, covered = GridBaker(model, config, Progress("none"), method=method).bake(state)
        assert covered.all() and sorted(maps.arrays) == sorted(reference.arrays)
        for name, want in reference.arrays.items():
            got = maps.arrays[name]
            assert got.dtype == want.dtype and got.shape == want.shape, name
            if got.dtype == np.float32:
                np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6, err_msg=name)
            else:
                step = np.abs(got.astype(np.int64) - want.astype(np.int64))
                assert step.max() <= 1 and (step == 0).mean() > 0.99, (method, name)


@requires_raycaster
def test_mesh_bake_equals_a_per_texel_float64_reference(tmp_path):
    """MeshBaker (float32, per-face corner tables, tangent frames as a turn of the model's frame,
    one fused quantise) against the plain formulas in float64 at every covered texel: positions and
    (t, b, n) interpolated (ops.bake.texel_frames), the object normal in the model's (right, up, n)
    frame, the tangent-space normal as its dot products with (t, b, n). Every map within one
    quantisation step, nearly all texels identical; on rotated and mirrored UV islands."""
    from nca3d.io.mesh import load_mesh
    from nca3d.ops.bake import (
        UVRasteriser,
        interpolate,
        tangent_frames,
        texel_frames,
        up_frames,
    )
    from tests.commands.test_texture import island_sphere

    model = random_model("mesh", outputs="pbr", icosphere_frequency=4)
    with torch.no_grad():
        for param in model.lppn.parameters():
            param.mul_(3.0)  # strong normals: a real relief
    mesh = load_mesh(island_sphere(tmp_path / "ball.obj"))
    size = 96
    config = TextureConfig(mesh=str(tmp_path / "ball.obj"), model="", out=".", size=size, cells=300,
                           normal_convention="directx", device="cpu")
    baker = MeshBaker(model, mesh, config, Progress("none"))
    state = model.rollout(model.seed(baker.lattice), baker.lattice, 8, torch.Generator().manual_seed(0))
    maps, covered = baker.bake(state)

    chunks = list(UVRasteriser(mesh.uv, mesh.faces, size))
    index, face, bary = (np.concatenate([getattr(c, k) for c in chunks]) for k in ("index", "face", "bary"))
    bary = bary.astype(np.float64)
    assert np.array_equal(np.flatnonzero(covered), index)
    t, b, n = texel_frames(tangent_frames(mesh.vertices, mesh.faces, mesh.uv), mesh.faces, face, bary)
    positions = interpolate(mesh.vertices, mesh.faces, face, bary)
    with torch.no_grad():
        values = model.decode(state, baker.lattice, baker.query(positions, n))[0].double().numpy()
    slices = model.channel_slices()
    local = decoded_normals(values[:, slices["normal"]])
    right, up = up_frames(n)
    unit = local[:, :1] * right + local[:, 1:2] * up + local[:, 2:] * n
    unit /= np.linalg.norm(unit, axis=1, keepdims=True)
    tangent = np.stack([np.sum(unit * t, 1), np.sum(unit * b, 1), np.sum(unit * n, 1)], 1)
    assert (np.sign(tangent[:, 0]) != np.sign(np.sum(unit * right, 1))).mean() > 0.05  # the frames differ
    tangent[:, 1] *= -1  # DirectX
    want = {"albedo": values[:, slices["albedo"]], "normal": tangent * 0.5 + 0.5, "normal_object": unit * 0.5 + 0.5,
            "roughness": values[:, slices["roughness"]], "ao": values[:, slices["ao"]],
            "height": values[:, slices["height"]]}
    for name, expected in want.items():
        top = 65535 if name == "height" else 255
        expected = np.round(np.clip(expected, 0, 1) * top).reshape(len(index), -1)
        got = maps.arrays[name].reshape(size * size, -1)[index].astype(np.float64)
        step = np.abs(got - expected)
        # 16-bit height: float32 positions move a texel's lattice point by ~1e-7 of the mesh: a few 1/65535
        if name == "height":
            assert step.max() <= 8 and step.mean() < 0.5, (name, step.max())
        else:
            assert step.max() <= 1 and (step == 0).mean() > 0.97, (name, step.max())


@requires_raycaster
def test_animated_bakes_reuse_the_geometry_and_dilation_with_the_same_maps(tmp_path):
    """A baker that keeps its geometry (animation frames) bakes a later frame as a fresh baker does,
    seams dilated with the moves of its first frame; a new coverage (another map size) gets its own."""
    from nca3d.io.mesh import load_mesh
    from nca3d.ops.bake import dilate
    from tests.commands.test_texture import island_sphere

    model = random_model("mesh", outputs="pbr", icosphere_frequency=4)
    mesh = load_mesh(island_sphere(tmp_path / "ball.obj"))
    config = TextureConfig(mesh=str(tmp_path / "ball.obj"), model="", out=".", size=64, cells=300, margin=6)
    kept = MeshBaker(model, mesh, config, Progress("none"), keep_geometry=True)
    first = model.rollout(model.seed(kept.lattice), kept.lattice, 4, torch.Generator().manual_seed(0))
    later = model.rollout(first, kept.lattice, 4, torch.Generator().manual_seed(1))
    kept.bake(first)
    moves = kept._dilation
    maps, covered = kept.bake(later)
    assert kept._dilation is moves and kept._located is not None
    fresh = MeshBaker(model, mesh, dataclasses.replace(config), Progress("none"))
    want, want_covered = fresh.bake(later)
    assert np.array_equal(covered, want_covered) and 0.2 < covered.mean() < 0.9
    for name, array in want.arrays.items():
        assert np.array_equal(maps.arrays[name], array), name
    undilated = np.where(covered, want.arrays["roughness"], 0)
    dilate([undilated], covered, 6)
    assert np.array_equal(undilated, want.arrays["roughness"])  # the seams are dilated
    kept._located, kept.config = None, dataclasses.replace(config, size=32)
    kept.bake(later)
    assert kept._dilation is not moves and kept._dilation[0].shape == (32, 32)


@requires_raycaster
def test_mesh_bakes_on_two_streams_equal_the_single_stream_bake(tmp_path, monkeypatch):
    """Many small chunks shared by two streams (each its own chunks' locate, cast, decode and store)
    fill the maps as one stream does, within float rounding (MKL may round a last bit apart in
    another thread); the geometry kept for later frames stays in raster order."""
    from nca3d.io.mesh import load_mesh
    from nca3d.ops.bake import UVRasteriser
    from tests.commands.test_texture import island_sphere

    monkeypatch.setattr(UVRasteriser, "CHUNK", 64 * 3)  # 3 rows a chunk: about 20 chunks
    model = random_model("mesh", outputs="pbr", icosphere_frequency=4)
    mesh = load_mesh(island_sphere(tmp_path / "ball.obj"))
    config = TextureConfig(mesh=str(tmp_path / "ball.obj"), model="", out=".", size=64, cells=300, margin=6)
    before = torch.get_num_threads()
    bakes = []
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            baker = MeshBaker(model, mesh, dataclasses.replace(config), Progress("none"), keep_geometry=True)
            state = model.rollout(model.seed(baker.lattice), baker.lattice, 4, torch.Generator().manual_seed(0))
            bakes.append((baker, *baker.bake(state)))
    finally:
        torch.set_num_threads(before)
    (one, maps_one, covered_one), (two, maps_two, covered_two) = bakes
    assert np.array_equal(covered_one, covered_two) and len(two._located) > 10
    assert two.texels == one.texels == covered_one.sum()
    for name, want in maps_one.arrays.items():
        step = np.abs(maps_two.arrays[name].astype(np.int64) - want.astype(np.int64))
        assert step.max() <= 1 and (step == 0).mean() > 0.999, name
    first_index = [chunk[0][0] for chunk in two._located]
    assert first_index == sorted(first_index) and [len(c[0]) for c in two._located] == [len(c[0]) for c in one._located]
    assert {"rasterise", "locate", "query", "decode", "normals", "store", "dilate"} <= set(two.timings)


@pytest.mark.parametrize("with_tangents", [True, False])
def test_compiled_texel_frames_equal_the_numpy_passes(with_tangents, monkeypatch):
    """MeshBaker.locate's compiled loop (ops.bake.locate_texels) against its numpy passes, on faces
    with random frames, normals at the poles (+-Y: the frame's up is +Z projected) and tangents
    parallel to the normal (any perpendicular)."""
    from types import SimpleNamespace

    from nca3d.ops import bake

    rng = np.random.default_rng(6)
    faces = 40
    corners = rng.standard_normal((faces, 3, 9)).astype(np.float32)
    corners[:5, :, 3:6] = [0.0, 1.0, 0.0]  # north pole normals
    corners[5:10, :, 3:6] = [0.0, -2.0, 0.0]  # south, not unit
    corners[10:15, :, 6:9] = corners[10:15, :, 3:6] * 3  # tangents along the normal
    corners[15:20, :, 3:6] = [0.0, 1.0, 0.0]
    corners[15:20, :, 6:9] = [0.0, 0.5, 0.0]  # both at once
    baker = SimpleNamespace(_corners=corners, _sign=rng.choice([-1.0, 1.0], faces).astype(np.float32))
    face = np.repeat(np.arange(faces), 25)
    bary = rng.dirichlet([1.0, 1.0, 1.0], len(face)).astype(np.float32)
    position, frame = MeshBaker.locate(baker, face, bary, with_tangents)
    assert bake.compiled(bake._texel_frames, helpers=(bake._orthonormal,)) is not None
    monkeypatch.setattr(bake, "compiled", lambda *args, **kwargs: None)
    want_position, want_frame = MeshBaker.locate(baker, face, bary, with_tangents)
    assert np.array_equal(position, want_position) and len(frame) == len(want_frame)
    for got, want in zip(frame, want_frame):
        assert got.shape == want.shape and got.dtype == np.float32
        assert np.abs(got - want).max() < 1e-5
    if with_tangents:
        n, right, up, turn = frame
        assert np.allclose(up[:5], [0.0, 0.0, 1.0], atol=1e-6) and np.allclose(np.cross(right, up), n, atol=1e-5)


@pytest.mark.parametrize("exr", [False, True])
def test_compiled_put_equals_the_numpy_passes(exr, monkeypatch):
    """MapSet.put's compiled loop (quantise and scatter per map) against its numpy passes: NaN,
    out-of-range values, halves that round to even, strided column views, 8 and 16 bits, and
    float heights (--exr) stored as they are."""
    from nca3d.render import maps as maps_module

    rng = np.random.default_rng(8)
    names = ["albedo", "normal", "roughness", "height", "ao"]
    index = rng.choice(32 * 32, 700, replace=False)
    decoded = rng.uniform(-0.2, 1.2, (700, 9)).astype(np.float32)
    decoded[:20, 0] = np.nan
    decoded[20:40, 3] = (np.arange(20) + 0.5) / 255  # exact halves of a level
    columns = {"albedo": decoded[:, 0:3], "normal": decoded[:, 3:6], "roughness": decoded[:, 6],
               "height": decoded[:, 7:8], "ao": decoded[:, 8]}
    got = MapSet(names, 32, exr)
    got.put(index, columns)
    assert maps_module.compiled(maps_module._put_quantised, helpers=(maps_module._level,)) is not None
    monkeypatch.setattr(maps_module, "compiled", lambda *args, **kwargs: None)
    want = MapSet(names, 32, exr)
    want.put(index, columns)
    for name in names:
        assert got.arrays[name].dtype == want.arrays[name].dtype
        assert np.array_equal(got.arrays[name], want.arrays[name]), name
    assert got.arrays["albedo"].reshape(-1, 3)[index[:20], 0].max() == 0  # NaN -> 0


@requires_raycaster
@pytest.mark.parametrize("convention", ["opengl", "directx"])
def test_mesh_bakes_with_the_compiled_loops_equal_the_numpy_bake(tmp_path, monkeypatch, convention):
    """The whole mesh bake with every numba loop (rasteriser, texel frames, coherent casts, locate,
    normals and store, dilation) against the same bake on the numpy and torch paths alone: the
    same coverage and maps within one 8-bit level (float rounding), nearly all texels identical."""
    from nca3d import jit
    from nca3d.io.mesh import load_mesh
    from tests.commands.test_texture import island_sphere

    model = random_model("mesh", outputs="pbr", icosphere_frequency=4)
    mesh = load_mesh(island_sphere(tmp_path / "ball.obj"))
    config = TextureConfig(mesh=str(tmp_path / "ball.obj"), model="", out=".", size=96, cells=300, margin=6,
                           normal_convention=convention)
    bakes = []
    for numba in (True, False):
        if not numba:
            monkeypatch.setitem(__import__("sys").modules, "numba", None)  # `import numba` fails
            jit.compiled.cache_clear()
        baker = MeshBaker(model, mesh, dataclasses.replace(config), Progress("none"))
        state = model.rollout(model.seed(baker.lattice), baker.lattice, 4, torch.Generator().manual_seed(0))
        bakes.append(baker.bake(state))
    jit.compiled.cache_clear()
    (fast, fast_covered), (plain, plain_covered) = bakes
    assert np.array_equal(fast_covered, plain_covered) and 0.2 < fast_covered.mean() < 0.9
    for name, want in plain.arrays.items():
        step = np.abs(fast.arrays[name].astype(np.int64) - want.astype(np.int64))
        limit = 256 if want.dtype == np.uint16 else 1  # 16-bit heights: one 8-bit level
        assert step.max() <= limit and (step == 0).mean() > 0.99, (name, step.max(), (step == 0).mean())
