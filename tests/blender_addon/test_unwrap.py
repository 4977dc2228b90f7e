"""A mesh without a UV map keeps its own data: the unwrap becomes a new UV map on it (bpy)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .conftest import run_blender

UNWRAP = r'''
import numpy as np
enable_addon()
bpy.ops.object.select_all(action="SELECT")
bpy.ops.object.delete()


def dress(obj):
    """Vertex group, shape keys, and remember everything the add-on must keep."""
    group = obj.vertex_groups.new(name="Top")
    top = [v.index for v in obj.data.vertices if v.co.z > 0.3]
    group.add(top, 0.75, "REPLACE")
    obj.shape_key_add(name="Basis")
    bulge = obj.shape_key_add(name="Bulge")
    for point in bulge.data:
        point.co *= 1.2
    bulge.value = 0.5


def state(obj):
    mesh = obj.data
    co = [0.0] * (len(mesh.vertices) * 3)
    mesh.vertices.foreach_get("co", co)
    loops = [0] * len(mesh.loops)
    mesh.loops.foreach_get("vertex_index", loops)
    return {"mesh": mesh.name, "pointer": mesh.as_pointer(), "co": co, "loops": loops,
            "polygons": len(mesh.polygons),
            "groups": [g.name for g in obj.vertex_groups],
            "weights": sorted((v.index, g.weight) for v in mesh.vertices for g in v.groups),
            "keys": [(k.name, k.value, [c for p in k.data for c in p.co]) for k in mesh.shape_keys.key_blocks],
            "modifiers": [(m.name, m.type, m.show_viewport, m.show_render) for m in obj.modifiers]}


def uv_report(obj):
    """The new UV map: per-triangle UV and 3D areas, and each polygon's UV corners."""
    mesh = obj.data
    layer = mesh.uv_layers.active
    uv = np.array([d.vector[:] for d in layer.uv])
    co = np.array([v.co[:] for v in mesh.vertices])
    mesh.calc_loop_triangles()
    tris = np.array([t.loops[:] for t in mesh.loop_triangles])
    verts = np.array([t.vertices[:] for t in mesh.loop_triangles])
    a, b, c = uv[tris[:, 0]], uv[tris[:, 1]], uv[tris[:, 2]]
    uv_area = 0.5 * np.abs((b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0]))
    p, q, r = co[verts[:, 0]], co[verts[:, 1]], co[verts[:, 2]]
    area = 0.5 * np.linalg.norm(np.cross(q - p, r - p), axis=1)
    loop_vertex = np.array([l.vertex_index for l in mesh.loops])
    pairs = len({(v, round(x, 6), round(y, 6)) for v, (x, y) in zip(loop_vertex, uv)})
    return {"layers": [l.name for l in mesh.uv_layers], "active": layer.name,
            "corners_per_vertex": len(mesh.loops) / len(mesh.vertices), "uvs_per_vertex": pairs / len(mesh.vertices),
            "active_render": [l.name for l in mesh.uv_layers if l.active_render],
            "range": [float(uv.min()), float(uv.max())], "uv_area": uv_area.tolist(), "area": area.tolist()}


def material_uv(obj):
    mat = obj.active_material
    return sorted(n.uv_map for n in mat.node_tree.nodes if n.bl_idname in ("ShaderNodeUVMap", "ShaderNodeNormalMap"))


settings = bpy.context.scene.nca3d_texture
set_model(settings, ARGS["model"])
settings.size = 128
settings.steps = 2
settings.scale = 0.3
settings.use_height = False

# Triangles only, a deforming modifier: the backend unwraps the evaluated mesh.
bpy.ops.mesh.primitive_ico_sphere_add(subdivisions=2, radius=1.0, calc_uvs=False)
tri = bpy.context.active_object
tri.name = "Tri"
dress(tri)
tri.modifiers.new("Twist", "SIMPLE_DEFORM").angle = 0.3
before = state(tri)
RESULT["tri_run"] = call(bpy.ops.nca3d.texture_mesh)
RESULT["tri_message"] = status()["last_message"]
RESULT["tri_same"] = state(tri) == before
RESULT["tri_uv"] = uv_report(tri)
RESULT["tri_material_uv"] = material_uv(tri)

# Quads and triangles, a Subdivision modifier (changes the topology): Smart UV Project of the base mesh.
bpy.ops.mesh.primitive_uv_sphere_add(segments=16, ring_count=8, radius=1.0, location=(3, 0, 0), calc_uvs=False)
quad = bpy.context.active_object
quad.name = "Quad"
dress(quad)
quad.modifiers.new("Subdivision", "SUBSURF").levels = 1
before = state(quad)
data_before = {kind: len(getattr(bpy.data, kind)) for kind in ("meshes", "objects", "scenes", "shape_keys")}
RESULT["quad_run"] = call(bpy.ops.nca3d.texture_mesh)
RESULT["quad_message"] = status()["last_message"]
RESULT["quad_same"] = state(quad) == before
RESULT["quad_uv"] = uv_report(quad)
RESULT["quad_material_uv"] = material_uv(quad)
RESULT["data_same"] = data_before == {kind: len(getattr(bpy.data, kind)) for kind in data_before}
mesh = quad.data
uv = np.array([d.vector[:] for d in mesh.uv_layers.active.uv])
# A polygon's corners in UV space: a convex polygon, the shape of the 3D one (no triangle split off)
RESULT["quad_polygons"] = [[uv[i].tolist() for i in p.loop_indices] + [[mesh.vertices[v].co[:] for v in p.vertices]]
                           for p in mesh.polygons if p.loop_total == 4]

