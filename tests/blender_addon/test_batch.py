"""Texture All Selected Meshes in Blender (bpy): the selected meshes go to one `nca3d batch` (a local
Ray runtime) and each finished one gets its NCA material; the batch's job list is the texture
operator's own options."""

from __future__ import annotations

import pytest

from .conftest import run_blender

BATCH_TWO_MESHES = r'''
enable_addon()
bpy.ops.object.select_all(action="SELECT")
bpy.ops.object.delete()
bpy.ops.mesh.primitive_uv_sphere_add(segments=12, ring_count=6, radius=1.0, location=(-2, 0, 0))
bpy.context.active_object.name = "Ball"
bpy.ops.mesh.primitive_cube_add(size=1.5, location=(2, 0, 0))
bpy.context.active_object.name = "Box"
bpy.ops.mesh.primitive_plane_add(location=(0, 3, 0))
bpy.context.active_object.name = "Left out"
bpy.ops.object.select_all(action="DESELECT")
for name in ("Ball", "Box"):
    bpy.data.objects[name].select_set(True)
settings = bpy.context.scene.nca3d_texture
set_model(settings, ARGS["model"])
settings.size = 32
settings.steps = 4
settings.scale = 0.25
ops_batch = sys.modules[MODULE + ".ops_batch"]
RESULT["entry"] = ops_batch.batch_entry(["py", "-m", "nca3d", "texture", "m.obj", "--model", "x", "--out", "o",
                                         "--size", "32", "--displace", "--progress", "json"], "0001")
t0 = time.time()
RESULT["run"] = call(bpy.ops.nca3d.texture_batch)
RESULT["seconds"] = time.time() - t0
RESULT["status"] = status()
RESULT["materials"] = {o.name: [s.material.name if s.material else None for s in o.material_slots]
                       for o in bpy.data.objects}
RESULT["images"] = sorted(i.name for i in bpy.data.images if i.type == "IMAGE")
'''


def test_texture_all_selected_meshes_is_one_batch(tmp_path, tiny_models):
    pytest.importorskip("ray", reason="nca3d batch needs Ray: pip install 'nca3d[batch]'")
    result = run_blender(BATCH_TWO_MESHES, tmp_path, timeout=600, model=tiny_models["mesh"])
    assert result["entry"] == {"command": "texture", "job": "0001", "mesh": "m.obj", "model": "x", "size": "32",
                               "displace": True}
    assert result["run"] == [["FINISHED"], None], result["_stdout"][-3000:]
    assert result["status"]["last_level"] == "INFO"
    assert result["status"]["last_message"] == "NCA batch: textured 2 of 2 meshes"
    materials = result["materials"]
    assert materials["Ball"][0].startswith("NCA ") and materials["Box"][0].startswith("NCA ")
    assert materials["Ball"] != materials["Box"] and materials["Left out"] == []
    assert {"NCA_Ball_albedo", "NCA_Box_albedo"} <= set(result["images"])
