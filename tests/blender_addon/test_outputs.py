"""Where baked maps go (bpy): packed maps keep their own names and paths through unpacking and
reloading; files go next to the saved .blend; re-runs replace images and folders; an unsaved
.blend never writes into a hidden folder."""

from __future__ import annotations

import json
import os
from pathlib import Path

from .conftest import run_blender

PRELUDE_SCENE = r'''
import hashlib
import numpy as np
enable_addon()
prefs = bpy.context.preferences.addons[MODULE].preferences
prefs.output_dir = ""  # the default: a folder nca3d next to the saved .blend
bpy.ops.object.select_all(action="SELECT")
bpy.ops.object.delete()
settings = bpy.context.scene.nca3d_texture
set_model(settings, ARGS["model"])
settings.steps = 2
settings.scale = 0.3
settings.use_height = False
KINDS = ("albedo", "normal", "roughness")


def add_ball(name, x):
    bpy.ops.mesh.primitive_uv_sphere_add(segments=12, ring_count=6, radius=1.0, location=(x, 0, 0))
    obj = bpy.context.active_object
    obj.name = name
    return obj


def texture(obj, size, **options):
    """Texture obj at `size` px (tiny random models make the same maps whatever the seed or steps:
    the map size tells one bake from another)."""
    for other in bpy.context.view_layer.objects:
        other.select_set(False)
    obj.select_set(True)
    bpy.context.view_layer.objects.active = obj
    settings.size = size
    for key, value in options.items():
        setattr(settings, key, value)
    return list(call(bpy.ops.nca3d.texture_mesh)) + [status()["last_message"]]


def maps(obj):
    """The object's maps: image name, file path, packed path, and a digest of the pixels."""
    out = {}
    for node in obj.active_material.node_tree.nodes:
        if node.bl_idname == "ShaderNodeTexImage":
            image = node.image
            pixels = np.round(np.array(image.pixels[:]) * 255).astype(np.uint8)
            out[node.name.split()[-1]] = {
                "name": image.name, "filepath": image.filepath, "packed": image.packed_file is not None,
                "packed_path": image.packed_files[0].filepath if image.packed_file else None,
                "pixels": hashlib.md5(pixels.tobytes()).hexdigest(), "size": list(image.size),
                "std": float(pixels.reshape(-1, 4)[:, :3].std())}
    return out


def images():
    return sorted(i.name for i in bpy.data.images if i.type == "IMAGE")


def tree(root):
    found = []
    for folder, dirs, files in os.walk(root):
        found += [os.path.relpath(os.path.join(folder, f), root) for f in files if not f.endswith(".blend1")]
        found += [os.path.relpath(os.path.join(folder, d), root) + "/" for d in dirs]
    return sorted(found)
'''

PACK_UNPACK = PRELUDE_SCENE + r'''
rock, ball = add_ball("Rock", 0.0), add_ball("Ball", 3.0)
RESULT["unsaved_rock"] = texture(rock, 16, storage="PACK")  # unsaved and packed: works, nothing on disk
RESULT["unsaved_cwd"] = sorted(os.listdir(OUT))
blend = os.path.join(OUT, "scene", "scene.blend")
os.makedirs(os.path.dirname(blend))
bpy.ops.wm.save_as_mainfile(filepath=blend)
RESULT["ball"] = texture(ball, 24)
RESULT["rock_first"] = maps(rock)
RESULT["rerun_rock"] = texture(rock, 32)  # a re-run replaces Rock's images
RESULT["before"] = {"Rock": maps(rock), "Ball": maps(ball)}
RESULT["images"] = images()
RESULT["materials"] = sorted(m.name for m in bpy.data.materials if m.name.startswith("NCA"))
RESULT["disk_packed"] = tree(os.path.dirname(blend))
bpy.ops.wm.save_mainfile()
copy = os.path.join(OUT, "copy", "scene.blend")
os.makedirs(os.path.dirname(copy))
bpy.ops.wm.save_as_mainfile(filepath=copy, copy=True)



def unpack_and_reload(path, method):
    """File > External Data > Unpack Resources with `method`, saved and reopened: each object's maps
    and the files next to the .blend."""
    bpy.ops.wm.open_mainfile(filepath=path)
    bpy.ops.file.unpack_all(method=method)
    bpy.ops.wm.save_mainfile()
    bpy.ops.wm.open_mainfile(filepath=path)
    return {name: maps(bpy.data.objects[name]) for name in ("Rock", "Ball")}, tree(os.path.dirname(path))


# "Write files to current directory": //textures/<file name>
RESULT["after_write_local"], RESULT["disk_unpacked"] = unpack_and_reload(blend, "WRITE_LOCAL")
# "Write files to original location": each image to its own path, //nca3d/NCA_<object>/
RESULT["after_write_original"], RESULT["disk_original"] = unpack_and_reload(copy, "WRITE_ORIGINAL")
'''


