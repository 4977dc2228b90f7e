"""Mesh exchange with the backend: the evaluated mesh out as OBJ, the backend's unwrapped OBJ back in.

Vertices are written in world orientation and scale but without the translation (the object's
3x3 matrix applied), so the texture's cells are uniform in world units whatever the object's
scale; a mesh read back gets the inverse applied, landing in the object's local space again.
"""

from __future__ import annotations

import io

import bpy
import numpy as np


class MeshError(Exception):
    """A mesh that cannot be textured (one clear line)."""


def _linear(obj) -> np.ndarray:
    matrix = np.array(obj.matrix_world.to_3x3(), dtype=np.float64)
    if abs(np.linalg.det(matrix)) < 1e-12:
        raise MeshError(f"'{obj.name}' has a zero scale on some axis; fix its scale and try again")
    return matrix


def export_evaluated_obj(context, obj, path: str) -> dict:
    """Write `obj`'s evaluated mesh (modifiers applied) as a triangulated OBJ with the active UV map.

    Returns {"uv_name": name or None, "vertices": n, "triangles": n}."""
    linear = _linear(obj)
    depsgraph = context.evaluated_depsgraph_get()
    evaluated = obj.evaluated_get(depsgraph)
    mesh = evaluated.to_mesh()
    try:
        mesh.calc_loop_triangles()
        n_vert, n_tri, n_loop = len(mesh.vertices), len(mesh.loop_triangles), len(mesh.loops)
        if n_tri == 0:
            raise MeshError(f"'{obj.name}' has no faces to texture (after its modifiers)")
        co = np.empty(n_vert * 3, dtype=np.float32)
        mesh.vertices.foreach_get("co", co)
        co = co.reshape(-1, 3).astype(np.float64) @ linear.T
        tri_verts = np.empty(n_tri * 3, dtype=np.int32)
        mesh.loop_triangles.foreach_get("vertices", tri_verts)
        tri_loops = np.empty(n_tri * 3, dtype=np.int32)
        mesh.loop_triangles.foreach_get("loops", tri_loops)
        uv_layer = mesh.uv_layers.active
        uv = None
        if uv_layer is not None and n_loop:
            uv = np.empty(n_loop * 2, dtype=np.float32)
            uv_layer.uv.foreach_get("vector", uv)
            uv = uv.reshape(-1, 2)
            if not np.isfinite(uv).all():
                raise MeshError(f"the UV map '{uv_layer.name}' of '{obj.name}' has invalid (NaN) coordinates")
        text = io.StringIO()
        text.write(f"# nca3d Blender add-on: {obj.name}\n")
        np.savetxt(text, co, fmt="v %.9g %.9g %.9g")
        if uv is not None:
            np.savetxt(text, uv.astype(np.float64), fmt="vt %.9g %.9g")
            corners = np.stack([tri_verts + 1, tri_loops + 1], axis=1).reshape(-1, 6)
            np.savetxt(text, corners, fmt="f %d/%d %d/%d %d/%d")
        else:
            np.savetxt(text, tri_verts.reshape(-1, 3) + 1, fmt="f %d %d %d")
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(text.getvalue())
        return {"uv_name": uv_layer.name if uv is not None else None, "vertices": n_vert, "triangles": n_tri}
    finally:
        evaluated.to_mesh_clear()


def read_obj(path: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A triangle OBJ with UVs -> (vertices (N,3), uvs (M,2), faces (F,3) vertex indices,
    face_uvs (F,3) uv indices), 0-based."""
    vertices, uvs, faces, face_uvs = [], [], [], []
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            if line.startswith("v "):
                vertices.append(line.split()[1:4])
            elif line.startswith("vt "):
                uvs.append(line.split()[1:3])
            elif line.startswith("f "):
                corners = line.split()[1:]
                if len(corners) != 3:
                    raise MeshError(f"'{path}' has a face with {len(corners)} corners; expected triangles")
                parts = [c.split("/") for c in corners]
                faces.append([int(p[0]) for p in parts])
                face_uvs.append([int(p[1]) if len(p) > 1 and p[1] else 0 for p in parts])
    if not faces or not uvs:
        raise MeshError(f"the backend's mesh '{path}' has no faces or no UVs")
    v = np.asarray(vertices, dtype=np.float64)
    t = np.asarray(uvs, dtype=np.float64)
    f = np.asarray(faces, dtype=np.int64)
    ft = np.asarray(face_uvs, dtype=np.int64)
    f = np.where(f < 0, f + len(v), f - 1)
    ft = np.where(ft < 0, ft + len(t), ft - 1)
    if f.min() < 0 or f.max() >= len(v) or ft.min() < 0 or ft.max() >= len(t):
        raise MeshError(f"the backend's mesh '{path}' refers to missing vertices or UVs")
    return v, t, f, ft


def mesh_from_obj(path: str, obj, name: str, uv_name: str = "UVMap", smooth: bool = True):
    """A new mesh datablock from the backend's unwrapped OBJ, in `obj`'s local space.

    Vertices the unwrap split at UV seams are welded again (same position), so the surface stays
    connected; UVs are per face corner."""
    vertices, uvs, faces, face_uvs = read_obj(path)
    vertices = vertices @ np.linalg.inv(_linear(obj)).T
    unique, inverse = np.unique(vertices, axis=0, return_inverse=True)
    faces = inverse.reshape(-1)[faces]
    mesh = bpy.data.meshes.new(name)
    try:
        mesh.from_pydata(unique.tolist(), [], faces.tolist())
        layer = mesh.uv_layers.new(name=uv_name)
        layer.uv.foreach_set("vector", uvs[face_uvs.reshape(-1)].astype(np.float32).ravel())
        mesh.polygons.foreach_set("use_smooth", [smooth] * len(mesh.polygons))
        mesh.validate(clean_customdata=False)
        mesh.update()
    except Exception:
        bpy.data.meshes.remove(mesh)
        raise
    return mesh


def object_size(obj) -> float:
    """The largest world-space extent of the object (for a displacement scale)."""
    size = max(obj.dimensions) if obj.dimensions else 0.0
    return float(size) if size > 0 else 1.0
