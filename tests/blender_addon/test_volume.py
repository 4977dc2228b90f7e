"""Add NCA Volume end to end in Blender (bpy), with a tiny random volume model."""

from __future__ import annotations

import os
from pathlib import Path

from .conftest import run_blender

VOLUME = r'''
enable_addon()
scene = bpy.context.scene
scene.cursor.location = (1.0, 2.0, 3.0)
settings = scene.nca3d_volume
set_model(settings, ARGS["model"])
settings.res = 16
settings.lattice = 8
settings.steps = 4
settings.size = 2.0
RESULT["static"] = call(bpy.ops.nca3d.add_volume)
obj = bpy.context.active_object
volume = obj.data
volume.grids.load()
RESULT["object"] = {"type": obj.type, "name": obj.name, "location": list(obj.location),
                    "grids": sorted(g.name for g in volume.grids), "file": bpy.path.abspath(volume.filepath),
                    "sequence": volume.is_sequence, "bound": [list(c) for c in obj.bound_box]}
mat = volume.materials[0]
RESULT["material"] = mat.name
RESULT["links"] = links_of(mat)
RESULT["attributes"] = sorted(n.attribute_name for n in mat.node_tree.nodes if n.bl_idname == "ShaderNodeAttribute")
RESULT["density_attribute"] = mat.node_tree.nodes["NCA volume"].inputs["Density Attribute"].default_value

settings.animate = True
settings.frames = 2
settings.every = 1
settings.shading = "SMOKE"
scene.frame_start = 3
RESULT["animated"] = call(bpy.ops.nca3d.add_volume)
obj = bpy.context.active_object
volume = obj.data
RESULT["sequence"] = {"is_sequence": volume.is_sequence, "duration": volume.frame_duration,
                      "start": volume.frame_start, "file": bpy.path.abspath(volume.filepath)}
scene.frame_set(4)
volume.grids.load()
RESULT["sequence"]["grids"] = sorted(g.name for g in volume.grids)
RESULT["sequence"]["frame_file"] = volume.grids.frame_filepath
RESULT["smoke_links"] = links_of(volume.materials[0])
RESULT["volumes"] = sorted(v.name for v in bpy.data.volumes)
'''


def test_add_volume(tmp_path: Path, tiny_models):
    result = run_blender(VOLUME, tmp_path, model=tiny_models["volume"])
    assert result["static"] == [["FINISHED"], None], result
    obj = result["object"]
    assert obj["type"] == "VOLUME" and obj["name"] == "NCA tiny_volume"
    assert obj["location"] == [1.0, 2.0, 3.0]
    assert {"density", "color"} <= set(obj["grids"])
    assert obj["file"].startswith(str(tmp_path / "files")) and os.path.isfile(obj["file"])
    assert not obj["sequence"]
    corners = obj["bound"]  # the cube [-size/2, size/2]^3
    assert min(min(c) for c in corners) > -1.01 and max(max(c) for c in corners) < 1.01
    links = {tuple(link) for link in result["links"]}
    attr, vol = "ShaderNodeAttribute", "ShaderNodeVolumePrincipled"
    assert (attr, "Color", vol, "Emission Color") in links and (attr, "Fac", vol, "Emission Strength") in links
    assert (vol, "Volume", "ShaderNodeOutputMaterial", "Volume") in links
    assert result["attributes"] == ["color", "density"] and result["density_attribute"] == "density"

    assert result["animated"] == [["FINISHED"], None], result
    seq = result["sequence"]
    assert seq["is_sequence"] and seq["duration"] == 2 and seq["start"] == 3
    assert seq["file"].endswith("volume.0001.vdb") and seq["frame_file"].endswith("volume.0002.vdb")
    assert {"density", "color"} <= set(seq["grids"])
    assert ("ShaderNodeAttribute", "Color", "ShaderNodeVolumePrincipled", "Color") in {
        tuple(link) for link in result["smoke_links"]}
