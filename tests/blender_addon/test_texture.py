"""Texture Selected Mesh end to end in Blender (bpy): tiny random models, and a bundled PBR model
rendered in Cycles with its relief (normal map and true displacement)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from PIL import Image

from .conftest import run_blender

MAP_SIZE = 64
BUNDLED_PBR_MODEL = "eroded_concrete_mesh"  # a bundled PBR mesh model (albedo, normal, height, roughness, ao)

TEXTURE_UV_SPHERE = r'''
enable_addon()
bpy.ops.object.select_all(action="SELECT")
bpy.ops.object.delete()
bpy.ops.mesh.primitive_uv_sphere_add(segments=12, ring_count=6, radius=1.0)
obj = bpy.context.active_object
obj.name = "Ball"
settings = bpy.context.scene.nca3d_texture
set_model(settings, ARGS["model"])
settings.size = ARGS["size"]
settings.steps = 4
settings.scale = 0.2
settings.use_ao = True
before = snapshot()
workdirs_before = {p for p in os.listdir(__import__("tempfile").gettempdir()) if p.startswith("nca3d-texture-")}
t0 = time.time()
RESULT["run"] = call(bpy.ops.nca3d.texture_mesh)
RESULT["seconds"] = time.time() - t0
RESULT["status"] = status()
mat = obj.active_material
RESULT["material"] = mat.name
RESULT["slots"] = [s.material.name for s in obj.material_slots]
RESULT["links"] = links_of(mat)
RESULT["uv_nodes"] = sorted(n.uv_map for n in mat.node_tree.nodes if n.bl_idname in ("ShaderNodeUVMap", "ShaderNodeNormalMap"))
RESULT["uv_active"] = obj.data.uv_layers.active.name
RESULT["images"] = {n.name: {"size": list(n.image.size), "colorspace": n.image.colorspace_settings.name,
                             "packed": n.image.packed_file is not None, "source": n.image.source}
                    for n in mat.node_tree.nodes if n.bl_idname == "ShaderNodeTexImage"}
disp = mat.node_tree.nodes["NCA displacement"]
RESULT["displacement"] = [disp.inputs["Midlevel"].default_value, disp.inputs["Scale"].default_value, disp.space,
                          mat.displacement_method]
mix = mat.node_tree.nodes["NCA AO multiply"]
RESULT["mix"] = [mix.data_type, mix.blend_type]
RESULT["mesh_unchanged"] = before["state"]["Ball"]["data"] == obj.data.name
RESULT["workdirs_left"] = sorted(p for p in os.listdir(__import__("tempfile").gettempdir())  # this run's only
                                  if p.startswith("nca3d-texture-") and p not in workdirs_before)

# Again with the same model: the material is rebuilt in place, not duplicated.
RESULT["rerun"] = call(bpy.ops.nca3d.texture_mesh)
RESULT["material_after_rerun"] = obj.active_material.name
RESULT["nca_materials"] = sorted(m.name for m in bpy.data.materials if m.name.startswith("NCA"))
RESULT["all_images"] = sorted(i.name for i in bpy.data.images if i.type == "IMAGE")
RESULT["packed_paths"] = sorted(i.packed_files[0].filepath for i in bpy.data.images if i.packed_file)
RESULT["files_written"] = os.path.exists(os.path.join(OUT, "files"))

# A Cycles render on the CPU finishes with the packed maps (the backend's temp files are gone).
scene = bpy.context.scene
bpy.ops.object.camera_add(location=(0, -4, 0), rotation=(1.5708, 0, 0))
scene.camera = bpy.context.active_object
bpy.ops.object.light_add(type="SUN", rotation=(0.6, 0.2, 0.0))
scene.render.engine = "CYCLES"
scene.cycles.device = "CPU"
scene.cycles.samples = 4
scene.cycles.use_denoising = False
scene.render.threads_mode = "FIXED"
scene.render.threads = 1
scene.render.resolution_x = scene.render.resolution_y = 64
scene.render.resolution_percentage = 100
scene.render.filepath = os.path.join(OUT, "render.png")
t0 = time.time()
bpy.ops.render.render(write_still=True)
RESULT["render_seconds"] = time.time() - t0
img = bpy.data.images.load(scene.render.filepath)
px = list(img.pixels)
RESULT["render"] = {"size": list(img.size), "max": max(px[0::4] + px[1::4] + px[2::4])}
'''


def test_texture_uv_sphere(tmp_path: Path, tiny_models):
    result = run_blender(TEXTURE_UV_SPHERE, tmp_path, model=tiny_models["mesh"], size=MAP_SIZE)
    print(result["_stdout"][-2000:])
    assert result["run"] == [["FINISHED"], None], result
    assert result["status"]["last_level"] == "INFO"
    assert result["material"] == "NCA tiny_mesh" and result["slots"] == ["NCA tiny_mesh"]
    links = {tuple(link) for link in result["links"]}
    tex, bsdf = "ShaderNodeTexImage", "ShaderNodeBsdfPrincipled"
    for want in [
        ("ShaderNodeMix", "Result_Color", bsdf, "Base Color"),
        (tex, "Color", "ShaderNodeMix", "A_Color"),
        (tex, "Color", "ShaderNodeMix", "B_Color"),
        (tex, "Color", bsdf, "Roughness"),
        (tex, "Color", "ShaderNodeNormalMap", "Color"),
        ("ShaderNodeNormalMap", "Normal", bsdf, "Normal"),
        (tex, "Color", "ShaderNodeDisplacement", "Height"),
        ("ShaderNodeDisplacement", "Displacement", "ShaderNodeOutputMaterial", "Displacement"),
        (bsdf, "BSDF", "ShaderNodeOutputMaterial", "Surface"),
        ("ShaderNodeUVMap", "UV", tex, "Vector"),
    ]:
        assert want in links, want
    assert result["uv_nodes"] == [result["uv_active"]] * 2
    images = result["images"]
    assert sorted(images) == ["NCA albedo", "NCA ao", "NCA height", "NCA normal", "NCA roughness"]  # node names
    for name, image in images.items():
        assert image["size"] == [MAP_SIZE, MAP_SIZE] and image["packed"] and image["source"] == "FILE", name
        assert image["colorspace"] == ("sRGB" if name == "NCA albedo" else "Non-Color"), name
    midlevel, scale, space, method = result["displacement"]
    assert midlevel == 0.5 and abs(scale - 0.02 * 2.0) < 1e-4  # 2% of the sphere's 2-unit size
    assert space == "WORLD" and method == "BUMP"  # without Displace the height is a bump
    assert result["mix"] == ["RGBA", "MULTIPLY"]
    assert result["mesh_unchanged"]  # it had a UV map: the mesh is kept as it is
    assert result["workdirs_left"] == []
    assert result["rerun"] == [["FINISHED"], None]
    assert result["material_after_rerun"] == "NCA tiny_mesh" and result["nca_materials"] == ["NCA tiny_mesh"]
    kinds = ("albedo", "ao", "height", "normal", "roughness")
    # the re-run replaced the images: one of each, named after the object, no .001 copies
    assert result["all_images"] == [f"NCA_Ball_{kind}" for kind in kinds]
    # packed under the path they would have as files in the Output Folder; nothing written there
    assert result["packed_paths"] == [str(tmp_path / "files" / "NCA_Ball" / f"NCA_Ball_{kind}.png") for kind in kinds]
    assert not result["files_written"]
    assert result["render"]["size"] == [64, 64] and result["render"]["max"] > 0.01


TEXTURE_NO_UV = r'''
enable_addon()
bpy.ops.object.select_all(action="SELECT")
bpy.ops.object.delete()
bpy.ops.mesh.primitive_ico_sphere_add(subdivisions=2, radius=1.0, calc_uvs=False)
obj = bpy.context.active_object
obj.name = "Rock"
obj.scale = (2.0, 2.0, 2.0)
modifier = obj.modifiers.new("Subdivision", "SUBSURF")
modifier.levels = modifier.render_levels = 1
bpy.ops.object.shade_smooth()
depsgraph = bpy.context.evaluated_depsgraph_get()
evaluated = obj.evaluated_get(depsgraph).to_mesh()
evaluated.calc_loop_triangles()
RESULT["evaluated"] = [len(evaluated.vertices), len(evaluated.loop_triangles)]
obj.evaluated_get(depsgraph).to_mesh_clear()
RESULT["uv_before"] = len(obj.data.uv_layers)
RESULT["base"] = [len(obj.data.vertices), len(obj.data.polygons)]
old_mesh = obj.data.name
settings = bpy.context.scene.nca3d_texture
set_model(settings, ARGS["model"])
settings.size = ARGS["size"]
settings.steps = 2
settings.scale = 0.5
settings.use_height = False
settings.animate = True
settings.frames = 2
settings.every = 2
settings.storage = "FILES"
bpy.context.scene.frame_start = 5
RESULT["run"] = call(bpy.ops.nca3d.texture_mesh)
mesh = obj.data
RESULT["mesh"] = {"name": mesh.name, "same": mesh.name == old_mesh, "vertices": len(mesh.vertices),
                  "faces": len(mesh.polygons), "uv": [u.name for u in mesh.uv_layers],
                  "smooth": all(p.use_smooth for p in mesh.polygons)}
uv = [0.0] * (len(mesh.loops) * 2)
mesh.uv_layers["UVMap"].uv.foreach_get("vector", uv)
RESULT["uv_range"] = [min(uv), max(uv)]
RESULT["modifiers"] = [(m.show_viewport, m.show_render) for m in obj.modifiers]
mat = obj.active_material
RESULT["images"] = {}
for node in mat.node_tree.nodes:
    if node.bl_idname == "ShaderNodeTexImage":
        image = node.image
        RESULT["images"][node.name] = {
            "source": image.source, "packed": image.packed_file is not None,
            "file": bpy.path.abspath(image.filepath), "duration": node.image_user.frame_duration,
            "start": node.image_user.frame_start, "auto": node.image_user.use_auto_refresh,
            "cyclic": node.image_user.use_cyclic, "size": list(image.size)}
RESULT["uv_nodes"] = sorted(n.uv_map for n in mat.node_tree.nodes if n.bl_idname in ("ShaderNodeUVMap", "ShaderNodeNormalMap"))
RESULT["message"] = status()["last_message"]
RESULT["files"] = sorted(os.listdir(os.path.join(OUT, "files")))
RESULT["file_list"] = sorted(os.listdir(os.path.join(OUT, "files", RESULT["files"][0]))) if RESULT["files"] else []
'''


def test_texture_without_uv_map_animated_files(tmp_path: Path, tiny_models):
    result = run_blender(TEXTURE_NO_UV, tmp_path, model=tiny_models["mesh"], size=MAP_SIZE)
    assert result["run"] == [["FINISHED"], None], result
    assert result["uv_before"] == 0
    mesh = result["mesh"]
    # The object keeps its own mesh, now with a UV map: the Subdivision modifier changes the topology,
    # so the base mesh was unwrapped (by the backend: it is all triangles), and the modifier stays on.
    assert mesh["uv"] == ["UVMap"] and mesh["same"] and mesh["smooth"]
    assert [mesh["vertices"], mesh["faces"]] == result["base"] and result["base"] != result["evaluated"]
    assert 0.0 <= result["uv_range"][0] < result["uv_range"][1] <= 1.0
    assert result["modifiers"] == [[True, True]]
    assert "(the backend's unwrap; its mesh before its modifiers" in result["message"], result["message"]
    assert result["uv_nodes"] == ["UVMap", "UVMap"]
    images = result["images"]
    assert sorted(images) == ["NCA albedo", "NCA normal", "NCA roughness"]
    for name, image in images.items():
        assert image["source"] == "SEQUENCE" and not image["packed"], name
        assert image["duration"] == 2 and image["start"] == 5 and image["auto"] and image["cyclic"], name
        assert os.path.isfile(image["file"]) and image["file"].startswith(str(tmp_path / "files")), name
    assert result["files"] == ["NCA_Rock"]
    assert result["file_list"] == sorted([f"NCA_Rock_{kind}.{frame:04d}.png" for frame in (1, 2)
                                          for kind in ("albedo", "normal", "roughness")] + ["nca3d.json"])
    for name in result["file_list"][:-1]:
        with Image.open(tmp_path / "files" / "NCA_Rock" / name) as image:
            assert image.size == (MAP_SIZE, MAP_SIZE)


RELIEF = r"""
enable_addon()
bpy.ops.object.select_all(action="SELECT")
bpy.ops.object.delete()
bpy.ops.mesh.primitive_ico_sphere_add(subdivisions=5, radius=1.0)
obj = bpy.context.active_object
obj.name = "Ball"
bpy.ops.object.shade_smooth()
settings = bpy.context.scene.nca3d_texture
set_model(settings, ARGS["model"])
settings.size = ARGS["size"]
settings.displace = True
RESULT["run"] = call(bpy.ops.nca3d.texture_mesh)
RESULT["status"] = status()
mat = obj.active_material
RESULT["links"] = links_of(mat)
RESULT["method"] = mat.displacement_method
disp = mat.node_tree.nodes["NCA displacement"]
RESULT["displacement"] = [disp.inputs["Midlevel"].default_value, disp.inputs["Scale"].default_value, disp.space]
RESULT["images"] = sorted(n.name for n in mat.node_tree.nodes if n.bl_idname == "ShaderNodeTexImage")
RESULT["dimensions"] = list(obj.dimensions)