def test_pack_unpack_reload_keeps_each_objects_maps(tmp_path: Path, tiny_models):
    result = run_blender(PACK_UNPACK, tmp_path, model=tiny_models["mesh"])
    assert result["unsaved_rock"][:2] == [["FINISHED"], None], result["unsaved_rock"]
    assert "packed into the .blend, no files on disk" in result["unsaved_rock"][2]
    assert "nca3d" not in result["unsaved_cwd"]
    assert result["ball"][:2] == [["FINISHED"], None] and result["rerun_rock"][:2] == [["FINISHED"], None]
    kinds = ("albedo", "normal", "roughness")
    before = result["before"]
    for name in ("Rock", "Ball"):
        for kind in kinds:
            image = before[name][kind]
            assert image["name"] == f"NCA_{name}_{kind}" and image["packed"], image
            # packed under its own path: where Save as Files would put it, next to the .blend
            assert image["filepath"] == image["packed_path"] == f"//nca3d/NCA_{name}/NCA_{name}_{kind}.png"
    # the re-run replaced Rock's images (new pixels, same names), no .001 images, no orphans
    assert all(result["rock_first"][k]["pixels"] != before["Rock"][k]["pixels"] for k in kinds)
    assert result["images"] == sorted(f"NCA_{name}_{kind}" for name in ("Rock", "Ball") for kind in kinds)
    assert result["materials"] == ["NCA tiny_mesh", "NCA tiny_mesh.001"]
    assert result["disk_packed"] == ["scene.blend"]  # packed only: nothing on disk
    assert before["Rock"]["albedo"]["size"] == [32, 32] and before["Ball"]["albedo"]["size"] == [24, 24]

    for step in ("after_write_local", "after_write_original"):
        after = result[step]
        for name in ("Rock", "Ball"):
            for kind in kinds:
                image = after[name][kind]
                # each object keeps its own maps: same pixels as before, its own file
                assert image["pixels"] == before[name][kind]["pixels"], (step, name, kind)
                assert image["size"] == before[name][kind]["size"], (step, name, kind)
                assert not image["packed"] and image["name"] == f"NCA_{name}_{kind}"
                folder = "//textures/" if step == "after_write_local" else f"//nca3d/NCA_{name}/"
                assert image["filepath"] == f"{folder}NCA_{name}_{kind}.png", image
    assert result["disk_unpacked"] == ["scene.blend", "textures/"] + sorted(
        f"textures/NCA_{name}_{kind}.png" for name in ("Rock", "Ball") for kind in kinds)
    assert result["disk_original"] == sorted(["scene.blend", "nca3d/", "nca3d/NCA_Rock/", "nca3d/NCA_Ball/"] + [
        f"nca3d/NCA_{name}/NCA_{name}_{kind}.png" for name in ("Rock", "Ball") for kind in kinds])


