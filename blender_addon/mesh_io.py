"""Mesh exchange with the backend: the mesh out as OBJ, and UVs for a mesh that has none.

Vertices are written in world orientation and scale but without the translation (the object's
3x3 matrix applied), so the texture's cells are uniform in world units whatever the object's
scale.

A mesh without a UV map gets a new one on its own data (its vertices, vertex groups, shape keys
and modifiers untouched). Blender stores UVs per face corner, one UV island per polygon:
* a mesh of triangles only is unwrapped by the backend (nca3d.ops.uv) and its output triangles are
  matched back to the exported ones by their corner positions (the backend drops degenerate and
  repeated triangles and splits vertices at seams, so indices alone do not match);
* a mesh with quads or n-gons is unwrapped here with Smart UV Project (on a temporary copy):
  the backend charts triangles, and it splits a quad's two triangles into different charts, which a
  polygon's single set of corner UVs cannot hold.
The geometry exported is the evaluated mesh (modifiers applied) when its topology is the base
mesh's; when modifiers change the topology (Subdivision, Mirror...), the base mesh is unwrapped and
baked, and the modifiers carry the new UV map along.
"""

from __future__ import annotations

import io
import math

import bpy
import numpy as np

UV_NAME = "UVMap"  # the new UV map of a mesh that had none (Blender's own name for a first UV map)


class MeshError(Exception):
    """A mesh that cannot be textured (one clear line)."""


def _linear(obj) -> np.ndarray:
    matrix = np.array(obj.matrix_world.to_3x3(), dtype=np.float64)
    if abs(np.linalg.det(matrix)) < 1e-12:
        raise MeshError(f"'{obj.name}' has a zero scale on some axis; fix its scale and try again")
    return matrix


def _array(collection, attribute: str, count: int, width: int, dtype) -> np.ndarray:
    values = np.empty(count * width, dtype=dtype)
    collection.foreach_get(attribute, values)
    return values.reshape(-1, width) if width > 1 else values


def _topology(mesh) -> tuple[np.ndarray, np.ndarray]:
    """(each corner's vertex, each polygon's first corner): equal arrays mean corresponding corners."""
    return (_array(mesh.loops, "vertex_index", len(mesh.loops), 1, np.int32),
            _array(mesh.polygons, "loop_start", len(mesh.polygons), 1, np.int32))


def _same(topology_a, topology_b) -> bool:
    return all(np.array_equal(x, y) for x, y in zip(topology_a, topology_b, strict=True))


def same_topology(a, b) -> bool:
    return len(a.vertices) == len(b.vertices) and _same(_topology(a), _topology(b))


def _write_obj(path: str, title: str, co: np.ndarray, tri_verts: np.ndarray, tri_loops: np.ndarray,
               loop_uv: np.ndarray | None) -> None:
    text = io.StringIO()
    text.write(f"# nca3d Blender add-on: {title}\n")
    np.savetxt(text, co, fmt="v %.9g %.9g %.9g")
    if loop_uv is not None:
        np.savetxt(text, loop_uv.astype(np.float64), fmt="vt %.9g %.9g")
        corners = np.stack([tri_verts.ravel() + 1, tri_loops.ravel() + 1], axis=1).reshape(-1, 6)
        np.savetxt(text, corners, fmt="f %d/%d %d/%d %d/%d")
    else:
        np.savetxt(text, tri_verts.reshape(-1, 3) + 1, fmt="f %d %d %d")
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text.getvalue())


def _triangles(mesh) -> tuple[np.ndarray, np.ndarray]:
    mesh.calc_loop_triangles()
    count = len(mesh.loop_triangles)
    return (_array(mesh.loop_triangles, "vertices", count, 3, np.int32),
            _array(mesh.loop_triangles, "loops", count, 3, np.int32))


def _loop_uv(mesh, layer) -> np.ndarray:
    return _array(layer.uv, "vector", len(mesh.loops), 2, np.float32)


