"""ops.displace: the default strength keeps the demo meshes free of flips and self-intersections
for any heights, seam copies move together, and the no-flip bound is a real bound."""

import numpy as np
import pytest

from nca3d.io.mesh import SurfaceMesh
from nca3d.ops.bake import sample_bilinear, vertex_normals
from nca3d.ops.demo_meshes import DEMO_MESHES, load_demo_or_mesh
from nca3d.ops.displace import (
    DEFAULT_FRACTION,
    default_strength,
    displace,
    displace_by,
    flipped_faces,
    no_flip_strength,
    position_groups,
)


def _welded(vertices: np.ndarray, faces: np.ndarray, groups=None):
    groups = position_groups(vertices) if groups is None else groups
    points = np.zeros((groups.max() + 1, 3))
    points[groups] = vertices
    return points, groups[faces]


def near_pairs(vertices: np.ndarray, faces: np.ndarray, pad: float = 0.0, chunk: int = 512):
    """(groups, edges (E, 2), edge index, triangle index) of every edge and triangle whose bounding boxes,
    each grown by `pad`, overlap and that share no vertex (welded by position): the candidates of
    `self_intersections` for any displacement of the vertices by at most `pad` (which keeps seam
    copies together: the position groups are the undisplaced mesh's)."""
    groups = position_groups(vertices)
    points, tri = _welded(vertices, faces, groups)
    edges = np.unique(np.sort(tri[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2), axis=1), axis=0)
    corners = points[tri]
    lo, hi = corners.min(1) - pad, corners.max(1) + pad
    found_i, found_j = [], []
    for start in range(0, len(edges), chunk):
        pair = edges[start:start + chunk]
        p, q = points[pair[:, 0]], points[pair[:, 1]]
        i, j = np.nonzero(((np.minimum(p, q)[:, None] - pad <= hi[None])
                           & (np.maximum(p, q)[:, None] + pad >= lo[None])).all(-1))
        keep = ~(tri[j][:, :, None] == pair[i][:, None, :]).any((1, 2))
        found_i.append(i[keep] + start)
        found_j.append(j[keep])
    return groups, edges, np.concatenate(found_i), np.concatenate(found_j)


def self_intersections(vertices: np.ndarray, faces: np.ndarray, pairs=None) -> int:
    """Edges that cross a triangle they share no vertex with (vertices welded by position);
    pairs: `near_pairs` of the mesh before a displacement (default: of these vertices).

    With no flipped triangle this is a complete self-intersection test: two triangles that
    intersect and share no vertex have an edge of one crossing the other; sharing a vertex v, the
    crossing edge is one without v (an edge through v meets the other's plane only at v); sharing
    an edge, they overlap only when one is folded over the other, which flips it."""
    groups, edges, i, j = pairs if pairs is not None else near_pairs(vertices, faces)
    points, tri = _welded(vertices, faces, groups)
    p, q = points[edges[i, 0]], points[edges[i, 1]]
    a, b, c = points[tri[j, 0]], points[tri[j, 1]], points[tri[j, 2]]
    d, e1, e2 = q - p, b - a, c - a  # Moeller-Trumbore, the segment p + t d, t in [0, 1]
    h = np.cross(d, e2)
    det = np.einsum("kc,kc->k", e1, h)
    ok = np.abs(det) > 1e-14
    inv = np.where(ok, 1.0 / np.where(ok, det, 1.0), 0.0)
    s = p - a
    u = inv * np.einsum("kc,kc->k", s, h)
    qv = np.cross(s, e1)
    v = inv * np.einsum("kc,kc->k", d, qv)
    t = inv * np.einsum("kc,kc->k", e2, qv)
    return int((ok & (u >= 0) & (v >= 0) & (u + v <= 1) & (t >= 0) & (t <= 1)).sum())


def test_self_intersection_check_on_two_triangles():
    """One triangle through another counts; apart, touching at a shared vertex or sharing an edge does not."""
    base = [[0, 0, 0], [2, 0, 0], [0, 2, 0]]
    through = np.array(base + [[0.5, 0.5, -1], [0.6, 0.5, 1], [0.5, 0.6, 1]], float)
    above = through + np.array([0, 0, 0, 2, 2, 2.0])[:, None] * [0, 0, 1]
    shared_vertex = np.array(base + [[0, 0, 0], [1, 1, 1], [-1, 1, 1]], float)  # copies weld by position
    faces = np.array([[0, 1, 2], [3, 4, 5]])
    assert self_intersections(through, faces) > 0
    assert self_intersections(above, faces) == 0
    assert self_intersections(shared_vertex, faces) == 0
    assert self_intersections(np.array(base + [[2, 2, 0.5]], float), np.array([[0, 1, 2], [1, 3, 2]])) == 0


@pytest.fixture(scope="module")
def demo():
    return {name: load_demo_or_mesh(name) for name in DEMO_MESHES}


