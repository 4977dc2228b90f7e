"""Reading user meshes (OBJ, PLY, STL, OFF, GLB, glTF) into one clean triangle mesh."""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import NCA3DError, require

MESH_SUFFIXES = (".obj", ".ply", ".stl", ".off", ".glb", ".gltf")
FORMATS = "OBJ, PLY, STL, OFF, GLB or glTF"


@dataclass
class SurfaceMesh:
    """A triangle mesh in object space.

    vertices (V, 3) float64; faces (F, 3) int64, counter-clockwise seen from outside;
    uv (V, 2) float64 per vertex (OpenGL convention: v = 0 is the bottom row of an image) or
    None; vertices are duplicated along UV seams, so `uv` is per vertex.
    """

    vertices: np.ndarray
    faces: np.ndarray
    uv: np.ndarray | None = None
    name: str = "mesh"


def weld(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Merge equal rows of keys (V, K): returns (first (W,), index (V,)) with keys[first][index] == keys.

    Welded rows keep the order of their first occurrence; -0.0 equals 0.0.
    """
    _, first, inverse = np.unique(keys + 0.0, axis=0, return_index=True, return_inverse=True)
    order = np.argsort(first)
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    return first[order], rank[inverse.ravel()]


def clean_faces(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Faces (F, 3) -> (F', 3) without zero-area triangles and without repeats of a triangle.

    A repeat has the same three positions in the same cyclic order (a rotated index order counts,
    the reversed orientation does not); the first occurrence is kept and the order is kept.
    """
    _, position = weld(vertices)
    tri = position[faces]
    start = np.argmin(tri, axis=1)[:, None]
    canonical = np.take_along_axis(tri, (start + np.arange(3)) % 3, axis=1)
    _, first = np.unique(canonical, axis=0, return_index=True)
    keep = np.zeros(len(faces), dtype=bool)
    keep[first] = True
    corners = vertices[faces]
    edges = corners[:, [1, 2, 0]] - corners
    twice_area = np.linalg.norm(np.cross(edges[:, 0], -edges[:, 2]), axis=1)
    longest = np.max(np.einsum("fij,fij->fi", edges, edges), axis=1)
    keep &= twice_area > 1e-12 * longest
    return faces[keep]


def load_mesh(path: str | os.PathLike) -> SurfaceMesh:
    """Read a triangle mesh; a scene's meshes are merged into one with their node transforms applied.

    UVs are kept when every part has finite ones. Exact duplicate faces, zero-area faces and unreferenced
    vertices are removed and vertices with equal position (and UV) are welded; open, multi-part and
    non-manifold meshes are kept as they are. The result is deterministic.
    """
    trimesh = require("trimesh", None, "Reading meshes")
    path = Path(path)
    if not path.is_file():
        raise NCA3DError(f"mesh file '{path}' not found; check the path")
    if path.suffix.lower() not in MESH_SUFFIXES:
        raise NCA3DError(f"'{path}' has an unsupported mesh format '{path.suffix}'; export it as {FORMATS}")
    try:
        with warnings.catch_warnings():  # a huge texture image: only the geometry and UVs are used
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            # an OBJ's texture files are not decoded at all (a glTF would lose its UVs with them)
            skip = {"skip_materials": True} if path.suffix.lower() == ".obj" else {}
            scene = trimesh.load_scene(path, process=False, **skip)
            parts = scene.dump()
    except Exception as exc:  # noqa: BLE001 - trimesh raises many types on malformed files
        raise NCA3DError(f"'{path}' is not a readable {path.suffix[1:].upper()} mesh ({exc}); "
                         f"export it again as {FORMATS}") from None
    meshes = [part for part in parts if isinstance(part, trimesh.Trimesh) and len(part.faces)]
    if any(m.faces.min() < 0 or m.faces.max() >= len(m.vertices) for m in meshes):
        raise NCA3DError(f"'{path}' has faces that refer to missing vertices; export it again as {FORMATS}")
    if not meshes:
        cloud = any(len(part.vertices) for part in parts)
        kind = "a point cloud (vertices only)" if cloud else f"empty or not a valid {path.suffix[1:].upper()} file"
        raise NCA3DError(f"'{path}' holds no triangles: it is {kind}; export a surface mesh with faces as {FORMATS}")
    vertices = np.concatenate([np.asarray(m.vertices, dtype=np.float64) for m in meshes])
    offsets = np.cumsum([0] + [len(m.vertices) for m in meshes])[:-1]
    faces = np.concatenate([np.asarray(m.faces, dtype=np.int64) + o for m, o in zip(meshes, offsets)])
    if not np.isfinite(vertices).all():
        bad = int((~np.isfinite(vertices).all(axis=1)).sum())
        raise NCA3DError(f"'{path}' has NaN or infinite coordinates at {bad} of {len(vertices)} vertices; "
                         "fix or re-export the mesh")
    uvs = [getattr(m.visual, "uv", None) for m in meshes]
    uv = None
    if all(u is not None and len(u) == len(m.vertices) for u, m in zip(uvs, meshes)):
        uv = np.concatenate([np.asarray(u, dtype=np.float64)[:, :2] for u in uvs])
        if not np.isfinite(uv).all():
            uv = None
    faces = clean_faces(vertices, faces)
    if len(faces) == 0:
        raise NCA3DError(f"'{path}' has zero surface area (every triangle is degenerate); export a real surface")
    used = np.zeros(len(vertices), dtype=bool)
    used[faces.ravel()] = True
    keys = vertices if uv is None else np.concatenate([vertices, uv], axis=1)
    first, index = weld(keys[used])
    remap = np.full(len(vertices), -1, dtype=np.int64)
    remap[used] = index
    return SurfaceMesh(
        vertices=vertices[used][first],
        faces=remap[faces],
        uv=None if uv is None else uv[used][first],
        name=path.stem,
    )