def smart_unwrap(mesh, margin: float) -> np.ndarray:
    """Smart UV Project of a copy of `mesh` (in a temporary scene): its corners' UVs (L, 2).

    margin: the gap between islands as a fraction of the UV square."""
    copy = mesh.copy()
    obj = scene = None
    try:
        obj = bpy.data.objects.new("nca3d unwrap", copy)
        scene = bpy.data.scenes.new("nca3d unwrap")
        scene.collection.objects.link(obj)
        layer = scene.view_layers[0]
        layer.objects.active = obj
        obj.select_set(True, view_layer=layer)
        for uv_layer in list(copy.uv_layers):
            copy.uv_layers.remove(uv_layer)
        copy.uv_layers.new(name=UV_NAME)
        override = {"scene": scene, "view_layer": layer, "active_object": obj, "object": obj,
                    "selected_objects": [obj], "selected_editable_objects": [obj]}
        with bpy.context.temp_override(**override):
            bpy.ops.object.mode_set(mode="EDIT")
        try:
            with bpy.context.temp_override(edit_object=obj, **override):
                bpy.ops.mesh.select_all(action="SELECT")
                bpy.ops.uv.smart_project(angle_limit=math.radians(66.0), margin_method="FRACTION",
                                         island_margin=margin, area_weight=0.0, correct_aspect=True,
                                         scale_to_bounds=False)
        finally:
            with bpy.context.temp_override(edit_object=obj, **override):
                bpy.ops.object.mode_set(mode="OBJECT")
        return _loop_uv(copy, copy.uv_layers[UV_NAME])
    finally:
        if obj is not None:
            bpy.data.objects.remove(obj)
        if scene is not None:
            bpy.data.scenes.remove(scene)
        bpy.data.meshes.remove(copy)


def export_for_texture(context, obj, path: str, margin: float) -> dict:
    """Write `obj` as a triangulated OBJ for `nca3d texture`.

    With a UV map: the evaluated mesh (modifiers applied) with its active UV map. Without one:
    see the module's docstring; margin is Smart UV Project's island gap (fraction of the square).
    Returns {"uv_name": the UV map used, or None when the mesh has none; "unwrap": None, "backend"
    or "smart"; "loop_uv" (L, 2) for "smart"; "tri_loops" (T, 3) for "backend"; "topology": the
    base mesh's, to check it is unchanged when the UVs are written; "base": the base mesh was
    exported because modifiers change the topology}."""
    linear = _linear(obj)
    depsgraph = context.evaluated_depsgraph_get()
    evaluated = obj.evaluated_get(depsgraph)
    mesh = evaluated.to_mesh()
    try:
        uv_layer = mesh.uv_layers.active
        result = {"uv_name": None, "unwrap": None, "base": False}
        if uv_layer is not None:
            source, loop_uv = mesh, _loop_uv(mesh, uv_layer)
            if not np.isfinite(loop_uv).all():
                raise MeshError(f"the UV map '{uv_layer.name}' of '{obj.name}' has invalid (NaN) coordinates")
            result["uv_name"] = uv_layer.name
        else:
            base = obj.data
            if base.uv_layers.active is not None:
                raise MeshError(f"the modifiers of '{obj.name}' drop its UV map '{base.uv_layers.active.name}': keep "
                                f"it through them (or apply them) and try again")
            if len(base.polygons) == 0:
                raise MeshError(f"'{obj.name}' has no UV map and no faces of its own (its modifiers make them): "
                                f"apply its modifiers, or give it a UV map, and try again")
            result["base"] = not same_topology(mesh, base)
            source = base if result["base"] else mesh
            result["topology"] = _topology(base)
            if (_array(base.polygons, "loop_total", len(base.polygons), 1, np.int32) == 3).all():
                result["unwrap"], loop_uv = "backend", None
            else:
                result["unwrap"], loop_uv = "smart", smart_unwrap(base, margin)
                result["loop_uv"] = loop_uv
        tri_verts, tri_loops = _triangles(source)
        if len(tri_verts) == 0:
            raise MeshError(f"'{obj.name}' has no faces to texture (after its modifiers)")
        co = _array(source.vertices, "co", len(source.vertices), 3, np.float32).astype(np.float64) @ linear.T
        _write_obj(path, obj.name, co, tri_verts, tri_loops, loop_uv)
        if result["unwrap"] == "backend":
            result["tri_loops"] = tri_loops
        return result
    finally:
        evaluated.to_mesh_clear()