scene = bpy.context.scene
# close up on the right limb: surface on the left of the frame, its silhouette, background on the right
bpy.ops.object.camera_add(location=ARGS["camera"], rotation=(1.5708, 0, 0))
scene.camera = bpy.context.active_object
scene.camera.data.lens = ARGS["lens"]
bpy.ops.object.light_add(type="SUN", rotation=ARGS["sun"])
bpy.context.active_object.data.energy = 10.0
scene.world = scene.world or bpy.data.worlds.new("World")
scene.render.engine = "CYCLES"
scene.cycles.device = "CPU"
scene.cycles.samples = 8
scene.cycles.seed = 0
scene.cycles.use_denoising = False
scene.render.film_transparent = True
scene.render.threads_mode = "FIXED"
scene.render.threads = 2
scene.render.resolution_x = scene.render.resolution_y = ARGS["pixels"]
scene.render.resolution_percentage = 100
scene.render.image_settings.color_mode = "RGBA"


def render(name):
    scene.render.filepath = os.path.join(OUT, name)
    bpy.ops.render.render(write_still=True)


render("relief.png")
tree = mat.node_tree
for link in list(tree.links):  # no relief: the normal map and the displacement unplugged
    if link.to_socket.identifier in ("Normal", "Displacement"):
        tree.links.remove(link)
