"""The cell lattice of a user mesh: an isotropic remesh with one target edge length everywhere.

The cells of a mesh texture are the lattice vertices, so the texture scale follows the lattice
spacing; remeshing makes it the same all over the surface whatever the input triangulation.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from ..errors import NCA3DError, require
from ..io.mesh import clean_faces, weld

CELL_AREA = np.sqrt(3.0) / 2.0  # area per vertex of an equilateral lattice with edge 1
# Before the remesher: edges touching the boundary are split to 4/3 of the spacing (the remesher keeps
# boundary vertices fixed and leaves long edges at them); other edges only beyond INTERIOR_LONGEST
# spacings (the remesher splits the rest itself, faster on the smaller mesh), unless the mesh is
# coarse (median edge over COARSE_INPUT spacings): then all of it, whose subdivision is a more
# regular start (valence 6) than the remesher's own splits.
INTERIOR_LONGEST = 4.0
COARSE_INPUT = 3.0


@dataclass
class LatticeMesh:
    """Lattice vertices (N, 3) float64 and faces (M, 3) int64 with target edge length `spacing`.

    stats: cells, faces, components, dropped_components, edge_p5 / edge_median / edge_p95
    (edge lengths over spacing) and valence6 (share of interior vertices with six neighbours).
    """

    vertices: np.ndarray
    faces: np.ndarray
    spacing: float
    stats: dict


def uniform_lattice(
    vertices: np.ndarray,
    faces: np.ndarray,
    spacing: float | None = None,
    cells: int | None = None,
    iterations: int = 6,
) -> LatticeMesh:
    """Remesh vertices (V, 3) / faces (F, 3) into near-equilateral triangles of edge `spacing`.

    Give exactly one of spacing (object units) or cells (about that many lattice vertices: the
    surface area over the area per vertex of an equilateral lattice, sqrt(3) / 2 spacing^2).
    Vertices are welded by position (UV seams are ignored) and faces are oriented consistently;
    non-manifold edges become boundaries and non-manifold vertices are split. The remesher keeps
    boundary vertices fixed, so boundaries get the target density first (long boundary edges are
    split, runs of short ones collapsed; see INTERIOR_LONGEST). Each connected part is remeshed on
    its own (`iterations` rounds) with its vertices projected onto the input surface; parts with
    less area than one cell are dropped.
    """
    gpytoolbox = require("gpytoolbox", None, "Remeshing a mesh into a cell lattice")
    if (spacing is None) == (cells is None):
        raise NCA3DError("give exactly one of spacing (lattice edge length) or cells (lattice vertex count)")
    vertices = np.asarray(vertices, dtype=np.float64)
    first, index = weld(vertices)
    vertices = vertices[first]
    faces = clean_faces(vertices, index[np.asarray(faces, dtype=np.int64)])
    area = float(face_areas(vertices, faces).sum())
    if not area > 0:
        raise NCA3DError("the mesh has zero surface area; a cell lattice needs a real surface")
    if cells is not None:
        if cells < 1:
            raise NCA3DError(f"cells must be a positive count, got {cells}")
        spacing = np.sqrt(area / (CELL_AREA * cells))
    if not (np.isfinite(spacing) and spacing > 0):
        raise NCA3DError(f"spacing must be a positive length, got {spacing}")
    spacing = float(spacing)
    vertices, faces = split_corners(vertices, orient_faces(vertices, faces))
    tail, head, _ = half_edges(faces)
    coarse = np.median(np.linalg.norm(vertices[head] - vertices[tail], axis=1)) > COARSE_INPUT * spacing
    longest = 4.0 / 3.0 * spacing
    vertices, faces = refine(vertices, faces, longest if coarse else INTERIOR_LONGEST * spacing, longest)
    faces = coarsen_boundary(vertices, faces, 4.0 / 3.0 * spacing, spacing / 4.0)
    parts, dropped = [], 0
    for part_vertices, part_faces in components(vertices, faces):
        if face_areas(part_vertices, part_faces).sum() < CELL_AREA * spacing**2:
            dropped += 1
            continue
        with warnings.catch_warnings():  # a part whose vertices all lie on its boundary stays as it is
            warnings.filterwarnings("ignore", message="All vertices in the input mesh")
            part = gpytoolbox.remesh_botsch(part_vertices, part_faces.astype(np.int32), iterations, spacing, True)
        parts.append(part)
    if not parts:
        raise NCA3DError(f"every part of the mesh is smaller than one cell at spacing {spacing:g}; use more cells")
    offsets = np.cumsum([0] + [len(v) for v, _ in parts])[:-1]
    out_vertices = np.concatenate([v for v, _ in parts]).astype(np.float64)
    out_faces = np.concatenate([f.astype(np.int64) + o for (_, f), o in zip(parts, offsets)])
    stats = lattice_stats(out_vertices, out_faces, spacing)
    stats.update(components=len(parts), dropped_components=dropped)
    return LatticeMesh(out_vertices, out_faces, spacing, stats)


def face_areas(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Triangle areas (F,) of vertices (V, 3) / faces (F, 3)."""
    return 0.5 * np.linalg.norm(face_normals(vertices, faces), axis=1)


