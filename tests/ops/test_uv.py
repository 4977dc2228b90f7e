"""unwrap / has_usable_uv: fresh xatlas charts that cover every face once and keep the 3D mesh."""

from __future__ import annotations

import numpy as np
from scipy import sparse
from scipy.sparse import csgraph

from nca3d.io.mesh import SurfaceMesh
from nca3d.ops.demo_meshes import torus_geometry
from nca3d.ops.uv import has_usable_uv, unwrap, uv_areas


def torus(major: int = 24, minor: int = 12) -> SurfaceMesh:
    """A coarse closed torus (radii 1 and 0.35): it cannot be flattened without seams."""
    return SurfaceMesh(*torus_geometry(major, minor, radius=1.0, tube=0.35), name="torus")


def chart_of_faces(faces: np.ndarray, count: int) -> np.ndarray:
    """Chart id (F,) of each face: faces sharing a vertex after unwrapping are in one chart."""
    rows = np.repeat(np.arange(len(faces)), 3)
    incidence = sparse.csr_matrix((np.ones(rows.size), (rows, faces.ravel())), shape=(len(faces), count))
    return csgraph.connected_components(incidence @ incidence.T, directed=False)[1]


def side(start: np.ndarray, end: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Which side (P,) of the line start -> end each of points (P, 2) lies on (2D cross product)."""
    return (end[0] - start[0]) * (points[:, 1] - start[1]) - (end[1] - start[1]) * (points[:, 0] - start[0])


def texel_owners(uv: np.ndarray, faces: np.ndarray, chart: np.ndarray, size: int) -> np.ndarray:
    """(size, size) chart id covering each texel centre, -1 where none; fails on two charts in one texel."""
    owner = np.full((size, size), -1)
    for face, corners in enumerate(uv[faces] * size):
        low = np.floor(corners.min(axis=0)).astype(int)
        high = np.ceil(corners.max(axis=0)).astype(int)
        x, y = np.meshgrid(np.arange(low[0], high[0]) + 0.5, np.arange(low[1], high[1]) + 0.5, indexing="ij")
        p = np.stack([x.ravel(), y.ravel()], axis=1)
        w = np.stack([side(corners[k - 2], corners[k - 1], p) for k in range(3)], axis=1)
        inside = (w >= 0).all(axis=1) | (w <= 0).all(axis=1)
        tx, ty = np.floor(p[inside]).astype(int).T
        taken = owner[tx, ty]
        assert np.all((taken == -1) | (taken == chart[face])), "two UV charts overlap"
        owner[tx, ty] = chart[face]
    return owner


def test_unwrap_gives_non_overlapping_charts_and_keeps_the_3d_mesh():
    mesh = torus()
    flat = unwrap(mesh)
    assert flat.name == "torus" and flat.uv.dtype == np.float64 and flat.faces.dtype == np.int64
    assert flat.uv.shape == (len(flat.vertices), 2)
    assert len(flat.vertices) > len(mesh.vertices)  # seams duplicate vertices
    np.testing.assert_array_equal(flat.vertices[flat.faces], mesh.vertices[mesh.faces])  # same triangles, same order
    assert flat.uv.min() >= 0.0 and flat.uv.max() <= 1.0
    assert np.all(np.abs(uv_areas(flat.uv, flat.faces)) > 0)
    chart = chart_of_faces(flat.faces, len(flat.vertices))
    assert chart.max() >= 1  # a torus needs a cut, so the texel test compares several charts
    covered = texel_owners(flat.uv, flat.faces, chart, 256) >= 0
    assert covered.mean() > 0.2
    assert has_usable_uv(flat)


def test_unwrap_welds_existing_seams_first():
    mesh = torus(12, 6)
    split = SurfaceMesh(mesh.vertices[mesh.faces].reshape(-1, 3), np.arange(3 * len(mesh.faces)).reshape(-1, 3))
    flat = unwrap(split)
    np.testing.assert_array_equal(flat.vertices[flat.faces], mesh.vertices[mesh.faces])
    assert len(flat.vertices) < len(split.vertices)  # a triangle soup would give one chart per face


def test_has_usable_uv():
    mesh = torus(8, 4)
    count = len(mesh.vertices)
    assert not has_usable_uv(mesh)
    rng = np.random.default_rng(0)
    assert has_usable_uv(SurfaceMesh(mesh.vertices, mesh.faces, uv=rng.random((count, 2))))
    assert not has_usable_uv(SurfaceMesh(mesh.vertices, mesh.faces, uv=np.zeros((count, 2))))
    assert not has_usable_uv(SurfaceMesh(mesh.vertices, mesh.faces, uv=np.full((count, 2), np.nan)))
    assert not has_usable_uv(SurfaceMesh(mesh.vertices, mesh.faces, uv=rng.random((count - 1, 2))))
    line = np.stack([np.linspace(0, 1, count)] * 2, axis=1)  # every face collapses onto a line in UV
    assert not has_usable_uv(SurfaceMesh(mesh.vertices, mesh.faces, uv=line))
