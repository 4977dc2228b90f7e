"""uniform_lattice: one cell density everywhere, close to the input, on messy input too."""

from __future__ import annotations

import gpytoolbox
import numpy as np
import pytest

from nca3d.errors import NCA3DError
from nca3d.ops.demo_meshes import torus_geometry
from nca3d.ops.remesh import (
    CELL_AREA,
    face_areas,
    half_edges,
    orient_faces,
    refine,
    split_corners,
    uniform_lattice,
)


def grid(nx: int, ny: int, width: float, height: float) -> tuple[np.ndarray, np.ndarray]:
    """A flat rectangle [0, width] x [0, height] split into nx x ny squares of two triangles."""
    x, y = np.meshgrid(np.linspace(0, width, nx + 1), np.linspace(0, height, ny + 1), indexing="ij")
    vertices = np.stack([x.ravel(), y.ravel(), np.zeros(x.size)], axis=1)
    index = np.arange(len(vertices)).reshape(nx + 1, ny + 1)
    a, b, c, d = index[:-1, :-1].ravel(), index[1:, :-1].ravel(), index[1:, 1:].ravel(), index[:-1, 1:].ravel()
    return vertices, np.concatenate([np.stack([a, b, c], axis=1), np.stack([a, c, d], axis=1)])


def torus() -> tuple[np.ndarray, np.ndarray]:
    """A coarse faceted torus (radii 1 and 0.35), closed and outward facing."""
    return torus_geometry(24, 12, radius=1.0, tube=0.35)


def distance_to_surface(points, vertices, faces) -> np.ndarray:
    squared, _, _ = gpytoolbox.squared_distance(points, vertices, faces.astype(np.int32), use_cpp=True)
    return np.sqrt(squared)


def test_density_is_the_same_over_huge_and_tiny_input_triangles():
    # left half: 6,400 tiny triangles; right half: 2 huge ones (meeting the left half at a T-junction)
    vertices, faces = grid(40, 80, 0.5, 1.0)
    vertices = np.concatenate([vertices, [[1.0, 0.0, 0.0], [1.0, 1.0, 0.0]]])
    low, high = 40 * 81, 41 * 81 - 1  # the left half's corners on x = 0.5
    n = len(vertices)
    faces = np.concatenate([faces, [[low, n - 2, n - 1], [low, n - 1, high]]])
    lattice = uniform_lattice(vertices, faces, cells=600)
    stats = lattice.stats
    assert stats["edge_p5"] >= 0.5 and stats["edge_p95"] <= 1.6, stats
    assert 0.9 <= stats["edge_median"] <= 1.1, stats
    x = lattice.vertices[:, 0]
    left, right = np.sum(x < 0.5 - 1e-9), np.sum(x > 0.5 + 1e-9)  # per half: both halves have area 0.5
    assert 0.8 <= left / right <= 1.25, (left, right)
    assert np.abs(lattice.vertices[:, 2]).max() == 0.0


def test_cells_sets_the_spacing_and_the_lattice_stays_on_the_surface():
    vertices, faces = torus()
    area = face_areas(vertices, faces).sum()
    lattice = uniform_lattice(vertices, faces, cells=1500)
    assert lattice.spacing == pytest.approx(np.sqrt(area / (CELL_AREA * 1500)))
    assert 0.85 * 1500 <= lattice.stats["cells"] <= 1.15 * 1500
    assert lattice.stats["valence6"] > 0.6 and lattice.stats["edge_p95"] <= 1.6
    assert distance_to_surface(lattice.vertices, vertices, faces).max() < 0.05 * lattice.spacing
    assert lattice.vertices.dtype == np.float64 and lattice.faces.dtype == np.int64
    assert not len(gpytoolbox.boundary_edges(lattice.faces.astype(np.int32)))  # still closed
    again = uniform_lattice(vertices, faces, spacing=lattice.spacing)
    np.testing.assert_array_equal(again.faces, lattice.faces)  # deterministic
    np.testing.assert_array_equal(again.vertices, lattice.vertices)


FIN_AND_BOWTIE = (
    np.array([[0, 0, 0], [1, 0, 0], [0.5, 1, 0], [0.5, -1, 0], [0.5, 0, 1],  # three triangles on edge 0-1
              [3, 0, 0], [4, 1, 0], [4, -1, 0], [2, 1, 0], [2, -1, 0]], dtype=float),  # two meeting at vertex 5
    np.array([[0, 1, 2], [1, 0, 3], [0, 1, 4], [5, 6, 7], [5, 8, 9]]),
)


def test_split_corners_makes_non_manifold_edges_boundaries_and_splits_bowties():
    vertices, faces = split_corners(*FIN_AND_BOWTIE)
    assert len(vertices) == 15  # vertices 0 and 1 split in three, the bowtie vertex in two
    _, _, edge = half_edges(faces)
    assert np.bincount(edge).max() == 1
    np.testing.assert_array_equal(vertices[faces], FIN_AND_BOWTIE[0][FIN_AND_BOWTIE[1]])  # same triangles