def _worst_heights(mesh: SurfaceMesh) -> dict[str, np.ndarray]:
    """Heights that push hardest: all down, all up, and random 0/1 per position (neighbours apart)."""
    groups = position_groups(mesh.vertices)
    rng = np.random.default_rng(0)
    cases = {"all 0": np.zeros(len(groups)), "all 1": np.ones(len(groups))}
    for seed in range(3):
        cases[f"random 0/1 #{seed}"] = rng.integers(0, 2, groups.max() + 1).astype(float)[groups]
    return cases


@pytest.mark.parametrize("name", DEMO_MESHES)
def test_default_strength_never_flips_or_self_intersects_a_demo_mesh(demo, name):
    mesh = demo[name]
    bounds = default_strength(mesh.vertices, mesh.faces, vertex_normals(mesh.vertices, mesh.faces))
    diagonal = np.linalg.norm(np.ptp(mesh.vertices, axis=0))
    assert 0.3 * DEFAULT_FRACTION * diagonal < bounds["strength"] <= DEFAULT_FRACTION * diagonal + 1e-12
    assert bounds["strength"] <= 0.5 * bounds["no_flip"] + 1e-12
    pairs = near_pairs(mesh.vertices, mesh.faces, pad=bounds["strength"] / 2)
    assert self_intersections(mesh.vertices, mesh.faces, pairs) == 0  # the mesh itself is clean
    for case, heights in _worst_heights(mesh).items():
        moved, offsets = displace_by(mesh, heights, bounds["strength"])
        assert np.abs(offsets).max() <= bounds["strength"] / 2 + 1e-12
        assert flipped_faces(mesh.vertices, moved.vertices, mesh.faces) == 0, case
        assert self_intersections(moved.vertices, mesh.faces, pairs) == 0, case


def test_the_checks_see_folds_at_an_excessive_strength(demo):
    """The torus at 40x its default strength, all heights 0: the tube (radius 0.28) is pushed
    inward past its axis, so the surface turns inside out and crosses itself."""
    mesh = demo["torus"]
    bounds = default_strength(mesh.vertices, mesh.faces, vertex_normals(mesh.vertices, mesh.faces))
    moved, _ = displace_by(mesh, np.zeros(len(mesh.vertices)), 40 * bounds["strength"])
    assert flipped_faces(mesh.vertices, moved.vertices, mesh.faces) > 0
    rng = np.random.default_rng(1)
    rough, _ = displace_by(mesh, rng.integers(0, 2, len(mesh.vertices)).astype(float), 12 * bounds["strength"])
    assert self_intersections(rough.vertices, mesh.faces) > 0


def test_no_flip_bound_is_a_bound():
    """Random heights at the bound never flip a triangle of a coarse sphere; above it, some do."""
    from nca3d.lattices.mesh import icosphere

    vertices, faces = icosphere(3)
    normals = vertex_normals(vertices, faces)
    bound = no_flip_strength(vertices, faces, normals)
    assert np.isfinite(bound) and bound > 0
    rng = np.random.default_rng(0)
    mesh = SurfaceMesh(vertices, faces, np.zeros((len(vertices), 2)))
    for _ in range(20):
        moved, _ = displace_by(mesh, rng.integers(0, 2, len(vertices)).astype(float), 0.999 * bound)
        assert flipped_faces(vertices, moved.vertices, faces) == 0
    folds = [flipped_faces(vertices, displace_by(mesh, rng.integers(0, 2, len(vertices)).astype(float),
                                                 factor * bound)[0].vertices, faces) for factor in (4, 16)]
    assert 0 < folds[0] < folds[1]
    flat = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [1, 1, 0]], float)
    square = np.array([[0, 1, 2], [1, 3, 2]])
    assert no_flip_strength(flat, square, vertex_normals(flat, square)) == np.inf


def test_seam_copies_move_together_and_sampling_is_bilinear():
    # two triangles sharing an edge through split vertex copies with different UVs
    vertices = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [1, 0, 0], [0, 1, 0], [1, 1, 0.2]], float)
    faces = np.array([[0, 1, 2], [3, 5, 4]])
    uv = np.array([[0.1, 0.1], [0.4, 0.1], [0.1, 0.4], [0.9, 0.9], [0.6, 0.9], [0.6, 0.6]])
    image = np.zeros((8, 8))
    image[:4, 4:] = 1.0  # the top-right quarter (v > 0.5, u > 0.5) is high
    moved, offsets = displace(SurfaceMesh(vertices, faces, uv), image, strength=0.1)
    assert np.allclose(moved.vertices[1], moved.vertices[3]) and np.allclose(moved.vertices[2], moved.vertices[4])
    assert np.isclose(offsets[1], 0.1 * (0.5 - 0.5)) and np.isclose(offsets[0], -0.05)
    ramp = np.tile(np.arange(4.0), (4, 1))  # value = column index; texel centres at (i + 0.5) / 4
    assert np.allclose(sample_bilinear(ramp, np.array([[0.375, 0.5], [0.625, 0.2], [0.125, 0.9]])), [1.0, 2.0, 0.0])
