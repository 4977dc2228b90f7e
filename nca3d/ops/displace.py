"""Height as displacement: move a UV-mapped mesh's vertices along their normals by a baked height map.

Each vertex moves by strength x (height - 0.5) along its unit normal, the height sampled
bilinearly at its UV (the midlevel 0.5 is Blender's Displacement node default, so a Cycles
material with Scale = strength displaces by the same amount). Vertices split along UV seams
share a position: their samples are averaged and they share one normal, so they move together
and no crack opens.

The default strength is DEFAULT_FRACTION of the mesh's bounding-box diagonal, capped at
SAFE_FRACTION of `no_flip_strength`: the largest strength at which no triangle can turn over
(its displaced normal stay within 90 degrees of the original) whatever the heights in [0, 1]
are. That bound is local feature size in the sense that matters: it shrinks with curvature
radius (an inward offset beyond it folds the surface) and with small triangles.
"""

from __future__ import annotations

import numpy as np

from ..io.mesh import SurfaceMesh
from .bake import sample_bilinear

MIDLEVEL = 0.5
DEFAULT_FRACTION = 0.02  # of the bounding-box diagonal
SAFE_FRACTION = 0.5  # of the no-flip bound


def position_groups(vertices: np.ndarray) -> np.ndarray:
    """(V,) group index: vertices at the same position to 1e-9 of the mesh size (UV seam copies) share one."""
    vertices = np.asarray(vertices, dtype=np.float64)
    quantum = max(float(np.ptp(vertices, axis=0).max()), 1e-300) * 1e-9
    _, groups = np.unique(np.round(vertices / quantum), axis=0, return_inverse=True)
    return groups.reshape(-1)


def face_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Unnormalised face normals (F, 3), length twice the area."""
    corners = np.asarray(vertices, dtype=np.float64)[faces]
    return np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])


def no_flip_strength(vertices: np.ndarray, faces: np.ndarray, normals: np.ndarray) -> float:
    """The largest strength s at which no triangle can flip, for any heights in [0, 1].

    Each vertex moves by d_i n_i with |d_i| <= s/2. Only the components of the moves in the
    triangle's plane, of length at most s/2 sin(angle(n_i, N)) = s/2 t_i, change its normal's
    component along the face normal N: with edges e1 = p1 - p0, e2 = p2 - p0 (area A),
        (q1 - q0) x (q2 - q0) . N >= 2A - x (|e1| (t0 + t2) + |e2| (t0 + t1)) - x^2 (t0 + t1)(t0 + t2)
    for x = s/2, which stays positive below the quadratic's root. The bound is a sufficient
    condition: the minimum over faces (best of the three corner orders) is returned; inf for a
    flat mesh (all normals equal to their faces')."""
    vertices = np.asarray(vertices, dtype=np.float64)
    faces = np.asarray(faces, dtype=np.int64)
    n_face = face_normals(vertices, faces)
    twice_area = np.linalg.norm(n_face, axis=1)
    unit = n_face / np.maximum(twice_area, 1e-300)[:, None]
    cosines = np.einsum("fkc,fc->fk", np.asarray(normals, dtype=np.float64)[faces], unit)
    tilt = np.sqrt(np.clip(1.0 - cosines ** 2, 0.0, None))  # sin of each corner normal's angle to N
    corners = vertices[faces]
    best = np.zeros(len(faces))
    for shift in range(3):
        order = (np.arange(3) + shift) % 3
        p, t = corners[:, order], tilt[:, order]
        e1 = np.linalg.norm(p[:, 1] - p[:, 0], axis=1)
        e2 = np.linalg.norm(p[:, 2] - p[:, 0], axis=1)
        a = (t[:, 0] + t[:, 1]) * (t[:, 0] + t[:, 2])
        b = e1 * (t[:, 0] + t[:, 2]) + e2 * (t[:, 0] + t[:, 1])
        c = twice_area
        with np.errstate(divide="ignore", invalid="ignore"):
            root = np.where(a > 1e-15, (-b + np.sqrt(b * b + 4 * a * c)) / (2 * np.maximum(a, 1e-300)),
                            np.where(b > 1e-300, c / np.maximum(b, 1e-300), np.inf))
        best = np.maximum(best, root)
    return float(2.0 * best.min()) if len(best) else float("inf")


def default_strength(vertices: np.ndarray, faces: np.ndarray, normals: np.ndarray) -> dict:
    """{"strength", "nominal" (DEFAULT_FRACTION of the bounding-box diagonal), "no_flip"}."""
    vertices = np.asarray(vertices, dtype=np.float64)
    used = vertices[np.unique(faces)]
    nominal = DEFAULT_FRACTION * float(np.linalg.norm(np.ptp(used, axis=0)))
    safe = no_flip_strength(vertices, faces, normals)
    return {"strength": min(nominal, SAFE_FRACTION * safe), "nominal": nominal, "no_flip": safe}


def displace(mesh: SurfaceMesh, height: np.ndarray, strength: float, midlevel: float = MIDLEVEL
             ) -> tuple[SurfaceMesh, np.ndarray]:
    """Move each vertex by strength x (height at its UV - midlevel) along its unit normal.

    height (H, W) in [0, 1] (row 0 at the top, v = 1). Seam copies (same position) average their
    samples and share the area-weighted normal, so they stay together. Returns the displaced mesh
    (same faces and UVs) and the per-vertex offsets (V,) in mesh units."""
    if mesh.uv is None:
        raise ValueError("displacement needs a mesh with UVs")
    return displace_by(mesh, sample_bilinear(np.asarray(height, dtype=np.float64), mesh.uv), strength, midlevel)


def displace_by(mesh: SurfaceMesh, heights: np.ndarray, strength: float, midlevel: float = MIDLEVEL
                ) -> tuple[SurfaceMesh, np.ndarray]:
    """`displace` with the heights (V,) given per vertex; seam copies move by their mean."""
    from .bake import vertex_normals

    normals = vertex_normals(mesh.vertices, mesh.faces)
    groups = position_groups(mesh.vertices)
    total = np.bincount(groups, weights=np.asarray(heights, dtype=np.float64))
    shared = (total / np.maximum(np.bincount(groups), 1))[groups]
    offsets = strength * (shared - midlevel)
    vertices = np.asarray(mesh.vertices, dtype=np.float64) + offsets[:, None] * normals
    return SurfaceMesh(vertices, mesh.faces, mesh.uv, mesh.name), offsets


def flipped_faces(before: np.ndarray, after: np.ndarray, faces: np.ndarray) -> int:
    """Triangles whose displaced normal points away from their original one (dot <= 0)."""
    return int((np.einsum("fc,fc->f", face_normals(before, faces), face_normals(after, faces)) <= 0).sum())