RESULT["links_flat"] = links_of(mat)
render("flat.png")
settings.use_height = False
bpy.context.view_layer.objects.active = obj
RESULT["without_height"] = call(bpy.ops.nca3d.texture_mesh)
"""


def _bundled_pbr_model() -> str:
    """The bundled PBR mesh model's file (NCA3D_TEST_PBR_MODEL: another name or .nca3d path, for
    developing against a model not bundled yet)."""
    from nca3d.models import resolve_model

    return str(resolve_model(os.environ.get("NCA3D_TEST_PBR_MODEL", BUNDLED_PBR_MODEL)).resolve())


def _high_frequency(image: np.ndarray, mask: np.ndarray) -> float:
    """Mean squared 4-neighbour Laplacian of the luminance inside `mask`."""
    luminance = image[..., :3] @ np.array([0.2126, 0.7152, 0.0722])
    laplacian = 4 * luminance[1:-1, 1:-1] - luminance[:-2, 1:-1] - luminance[2:, 1:-1] \
        - luminance[1:-1, :-2] - luminance[1:-1, 2:]
    return float((laplacian[mask[1:-1, 1:-1]] ** 2).mean())


def test_bundled_pbr_model_wires_every_map_and_displaces_in_cycles(tmp_path: Path):
    """A bundled PBR mesh model with Displace on: every map is wired, the displacement node's scale
    is the strength the backend's --displace chose, Cycles moves the surface (the silhouette
    changes), and the render shows clearly more fine relief than with the normal map and the
    displacement unplugged."""
    view = {"camera": (0.7, -3.2, 0.0), "lens": 150, "sun": (1.45, 0.0, 1.5)}  # light from the right, grazing
    result = run_blender(RELIEF, tmp_path, model=_bundled_pbr_model(), size=256, pixels=64, timeout=600, **view)
    assert result["run"] == [["FINISHED"], None], result
    message = result["status"]["last_message"]
    assert "displacement" in message, message
    links = {tuple(link) for link in result["links"]}
    tex, bsdf, out = "ShaderNodeTexImage", "ShaderNodeBsdfPrincipled", "ShaderNodeOutputMaterial"
    for want in [
        (tex, "Color", bsdf, "Base Color"),
        (tex, "Color", bsdf, "Roughness"),
        (tex, "Color", "ShaderNodeNormalMap", "Color"),
        ("ShaderNodeNormalMap", "Normal", bsdf, "Normal"),
        (tex, "Color", "ShaderNodeDisplacement", "Height"),
        ("ShaderNodeDisplacement", "Displacement", out, "Displacement"),
    ]:
        assert want in links, want
    assert result["images"] == ["NCA albedo", "NCA height", "NCA normal", "NCA roughness"]  # AO: not used
    assert result["method"] == "DISPLACEMENT"
    assert not [link for link in result["links_flat"] if link[3] in ("Normal", "Displacement")]
    assert result["without_height"][0] is None and "Displace needs the Height map" in result["without_height"][1]
    midlevel, scale, space = result["displacement"]
    # the backend's default strength for a smooth sphere: 2% of its bounding-box diagonal (no cap)
    assert midlevel == 0.5 and space == "WORLD"
    assert abs(scale - 0.02 * np.linalg.norm(result["dimensions"])) < 1e-3 * scale, (scale, result["dimensions"])
    relief = np.asarray(Image.open(tmp_path / "relief.png"), float) / 255
    flat = np.asarray(Image.open(tmp_path / "flat.png"), float) / 255
    assert relief.shape == flat.shape == (64, 64, 4)
    # true displacement moves the silhouette (a bump would leave the alpha exactly as it was)
    assert np.abs(relief[..., 3] - flat[..., 3]).sum() > 0.5
    inside = (relief[..., 3] > 0.999) & (flat[..., 3] > 0.999)
    assert inside.mean() > 0.2
    energy = {"relief": _high_frequency(relief, inside), "flat": _high_frequency(flat, inside)}
    print(json.dumps(energy))
    assert energy["relief"] > 2.0 * energy["flat"], energy