FILES = PRELUDE_SCENE + r'''
rock, ball = add_ball("Rock", 0.0), add_ball("Ball", 3.0)
# An unsaved .blend without an Output Folder: files have nowhere visible to go; refused before the backend runs.
before = snapshot()
RESULT["unsaved_files"] = texture(rock, 16, storage="FILES")
RESULT["unsaved_animated"] = texture(rock, 16, storage="PACK", animate=True, frames=2, every=1)
RESULT["unsaved_same"] = snapshot() == before
RESULT["unsaved_cwd"] = sorted(os.listdir(OUT))
settings.animate = False

scene_dir = os.path.join(OUT, "scene")
blend = os.path.join(scene_dir, "scene.blend")
os.makedirs(scene_dir)
bpy.ops.wm.save_as_mainfile(filepath=blend)
# Another .blend's folder for an object called Ball: never replaced.
foreign = os.path.join(scene_dir, "nca3d", "NCA_Ball")
os.makedirs(foreign)
with open(os.path.join(foreign, "nca3d.json"), "w") as handle:
    json.dump({"blend": os.path.join(scene_dir, "other.blend"), "object": "Ball"}, handle)
with open(os.path.join(foreign, "NCA_Ball_albedo.png"), "wb") as handle:
    handle.write(b"not ours")

RESULT["files"] = texture(rock, 16, storage="FILES")
RESULT["files_maps"] = maps(rock)
RESULT["files_tree"] = tree(os.path.join(scene_dir, "nca3d"))
RESULT["record"] = json.load(open(os.path.join(scene_dir, "nca3d", "NCA_Rock", "nca3d.json")))
RESULT["rerun"] = texture(rock, 24, storage="FILES")
RESULT["rerun_maps"] = maps(rock)
RESULT["rerun_tree"] = tree(os.path.join(scene_dir, "nca3d"))
RESULT["rerun_images"] = images()
RESULT["ball"] = texture(ball, 16, storage="FILES")
RESULT["ball_maps"] = maps(ball)
RESULT["foreign"] = open(os.path.join(foreign, "NCA_Ball_albedo.png"), "rb").read().decode()

# Another model on Rock: its old material and images are replaced (removed), the new ones take the names.
set_model(settings, ARGS["volume_model"])
RESULT["other_model"] = texture(rock, 16, storage="FILES")
RESULT["other_model_maps"] = maps(rock)
RESULT["other_model_materials"] = sorted(m.name for m in bpy.data.materials if m.name.startswith("NCA"))
RESULT["other_model_images"] = images()
# Packed this time: Rock's folder is no longer used by anything, so it goes.
RESULT["packed"] = texture(rock, 16, storage="PACK")
RESULT["packed_tree"] = tree(os.path.join(scene_dir, "nca3d"))
RESULT["packed_maps"] = maps(rock)
# Animated: a sequence in Rock's folder; Loop off holds the last frame.
set_model(settings, ARGS["model"])
RESULT["animated"] = texture(rock, 16, storage="PACK", animate=True, frames=2, every=1, loop=False)
node = next(n for n in rock.active_material.node_tree.nodes if n.bl_idname == "ShaderNodeTexImage")
RESULT["animated_user"] = [node.image.source, node.image_user.use_cyclic, node.image_user.frame_duration,
                           node.image.filepath]
RESULT["animated_tree"] = tree(os.path.join(scene_dir, "nca3d", "NCA_Rock"))
RESULT["final_images"] = images()
'''