# Again: the UV map made the first time is used; no second UV map, the mesh still untouched.
RESULT["again"] = call(bpy.ops.nca3d.texture_mesh)
RESULT["again_message"] = status()["last_message"]
RESULT["again_layers"] = [l.name for l in quad.data.uv_layers]
RESULT["again_same"] = state(quad) == before

# Faces made only by modifiers (Skin): no mesh of its own to hold UVs, refused in one line.
skin_mesh = bpy.data.meshes.new("Bones")
skin_mesh.from_pydata([(0, 0, 0), (0, 0, 1)], [(0, 1)], [])
bones = bpy.data.objects.new("Bones", skin_mesh)
bpy.context.collection.objects.link(bones)
bones.modifiers.new("Skin", "SKIN")
for other in bpy.context.view_layer.objects:
    other.select_set(False)
bpy.context.view_layer.objects.active = bones
bones.select_set(True)
before = snapshot()
RESULT["skin"] = call(bpy.ops.nca3d.texture_mesh)
RESULT["skin_same"] = snapshot() == before
'''


def _uniform_scale(uv_area, area) -> float:
    """Fraction of triangles whose UV/3D area ratio is within 2x of the median ratio."""
    ratio = np.asarray(uv_area) / np.maximum(np.asarray(area), 1e-12)
    median = np.median(ratio)
    return float(np.mean((ratio > median / 2) & (ratio < median * 2)))


def test_unwrap_is_a_new_uv_map_on_the_users_mesh(tmp_path: Path, tiny_models):
    result = run_blender(UNWRAP, tmp_path, model=tiny_models["mesh"])
    for name in ("tri", "quad"):
        assert result[f"{name}_run"] == [["FINISHED"], None], result
        # the user's mesh: same datablock, vertices, order, groups, weights, shape keys and modifiers
        assert result[f"{name}_same"], name
        uv = result[f"{name}_uv"]
        assert uv["layers"] == ["UVMap"] and uv["active"] == "UVMap" and uv["active_render"] == ["UVMap"]
        assert result[f"{name}_material_uv"] == ["UVMap", "UVMap"]
        assert 0.0 <= uv["range"][0] < uv["range"][1] <= 1.0
        # an unwrap, not scrambled corners: no triangle is degenerate, islands do not pile up, and the
        # texel density is even (a wrong corner order gives huge, overlapping, uneven triangles)
        assert min(uv["uv_area"]) > 0, name
        assert 0.2 < sum(uv["uv_area"]) <= 1.0, (name, sum(uv["uv_area"]))
        assert _uniform_scale(uv["uv_area"], uv["area"]) > 0.9, name
        # the corners around a vertex share its UV inside an island (only seams split it): with
        # mismatched corners every corner would have a UV of its own
        assert uv["uvs_per_vertex"] < 0.5 * uv["corners_per_vertex"], (name, uv["uvs_per_vertex"])
    assert "new UV map 'UVMap' (the backend's unwrap)" in result["tri_message"], result["tri_message"]
    assert "Smart UV Project" in result["quad_message"] and "before its modifiers" in result["quad_message"]
    assert result["data_same"]  # the temporary copy and scene are gone
    for polygon in result["quad_polygons"]:
        corners, positions = np.array(polygon[:4]), np.array(polygon[4])
        edges_uv = np.linalg.norm(np.roll(corners, -1, axis=0) - corners, axis=1)
        edges_3d = np.linalg.norm(np.roll(positions, -1, axis=0) - positions, axis=1)
        # one island per polygon: a convex quad whose edges are its 3D edges at about one scale (a
        # projection within Smart UV Project's 66 degrees foreshortens by 1 / cos 66 = 2.5 at most;
        # none is stretched across the atlas to another chart)
        scale = edges_uv / np.maximum(edges_3d, 1e-9)
        assert scale.min() > 0 and scale.max() < 3.0 * scale.min(), polygon
        u, v = np.roll(corners, -1, axis=0) - corners, np.roll(corners, -2, axis=0) - corners
        turns = u[:, 0] * v[:, 1] - u[:, 1] * v[:, 0]
        assert (turns > 0).all() or (turns < 0).all(), polygon
    assert result["again"] == [["FINISHED"], None] and result["again_layers"] == ["UVMap"]
    assert result["again_same"] and "new UV map" not in result["again_message"]
    run, error = result["skin"]
    assert run is None and "'Bones' has no UV map and no faces of its own" in error and result["skin_same"], error