def test_split_corners_joins_only_consistently_oriented_pairs():
    vertices = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [1, -1, 0]], dtype=float)
    assert len(split_corners(vertices, np.array([[0, 1, 2], [1, 0, 3]]))[0]) == 4
    assert len(split_corners(vertices, np.array([[0, 1, 2], [0, 1, 3]]))[0]) == 6


def test_non_manifold_input_is_remeshed():
    vertices, faces = FIN_AND_BOWTIE
    lattice = uniform_lattice(vertices, faces, spacing=0.1)
    assert len(gpytoolbox.non_manifold_edges(lattice.faces.astype(np.int32))) == 0
    assert lattice.stats["components"] == 5 and lattice.stats["edge_p95"] <= 1.6
    assert distance_to_surface(lattice.vertices, vertices, faces).max() < 0.05 * 0.1


def signed_volume(vertices: np.ndarray, faces: np.ndarray) -> float:
    a, b, c = (vertices[faces[:, k]] for k in range(3))
    return float(np.einsum("ij,ij->i", a, np.cross(b, c)).sum() / 6.0)


def test_inconsistent_winding_is_repaired_by_majority():
    vertices, faces = torus()
    flipped = faces.copy()
    wrong = np.random.default_rng(0).random(len(faces)) < 0.3
    flipped[wrong] = flipped[wrong][:, ::-1]
    oriented = orient_faces(vertices, flipped)
    np.testing.assert_allclose(signed_volume(vertices, oriented), signed_volume(vertices, faces))
    assert signed_volume(vertices, faces) > 0
    lattice = uniform_lattice(vertices, flipped, cells=800)
    assert lattice.stats["components"] == 1
    assert not len(gpytoolbox.boundary_edges(lattice.faces.astype(np.int32)))  # no seams where faces were flipped
    assert signed_volume(lattice.vertices, lattice.faces) > 0


def test_refine_splits_long_edges_without_cracks():
    vertices, faces = grid(2, 1, 2.0, 1.0)
    fine_vertices, fine_faces = refine(vertices, faces, 0.3)
    tail, head, edge = half_edges(fine_faces)
    lengths = np.linalg.norm(fine_vertices[head] - fine_vertices[tail], axis=1)
    assert lengths.max() <= 0.3
    boundary = np.bincount(edge)[edge] == 1
    assert lengths[boundary].sum() == pytest.approx(6.0)  # only the rectangle's outline is open
    assert face_areas(fine_vertices, fine_faces).sum() == pytest.approx(2.0)


def test_refine_splits_edges_at_the_boundary_to_their_own_length():
    vertices, faces = grid(4, 4, 4.0, 4.0)  # 9 interior vertices, unit squares
    fine_vertices, fine_faces = refine(vertices, faces, np.inf, 0.3)
    tail, head, edge = half_edges(fine_faces)
    lengths = np.linalg.norm(fine_vertices[head] - fine_vertices[tail], axis=1)
    on_boundary = np.zeros(len(fine_vertices), dtype=bool)
    on_boundary[tail[np.bincount(edge)[edge] == 1]] = True
    touching = on_boundary[tail] | on_boundary[head]
    assert lengths[touching].max() <= 0.3  # every edge at the boundary, not only along it
    assert lengths[~touching].max() == pytest.approx(np.sqrt(2))  # inside, the remesher splits
    assert face_areas(fine_vertices, fine_faces).sum() == pytest.approx(16.0)
    np.testing.assert_array_equal(fine_vertices[:len(vertices)], vertices)


def test_parts_smaller_than_a_cell_are_dropped():
    vertices, faces = grid(4, 4, 1.0, 1.0)
    speck = np.array([[5.0, 5.0, 0.0], [5.01, 5.0, 0.0], [5.0, 5.01, 0.0]])
    lattice = uniform_lattice(np.concatenate([vertices, speck]), np.concatenate([faces, [[25, 26, 27]]]), spacing=0.1)
    assert lattice.stats["components"] == 1 and lattice.stats["dropped_components"] == 1
    assert lattice.vertices[:, 0].max() <= 1.0


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({}, "exactly one of spacing"),
        ({"spacing": 0.1, "cells": 10}, "exactly one of spacing"),
        ({"cells": 0}, "positive count"),
        ({"spacing": -1.0}, "positive length"),
        ({"spacing": 100.0}, "smaller than one cell"),
    ],
)
def test_bad_requests_are_refused(kwargs, message):
    vertices, faces = grid(2, 2, 1.0, 1.0)
    with pytest.raises(NCA3DError, match=message):
        uniform_lattice(vertices, faces, **kwargs)


def test_zero_area_is_refused():
    vertices = np.array([[0, 0, 0], [1, 0, 0], [2, 0, 0]], dtype=float)
    with pytest.raises(NCA3DError, match="zero surface area"):
        uniform_lattice(vertices, np.array([[0, 1, 2]]), cells=10)