def test_files_next_to_the_blend_and_reruns_replace_them(tmp_path: Path, tiny_models):
    result = run_blender(FILES, tmp_path, model=tiny_models["mesh"], volume_model=tiny_models["volume"])
    for case in ("unsaved_files", "unsaved_animated"):
        run, error, _ = result[case]
        assert run is None and "this .blend is unsaved: save it" in error and "Output Folder" in error, error
        assert "\n" not in error.strip()
    assert result["unsaved_same"] and "nca3d" not in result["unsaved_cwd"]
    assert "Animated maps" in result["unsaved_animated"][1] or "animated maps" in result["unsaved_animated"][1]

    kinds = ("albedo", "normal", "roughness")
    scene = tmp_path / "scene" / "nca3d"
    assert result["files"][:2] == [["FINISHED"], None] and f"files in {scene / 'NCA_Rock'}" in result["files"][2]
    for kind in kinds:
        image = result["files_maps"][kind]
        assert image["name"] == f"NCA_Rock_{kind}" and not image["packed"]
        assert image["filepath"] == f"//nca3d/NCA_Rock/NCA_Rock_{kind}.png"  # relative to the .blend
    rock_files = ["NCA_Rock/", "NCA_Rock/nca3d.json"] + [f"NCA_Rock/NCA_Rock_{kind}.png" for kind in kinds]
    foreign = ["NCA_Ball/", "NCA_Ball/NCA_Ball_albedo.png", "NCA_Ball/nca3d.json"]
    assert result["files_tree"] == sorted(rock_files + foreign)
    assert result["record"]["blend"] == str(tmp_path / "scene" / "scene.blend") and result["record"]["object"] == "Rock"

    # a re-run replaces the folder's files (no NCA_Rock_2, no hidden leftovers) and the images (no .001)
    assert result["rerun"][:2] == [["FINISHED"], None]
    assert result["rerun_tree"] == result["files_tree"]
    assert all(result["rerun_maps"][k]["pixels"] != result["files_maps"][k]["pixels"] for k in kinds)
    assert result["rerun_images"] == [f"NCA_Rock_{kind}" for kind in kinds]

    # another .blend's folder NCA_Ball is left alone: Ball's files go to NCA_Ball_2
    assert result["ball"][:2] == [["FINISHED"], None] and result["foreign"] == "not ours"
    assert {m["filepath"] for m in result["ball_maps"].values()} == {
        f"//nca3d/NCA_Ball_2/NCA_Ball_2_{kind}.png" for kind in kinds}
    assert {m["name"] for m in result["ball_maps"].values()} == {f"NCA_Ball_2_{kind}" for kind in kinds}

    # another model: the old material and its images are gone, the new images take the names
    assert result["other_model"][:2] == [["FINISHED"], None], result["other_model"]
    # Rock's NCA tiny_mesh was removed; Ball's NCA tiny_mesh.001 stays
    assert result["other_model_materials"] == ["NCA tiny_mesh.001", "NCA tiny_volume"]
    rock_images = [n for n in result["other_model_images"] if n.startswith("NCA_Rock")]
    assert rock_images == sorted(m["name"] for m in result["other_model_maps"].values())
    assert all(m["name"] == f"NCA_Rock_{kind}" for kind, m in result["other_model_maps"].items())

    # packed: Rock's folder is removed, Ball's and the foreign one stay
    assert result["packed"][:2] == [["FINISHED"], None]
    assert not [p for p in result["packed_tree"] if p.startswith("NCA_Rock")]
    assert "NCA_Ball/NCA_Ball_albedo.png" in result["packed_tree"]
    assert "NCA_Ball_2/NCA_Ball_2_albedo.png" in result["packed_tree"]
    assert all(m["packed"] for m in result["packed_maps"].values())

    assert result["animated"][:2] == [["FINISHED"], None], result["animated"]
    source, cyclic, duration, path = result["animated_user"]
    assert source == "SEQUENCE" and cyclic is False and duration == 2
    assert path.startswith("//nca3d/NCA_Rock/NCA_Rock_") and path.endswith(".0001.png")
    assert result["animated_tree"] == sorted(["nca3d.json"] + [f"NCA_Rock_{kind}.{frame:04d}.png" for kind in kinds
                                                               for frame in (1, 2)])
    assert [n for n in result["final_images"] if n.startswith("NCA_Rock")] == [f"NCA_Rock_{kind}" for kind in kinds]
    assert not [p for p in os.listdir(scene) if p.startswith(".")]  # no staging folders left
    json.dumps(result)