def read_obj(path: str, need_uv: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A triangle OBJ -> (vertices (N,3), uvs (M,2), faces (F,3) vertex indices, face_uvs (F,3)
    uv indices, -1 without UVs), 0-based."""
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
    if not faces or (need_uv and not uvs):
        raise MeshError(f"the mesh '{path}' has no faces" + (" or no UVs" if need_uv else ""))
    v = np.asarray(vertices, dtype=np.float64).reshape(-1, 3)
    t = np.asarray(uvs, dtype=np.float64).reshape(-1, 2)
    f = np.asarray(faces, dtype=np.int64)
    ft = np.asarray(face_uvs, dtype=np.int64)
    f = np.where(f < 0, f + len(v), f - 1)
    ft = np.where(ft < 0, ft + len(t), ft - 1)
    if f.min() < 0 or f.max() >= len(v) or (need_uv and (ft.min() < 0 or ft.max() >= len(t))):
        raise MeshError(f"the mesh '{path}' refers to missing vertices or UVs")
    return v, t, f, ft


def backend_loop_uv(exported_path: str, unwrapped_path: str, tri_loops: np.ndarray, loops: int) -> np.ndarray:
    """The backend's unwrap (its OBJ) as UVs of the exported triangles' corners, (loops, 2).

    Triangles are matched by their three corner positions (the backend writes back the positions it
    read), and each corner by its position within the triangle; a triangle the backend dropped
    (zero area, or a repeat) takes the UVs its corners have elsewhere."""
    ve, _, fe, _ = read_obj(exported_path, need_uv=False)
    vb, uvb, fb, ftb = read_obj(unwrapped_path)
    _, ids = np.unique(np.concatenate([ve, vb]) + 0.0, axis=0, return_inverse=True)
    ids = ids.reshape(-1)
    pe, pb = ids[:len(ve)][fe], ids[len(ve):][fb]  # corners as position ids
    corner_uv = uvb[ftb]  # (Fb, 3, 2)
    _, keys = np.unique(np.sort(np.concatenate([pe, pb]), axis=1), axis=0, return_inverse=True)
    keys = keys.reshape(-1)
    backend_tri = np.full(keys.max() + 1, -1, dtype=np.int64)
    backend_tri[keys[len(pe):]] = np.arange(len(pb))
    match = backend_tri[keys[:len(pe)]]
    at_position = np.zeros((ids.max() + 1, 2))
    at_position[pb.reshape(-1)] = corner_uv.reshape(-1, 2)
    uv = at_position[pe]  # (Fe, 3, 2): the fallback for dropped triangles
    hit = np.flatnonzero(match >= 0)
    for corner in range(3):
        which = np.argmax(pb[match[hit]] == pe[hit, corner:corner + 1], axis=1)
        uv[hit, corner] = corner_uv[match[hit], which]
    loop_uv = np.zeros((loops, 2))
    loop_uv[tri_loops.reshape(-1)] = uv.reshape(-1, 2)
    return loop_uv


def check_unchanged(obj, exported: dict) -> None:
    """MeshError unless `obj`'s mesh is still the one exported without a UV map."""
    mesh = obj.data
    if len(mesh.uv_layers) or not _same(_topology(mesh), exported["topology"]):
        raise MeshError(f"the mesh of '{obj.name}' changed while it was being textured; run it again")


def add_uv_layer(obj, loop_uv: np.ndarray) -> str:
    """Write loop_uv (check_unchanged first) as a new active UV map on `obj`'s own mesh."""
    mesh = obj.data
    layer = mesh.uv_layers.new(name=UV_NAME)
    layer.uv.foreach_set("vector", np.asarray(loop_uv, dtype=np.float32).ravel())
    mesh.uv_layers.active = layer
    layer.active_render = True
    mesh.update()
    return layer.name


def object_size(obj) -> float:
    """The largest world-space extent of the object (for a displacement scale)."""
    size = max(obj.dimensions) if obj.dimensions else 0.0
    return float(size) if size > 0 else 1.0
