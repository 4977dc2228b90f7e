"""unwrap / has_usable_uv / seam_stats: fresh charts that cover every face once, apart, and keep the 3D mesh."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import sparse
from scipy.sparse import csgraph

from nca3d.io.mesh import SurfaceMesh
from nca3d.ops.demo_meshes import torus_geometry
from nca3d.ops.uv import (
    has_usable_uv,
    overlapping_charts,
    project_charts,
    seam_stats,
    unwrap,
    uv_areas,
)


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


def test_a_zero_area_face_does_not_stop_the_unwrap():
    mesh = torus(12, 6)
    n = len(mesh.vertices)
    line = SurfaceMesh(np.concatenate([mesh.vertices, [[3, 0, 0], [4, 0, 0], [5, 0, 0]]]),
                       np.concatenate([mesh.faces, [[n, n + 1, n + 2]]]))
    flat = unwrap(line, resolution=128, padding=2)
    areas = uv_areas(flat.uv, flat.faces)
    assert np.all(np.abs(areas[:-1]) > 0) and areas[-1] == 0
    texel_owners(flat.uv, flat.faces, chart_of_faces(flat.faces, len(flat.vertices)), 128)


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


def helicoid(turns: float = 1.5, rings: int = 3, steps: int = 60) -> SurfaceMesh:
    """A flat spiral ramp (radii 0.5 to 1, rising 0.05 per radian) facing +z: over 1.5 turns its
    projection along z overlaps itself, though every face faces up."""
    r, t = np.meshgrid(np.linspace(0.5, 1.0, rings + 1), np.linspace(0, 2 * np.pi * turns, steps + 1), indexing="ij")
    vertices = np.stack([r * np.cos(t), r * np.sin(t), 0.05 * t], axis=-1).reshape(-1, 3)
    index = np.arange(len(vertices)).reshape(rings + 1, steps + 1)
    a, b, c, d = index[:-1, :-1].ravel(), index[1:, :-1].ravel(), index[1:, 1:].ravel(), index[:-1, 1:].ravel()
    return SurfaceMesh(vertices, np.concatenate([np.stack([a, b, c], 1), np.stack([a, c, d], 1)]), name="helicoid")


def test_charts_that_would_overlap_themselves_are_cut():
    mesh = helicoid()
    chart, corner_uv = project_charts(mesh.vertices, mesh.faces)
    assert chart.max() >= 1  # one +z region, cut where its projection came round onto itself
    assert not overlapping_charts(corner_uv, mesh.faces, chart).any()
    assert overlapping_charts(corner_uv, mesh.faces, np.zeros_like(chart)).all()  # uncut, it overlaps
    once = helicoid(turns=0.9)
    chart, corner_uv = project_charts(once.vertices, once.faces)
    assert chart.max() == 0  # under one turn it stays whole
    flat = unwrap(mesh, resolution=256, padding=2)
    np.testing.assert_array_equal(flat.vertices[flat.faces], mesh.vertices[mesh.faces])
    texel_owners(flat.uv, flat.faces, chart_of_faces(flat.faces, len(flat.vertices)), 256)


def test_overlapping_charts_sees_corners_that_overlap_around_a_vertex():
    # two triangles of one chart meeting only at vertex 0, the second inside the first: no boundary
    # edges cross, only their corners at vertex 0 overlap
    corner_uv = np.array([[[0, 0], [2, 0], [0, 2]], [[0, 0], [0.5, 0.2], [0.2, 0.5]]], dtype=float)
    faces = np.array([[0, 1, 2], [0, 3, 4]])
    assert overlapping_charts(corner_uv, faces, np.array([0, 0])).all()
    corner_uv[1] = [[0, 0], [-1, 0], [0, -1]]  # opposite quadrants: a bowtie, no overlap
    assert not overlapping_charts(corner_uv, faces, np.array([0, 0])).any()
    assert overlapping_charts(corner_uv, faces, np.array([0, 1])).tolist() == [False, False]


def cube() -> SurfaceMesh:
    """The unit cube, 12 outward triangles."""
    vertices = np.array([[x, y, z] for x in (0, 1) for y in (0, 1) for z in (0, 1)], dtype=float)
    faces = np.array([[0, 1, 3], [0, 3, 2], [4, 6, 7], [4, 7, 5], [0, 4, 5], [0, 5, 1],
                      [2, 3, 7], [2, 7, 6], [0, 2, 6], [0, 6, 4], [1, 5, 7], [1, 7, 3]])
    return SurfaceMesh(vertices, faces, name="cube")


def test_a_cube_unwraps_into_its_six_faces_without_stretch():
    flat = unwrap(cube(), resolution=64, padding=2)
    assert chart_of_faces(flat.faces, len(flat.vertices)).max() == 5
    stats = seam_stats(flat)
    assert stats["seam_length"] == pytest.approx(12 / np.sqrt(6))  # every cube edge is cut
    assert stats["seam_share"] == pytest.approx(12 / (12 + 6 * np.sqrt(2)))
    assert stats["stretch_l2"] == pytest.approx(1.0)
    assert stats["anisotropy_mean"] == pytest.approx(1.0) and stats["anisotropy_max"] == pytest.approx(1.0)
    assert stats["texel_use"] == pytest.approx(np.abs(uv_areas(flat.uv, flat.faces)).sum())
    assert 0.3 < stats["texel_use"] < 1.0


def test_charts_keep_the_padding_between_them():
    mesh = torus()
    size, padding = 128, 3
    flat = unwrap(mesh, resolution=size, padding=padding)
    owner = texel_owners(flat.uv, flat.faces, chart_of_faces(flat.faces, len(flat.vertices)), size)
    for dx in range(-padding + 1, padding):
        for dy in range(-padding + 1, padding):
            moved = np.roll(owner, (dx, dy), axis=(0, 1))
            assert not np.any((owner >= 0) & (moved >= 0) & (owner != moved)), (dx, dy)
    assert (owner >= 0).mean() > 0.3
    again = unwrap(mesh, resolution=size, padding=padding)
    np.testing.assert_array_equal(again.uv, flat.uv)  # deterministic