def half_edges(faces: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Half-edge h = 3 f + k runs from faces[f, k] to faces[f, k+1]: (tail (3F,), head (3F,), edge (3F,)).

    edge numbers the undirected edges 0..E-1.
    """
    tail = faces.ravel()
    head = faces[:, [1, 2, 0]].ravel()
    key = np.minimum(tail, head) * (faces.max(initial=0) + 1) + np.maximum(tail, head)
    _, edge = np.unique(key, return_inverse=True)
    return tail, head, edge


def shared_edges(faces: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The edges with exactly two faces as half-edge pairs: (tail, head, one (S,), two (S,)); see half_edges."""
    tail, head, edge = half_edges(faces)
    shared = np.flatnonzero(np.bincount(edge)[edge] == 2)
    shared = shared[np.argsort(edge[shared], kind="stable")]
    return tail, head, shared[0::2], shared[1::2]


def orient_faces(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Flip faces (F, 3) so that two faces on an edge run it in opposite directions wherever possible.

    Orientation spreads over a spanning tree of the faces joined by two-face edges; in each
    connected part the orientation of the larger area wins. Returns faces (F, 3).
    """
    csgraph = require("scipy.sparse.csgraph", None, "Remeshing a mesh into a cell lattice")
    sparse = require("scipy.sparse", None, "Remeshing a mesh into a cell lattice")
    count = len(faces)
    tail, _, one, two = shared_edges(faces)
    pairs = np.stack([np.minimum(one, two) // 3, np.maximum(one, two) // 3, tail[one] == tail[two]], axis=1)
    pairs = pairs[np.unique(pairs[:, 0] * count + pairs[:, 1], return_index=True)[1]]  # faces may share several edges
    _, part = csgraph.connected_components(
        sparse.coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(count, count)), directed=False)
    roots = np.unique(part, return_index=True)[1]
    # clash + 1 on each face pair, and a virtual node `count` above the first face of every part
    rows = np.concatenate([pairs[:, 0], roots])
    cols = np.concatenate([pairs[:, 1], np.full(len(roots), count)])
    clash = sparse.coo_matrix((np.concatenate([pairs[:, 2] + 1, np.ones(len(roots))]), (rows, cols)),
                              shape=(count + 1, count + 1)).tocsr()
    clash = clash + clash.T
    _, parent = csgraph.breadth_first_order(clash, count, directed=False, return_predecessors=True)
    parent = parent[:count]
    flip = np.asarray(clash[np.arange(count), parent]).ravel().astype(np.int64) - 1  # flip relative to parent
    parent[parent == count] = roots[part[parent == count]]
    flip[roots] = 0
    while np.any(parent[parent] != parent):  # pointer jumping: flip relative to the part's root
        flip ^= flip[parent]
        parent = parent[parent]
    area = face_areas(vertices, faces)
    flipped_area = np.bincount(part, weights=area * flip)
    flip ^= (2 * flipped_area > np.bincount(part, weights=area))[part]
    return np.where(flip[:, None].astype(bool), faces[:, [0, 2, 1]], faces)


def split_corners(vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Make a mesh manifold: edges shared by other than two consistently oriented faces become boundaries.

    Triangle corners at one vertex are joined across every edge with exactly two faces whose
    orientations agree; each joined class of corners becomes a vertex, so non-manifold vertices
    (bowties) are split too. Returns vertices (V', 3), faces (F, 3).
    """
    csgraph = require("scipy.sparse.csgraph", None, "Remeshing a mesh into a cell lattice")
    sparse = require("scipy.sparse", None, "Remeshing a mesh into a cell lattice")
    tail, head, one, two = shared_edges(faces)
    consistent = tail[one] == head[two]
    one, two = one[consistent], two[consistent]
    following = 3 * (np.arange(3 * len(faces)) // 3) + (np.arange(3 * len(faces)) + 1) % 3
    # half-edge one runs a -> b and two runs b -> a: join corner `one` (at a) with the corner after
    # `two` (at a), and the corner after `one` (at b) with corner `two` (at b).
    rows = np.concatenate([one, following[one]])
    cols = np.concatenate([following[two], two])
    graph = sparse.coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(3 * len(faces),) * 2)
    count, label = csgraph.connected_components(graph, directed=False)
    corner_vertex = np.zeros(count, dtype=np.int64)
    corner_vertex[label] = tail
    return vertices[corner_vertex], label.reshape(-1, 3).astype(np.int64)


def refine(vertices: np.ndarray, faces: np.ndarray, longest: float, boundary_longest: float | None = None
           ) -> tuple[np.ndarray, np.ndarray]:
    """Split edges at their midpoints until none is longer than `longest`, and none with an end on
    the boundary longer than `boundary_longest` (default `longest`): conforming red-green splits.

    The remesher keeps boundary vertices fixed and refines big triangles only slowly, so boundaries
    and big triangles get the target density here. Returns vertices (V', 3), faces (F', 3).
    """
    boundary_longest = longest if boundary_longest is None else boundary_longest
    while True:
        tail, head, edge = half_edges(faces)
        length = np.linalg.norm(vertices[head] - vertices[tail], axis=1)
        on_boundary = np.zeros(len(vertices), dtype=bool)
        on_boundary[tail[np.bincount(edge)[edge] == 1]] = True
        boundary = on_boundary[tail] | on_boundary[head]
        split_edge = np.zeros(edge.max() + 1, dtype=bool)
        split_edge[edge[(length > longest) | (boundary & (length > boundary_longest))]] = True
        if not split_edge.any():
            return vertices, faces
        midpoint = np.full(len(split_edge), -1, dtype=np.int64)
        midpoint[split_edge] = len(vertices) + np.arange(split_edge.sum())
        ends = np.zeros((len(split_edge), 2), dtype=np.int64)
        ends[edge] = np.stack([tail, head], axis=1)
        vertices = np.concatenate([vertices, vertices[ends[split_edge]].mean(axis=1)])
        split = split_edge[edge].reshape(-1, 3)  # split[f, k]: edge faces[f, k] -> faces[f, k+1]
        mid = midpoint[edge].reshape(-1, 3)
        count = split.sum(axis=1)
        # rotate each face so that its split edges come first: k0 = first split edge after an unsplit one
        start = np.where(count == 2, (np.argmin(split, axis=1) + 1) % 3, np.argmax(split, axis=1))
        roll = (start[:, None] + np.arange(3)) % 3
        a, b, c = np.take_along_axis(faces, roll, axis=1).T
        ab, bc, ca = np.take_along_axis(mid, roll, axis=1).T
        one, two, three = count == 1, count == 2, count == 3
        # two splits (ab, bc): cut the quad a, ab, bc, c along its shorter diagonal
        short = np.linalg.norm(vertices[a] - vertices[bc], axis=1) <= np.linalg.norm(vertices[ab] - vertices[c], axis=1)
        s, t = two & short, two & ~short
        faces = np.concatenate([
            faces[count == 0],
            np.stack([a, ab, c], axis=1)[one], np.stack([ab, b, c], axis=1)[one],
            np.stack([ab, b, bc], axis=1)[two],
            np.stack([a, ab, bc], axis=1)[s], np.stack([a, bc, c], axis=1)[s],
            np.stack([a, ab, c], axis=1)[t], np.stack([ab, bc, c], axis=1)[t],
            np.stack([a, ab, ca], axis=1)[three], np.stack([ab, b, bc], axis=1)[three],
            np.stack([ca, bc, c], axis=1)[three], np.stack([ab, bc, ca], axis=1)[three],
        ])


def coarsen_boundary(vertices: np.ndarray, faces: np.ndarray, longest: float, tolerance: float) -> np.ndarray:
    """Collapse boundary vertices into a boundary neighbour while the new boundary edge is short.

    The remesher cannot move boundary vertices, so a finely triangulated boundary would keep its
    density. Vertex v between boundary neighbours u and w goes when |u - w| <= longest and v lies
    within `tolerance` of segment u-w; it moves onto the nearer of u and w for which the collapse
    keeps the mesh manifold (link condition), turns no face by more than 60 degrees and makes no
    edge longer than `longest`. Rounds of collapses three edges apart run until none is left.
    Returns faces (F', 3) into the same vertices.
    """
    sparse = require("scipy.sparse", None, "Remeshing a mesh into a cell lattice")
    n = len(vertices)
    while True:
        tail, head, edge = half_edges(faces)
        boundary = np.bincount(edge)[edge] == 1
        after = np.full(n, -1)
        before = np.full(n, -1)
        after[tail[boundary]] = head[boundary]
        before[head[boundary]] = tail[boundary]
        v = np.flatnonzero(after >= 0)
        u, w = before[v], after[v]
        chord = vertices[w] - vertices[u]
        offset = vertices[v] - vertices[u]
        chord2 = np.einsum("ij,ij->i", chord, chord)
        along = np.clip(np.einsum("ij,ij->i", offset, chord) / np.maximum(chord2, 1e-300), 0.0, 1.0)
        ok = (after[w] != u) & (chord2 <= longest**2)
        ok &= np.linalg.norm(offset - along[:, None] * chord, axis=1) <= tolerance
        # candidate k collapses onto u (option k) or onto w (option k + K)
        v, chord2, count = v[ok], chord2[ok], int(ok.sum())
        target = np.concatenate([u[ok], w[ok]])
        adjacency = sparse.csr_matrix((np.ones(len(tail)), (tail, head)), shape=(n, n))
        adjacency = ((adjacency + adjacency.T) > 0).astype(np.float32)
        ok = np.asarray(adjacency[np.tile(v, 2)].multiply(adjacency[target]).sum(axis=1)).ravel() == 1
        # the faces around v move their corner v to the target
        slot = np.full(n, -1)
        slot[v] = np.arange(count)
        corner = np.flatnonzero(slot[faces.ravel()] >= 0)
        option = np.concatenate([slot[faces.ravel()[corner]], slot[faces.ravel()[corner]] + count])
        corner = np.tile(corner, 2)
        moved = faces[corner // 3]
        live = ~(moved == target[option, None]).any(axis=1)
        old_normal = face_normals(vertices, moved)
        moved[np.arange(len(corner)), corner % 3] = target[option]
        new_normal = face_normals(vertices, moved)
        cosine = np.einsum("ij,ij->i", old_normal, new_normal)
        turned = cosine <= 0.5 * np.linalg.norm(old_normal, axis=1) * np.linalg.norm(new_normal, axis=1)
        stretched = np.linalg.norm(vertices[moved] - vertices[target[option], None], axis=2).max(axis=1) > longest
        ok[option[live & (turned | stretched)]] = False
        # each vertex goes onto its nearer valid option
        reach = np.where(ok, np.linalg.norm(vertices[target] - vertices[np.tile(v, 2)], axis=1), np.inf)
        target = np.where(reach[count:] < reach[:count], target[count:], target[:count])
        ok = np.minimum(reach[:count], reach[count:]) < np.inf
        if not ok.any():
            return faces
        # collapses at least three edges apart: a candidate wins against all within two edges
        v, target = v[ok], target[ok]
        rank = np.empty(len(v), dtype=np.int64)
        rank[np.lexsort((v, chord2[ok]))] = np.arange(len(v))
        priority = np.full(n, len(v))
        priority[v] = rank
        ring = priority
        for _ in range(2):
            near = ring.copy()
            np.minimum.at(near, tail, ring[head])
            np.minimum.at(near, head, ring[tail])
            ring = near
        chosen = ring[v] == rank
        remap = np.arange(n)
        remap[v[chosen]] = target[chosen]
        faces = remap[faces]
        faces = faces[(faces[:, 0] != faces[:, 1]) & (faces[:, 1] != faces[:, 2]) & (faces[:, 2] != faces[:, 0])]


def face_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Unnormalised face normals (F, 3), length twice the area."""
    corners = vertices[faces]
    return np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])


def components(vertices: np.ndarray, faces: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """Split a mesh into its edge-connected components: [(vertices (Vi, 3), faces (Fi, 3))], largest first."""
    csgraph = require("scipy.sparse.csgraph", None, "Remeshing a mesh into a cell lattice")
    sparse = require("scipy.sparse", None, "Remeshing a mesh into a cell lattice")
    tail, head, _ = half_edges(faces)
    graph = sparse.coo_matrix((np.ones(len(tail)), (tail, head)), shape=(len(vertices),) * 2)
    _, label = csgraph.connected_components(graph, directed=False)
    face_label = label[faces[:, 0]]
    order = np.argsort(face_label, kind="stable")
    _, starts, sizes = np.unique(face_label[order], return_index=True, return_counts=True)
    parts = []
    for i in np.argsort(-sizes, kind="stable"):
        part_faces = faces[order[starts[i]:starts[i] + sizes[i]]]
        used, local = np.unique(part_faces, return_inverse=True)
        parts.append((vertices[used], local.reshape(-1, 3)))
    return parts


def lattice_stats(vertices: np.ndarray, faces: np.ndarray, spacing: float) -> dict:
    """Cells, faces, edge length percentiles over spacing, share of interior vertices of valence 6."""
    tail, head, edge = half_edges(faces)
    per_edge = np.bincount(edge)
    ends = np.zeros((len(per_edge), 2), dtype=np.int64)
    ends[edge] = np.stack([tail, head], axis=1)
    lengths = np.linalg.norm(vertices[ends[:, 0]] - vertices[ends[:, 1]], axis=1) / spacing
    valence = np.bincount(ends.ravel(), minlength=len(vertices))
    boundary = np.zeros(len(vertices), dtype=bool)
    boundary[ends[per_edge == 1].ravel()] = True
    interior = valence[~boundary]
    p5, median, p95 = np.percentile(lengths, [5, 50, 95])
    return {
        "cells": len(vertices),
        "faces": len(faces),
        "edge_p5": float(p5),
        "edge_median": float(median),
        "edge_p95": float(p95),
        "valence6": float(np.mean(interior == 6)) if len(interior) else 0.0,
    }
