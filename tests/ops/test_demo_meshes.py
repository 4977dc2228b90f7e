"""Demo meshes: closed, outward, about 2 units across, deterministic, shipped small with UVs."""

from __future__ import annotations

import numpy as np
import pytest

from nca3d.errors import NCA3DError
from nca3d.ops import demo_meshes
from nca3d.ops.demo_meshes import (
    DEMO_MESHES,
    GEOMETRY,
    demo_mesh_path,
    load_demo_or_mesh,
    obj_text,
)


def signed_volume(vertices: np.ndarray, faces: np.ndarray) -> float:
    corners = vertices[faces]
    return float(np.einsum("ij,ij->i", corners[:, 0], np.cross(corners[:, 1], corners[:, 2])).sum() / 6)


@pytest.mark.parametrize("name", DEMO_MESHES)
def test_geometry_is_closed_outward_and_unit_sized(name):
    vertices, faces = GEOMETRY[name]()
    directed = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    _, counts = np.unique(directed, axis=0, return_counts=True)
    assert counts.max() == 1  # every directed edge once: consistently oriented
    undirected = np.unique(np.sort(directed, axis=1), axis=0, return_counts=True)[1]
    assert (undirected == 2).all()  # closed 2-manifold
    assert signed_volume(vertices, faces) > 0.3  # counter-clockwise seen from outside
    assert np.isclose(np.abs(vertices).max(), 1.0)
    assert np.allclose((vertices.max(0) + vertices.min(0)) / 2, 0.0, atol=0.05)


def test_rock_is_deterministic_and_seeded():
    a, _ = demo_meshes.rock_geometry()
    b, _ = demo_meshes.rock_geometry()
    c, _ = demo_meshes.rock_geometry(seed=8)
    assert np.array_equal(a, b)
    assert not np.allclose(a, c)
    radius = np.linalg.norm(a, axis=1)
    assert radius.std() / radius.mean() > 0.05  # lumpy, not a sphere


@pytest.mark.parametrize("name", DEMO_MESHES)
def test_shipped_obj_matches_the_generator_and_loads_with_uvs(name):
    from nca3d.ops.uv import has_usable_uv, uv_areas

    path = demo_mesh_path(name)
    assert path is not None and path.suffix == ".obj"
    assert path.stat().st_size < 300_000
    mesh = load_demo_or_mesh(name)
    assert has_usable_uv(mesh)
    assert mesh.uv.min() >= 0.0 and mesh.uv.max() <= 1.0
    assert (np.abs(uv_areas(mesh.uv, mesh.faces)) > 0).all()
    vertices, faces = GEOMETRY[name]()
    assert len(mesh.faces) == len(faces)
    # the same surface: every shipped vertex is a generator vertex (to the written precision)
    from scipy.spatial import cKDTree

    distance, _ = cKDTree(vertices).query(mesh.vertices)
    assert distance.max() < 1e-4


def test_obj_text_round_trips(tmp_path):
    from nca3d.io.mesh import load_mesh

    mesh = demo_meshes.make_demo_mesh("capsule")
    path = tmp_path / "c.obj"
    path.write_text(obj_text(mesh))
    loaded = load_mesh(path)
    assert len(loaded.faces) == len(mesh.faces)
    assert np.allclose(np.sort(loaded.uv, axis=0), np.sort(mesh.uv, axis=0), atol=1e-5)


def test_names_and_paths(tmp_path):
    from nca3d.io.mesh import load_mesh

    with pytest.raises(NCA3DError, match="neither a mesh file nor a demo mesh"):
        load_demo_or_mesh("pebble")
    with pytest.raises(NCA3DError, match="not found"):
        load_demo_or_mesh(str(tmp_path / "missing.obj"))
    written = demo_meshes.write_demo_meshes(tmp_path, ["capsule"])
    assert [p.name for p in written] == ["capsule.obj"]
    assert len(load_demo_or_mesh(str(written[0])).faces) == len(load_mesh(written[0]).faces)


def test_missing_shipped_file_is_built(monkeypatch, tmp_path):
    monkeypatch.setattr(demo_meshes, "demo_mesh_folders", lambda: [tmp_path])
    assert demo_mesh_path("torus") is None
    mesh = load_demo_or_mesh("torus")
    assert mesh.uv is not None and len(mesh.faces) == len(GEOMETRY["torus"]()[1])
