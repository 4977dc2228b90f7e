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
settings.loop = False
scene.frame_start = 3
RESULT["animated"] = call(bpy.ops.nca3d.add_volume)
obj = bpy.context.active_object
volume = obj.data
RESULT["sequence"] = {"is_sequence": volume.is_sequence, "duration": volume.frame_duration,
                      "start": volume.frame_start, "file": bpy.path.abspath(volume.filepath),
                      "mode": volume.sequence_mode, "message": status()["last_message"]}
scene.frame_set(4)
volume.grids.load()
RESULT["sequence"]["grids"] = sorted(g.name for g in volume.grids)
RESULT["sequence"]["frame_file"] = volume.grids.frame_filepath
RESULT["smoke_links"] = links_of(volume.materials[0])
RESULT["volumes"] = sorted(v.name for v in bpy.data.volumes)
RESULT["folders"] = {name: sorted(os.listdir(os.path.join(OUT, "files", name)))
                     for name in sorted(os.listdir(os.path.join(OUT, "files")))}

# Deleted and added again: the new object of the same name replaces the unused folder (no _2).
bpy.data.objects.remove(obj)
bpy.data.volumes.remove(volume)
settings.animate = False
RESULT["again"] = call(bpy.ops.nca3d.add_volume)
RESULT["again_name"] = bpy.context.active_object.name
RESULT["folders_again"] = sorted(os.listdir(os.path.join(OUT, "files")))

# An unsaved .blend with no Output Folder has nowhere visible for VDB files: refused, nothing changes.
bpy.context.preferences.addons[MODULE].preferences.output_dir = ""
before = snapshot()
work_before = set(os.listdir(__import__("tempfile").gettempdir()))
RESULT["unsaved"] = call(bpy.ops.nca3d.add_volume)
RESULT["unsaved_same"] = snapshot() == before
RESULT["unsaved_work_left"] = sorted(p for p in set(os.listdir(__import__("tempfile").gettempdir())) - work_before
                                     if p.startswith("nca3d-volume-"))
RESULT["cwd"] = sorted(os.listdir(OUT))
'''


def test_add_volume(tmp_path: Path, tiny_models):
    result = run_blender(VOLUME, tmp_path, model=tiny_models["volume"])
    assert result["static"] == [["FINISHED"], None], result
    obj = result["object"]
    assert obj["type"] == "VOLUME" and obj["name"] == "NCA tiny_volume"
    assert obj["location"] == [1.0, 2.0, 3.0]
    assert {"density", "color"} <= set(obj["grids"])
    assert obj["file"] == str(tmp_path / "files" / "NCA_tiny_volume" / "NCA_tiny_volume.vdb")
    assert os.path.isfile(obj["file"])
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
    folder = tmp_path / "files" / "NCA_tiny_volume.001"
    assert seq["file"] == str(folder / "NCA_tiny_volume.001.0001.vdb")
    assert seq["frame_file"] == str(folder / "NCA_tiny_volume.001.0002.vdb")
    assert seq["mode"] == "EXTEND" and "looping" not in seq["message"]  # Loop off: holds its last frame
    assert result["folders"] == {"NCA_tiny_volume": ["NCA_tiny_volume.vdb", "nca3d.json"],
                                 "NCA_tiny_volume.001": ["NCA_tiny_volume.001.0001.vdb", "NCA_tiny_volume.001.0002.vdb",
                                                         "nca3d.json"]}
    assert result["again"] == [["FINISHED"], None] and result["again_name"] == "NCA tiny_volume.001"
    assert result["folders_again"] == ["NCA_tiny_volume", "NCA_tiny_volume.001"]
    unsaved = result["unsaved"]
    assert unsaved[0] is None and "this .blend is unsaved: save it" in unsaved[1], unsaved
    assert "Output Folder" in unsaved[1] and "\n" not in unsaved[1].strip()
    assert result["unsaved_same"] and "nca3d" not in result["cwd"] and result["unsaved_work_left"] == []
    assert {"density", "color"} <= set(seq["grids"])
    assert ("ShaderNodeAttribute", "Color", "ShaderNodeVolumePrincipled", "Color") in {
        tuple(link) for link in result["smoke_links"]}
