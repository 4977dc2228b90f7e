"""The model pickers in Blender (bpy): models offered by domain, the panel's defaults, map toggles that
follow the model, bundled models chosen by name in a background script, and a world-space texture
scale that is the same on objects of different sizes."""

from __future__ import annotations

import math
from pathlib import Path

from .conftest import run_blender

PBR_MESH_MODELS = {"eroded_concrete_mesh", "tree_bark_mesh", "wood_shingles_mesh"}
# granite_mesh's training icosphere: frequency 64, 40,962 cells on a radius-1 sphere
GRANITE_SPACING = math.sqrt(4 * math.pi / (10 * 64 ** 2 + 2) / (math.sqrt(3) / 2))
ORE_SPACING = math.sqrt(4 * math.pi / 17_844 / (math.sqrt(3) / 2))  # zoom 0.66: 10 (0.66 x 64)^2 + 2 cells


PICKERS = r'''
enable_addon()
mod = addon()
scene = bpy.context.scene
tex, vol = scene.nca3d_texture, scene.nca3d_volume
# Nothing listed yet and no timer runs: reading the pickers lists the library synchronously.
RESULT["defaults"] = [tex.model, vol.model]
RESULT["items"] = {}
for name, settings in (("texture", tex), ("volume", vol)):  # the items RNA gets from the enum's callback
    items = getattr(mod.library, f"{name}_model_items")(settings, bpy.context)
    RESULT["items"][name] = {item[0]: item[2] for item in items}
RESULT["describe"] = {n: {k: e[k] for k in ("domain", "channels", "lattice", "maps", "pbr", "spacing")}
                      for n, e in mod.library.models().items()}
# A 2D or mesh model cannot be set on the volume picker; a 2D one not on the texture picker.
for picker, settings, name in (("volume", vol, "granite_mesh"), ("texture", tex, "bricks_2d")):
    try:
        settings.model = name
        RESULT[f"{picker}_refuses"] = None
    except TypeError as exc:
        RESULT[f"{picker}_refuses"] = str(exc)
# A new scene starts on the same defaults.
RESULT["new_scene"] = [bpy.data.scenes.new("Other").nca3d_texture.model]


class Layout:
    """Records each drawn property with whether its row is enabled (greyed out when not)."""

    def __init__(self, calls, enabled=True):
        self.calls, self.enabled, self.parent_enabled, self.active = calls, True, enabled, True

    def __getattr__(self, name):
        def method(*args, **kwargs):
            on = self.parent_enabled and self.enabled
            if name == "prop":
                self.calls.append(["prop", args[1], on])
            elif name == "label":
                self.calls.append(["label", kwargs.get("text", ""), on])
            return Layout(self.calls, on)
        return method


def draw(model, **values):
    tex.model = model
    for key, value in values.items():
        setattr(tex, key, value)
    calls = []
    mod.ui.draw_texture_settings(Layout(calls), bpy.context)
    return {"props": {c[1]: c[2] for c in calls if c[0] == "prop"}, "labels": [c[1] for c in calls if c[0] == "label"]}


RESULT["draw_rgb"] = draw("granite_mesh")
RESULT["draw_pbr"] = draw("eroded_concrete_mesh")
RESULT["draw_scaled"] = draw("eroded_concrete_mesh", scale=0.25)
tex.scale = 0.0
set_model(tex, ARGS["rgb_file"])
RESULT["file_model"] = {"info": mod.library.model_info(tex)["maps"], "draw": draw("FILE")}
'''


def test_pickers_offer_models_by_domain(tmp_path: Path, tiny_models):
    result = run_blender(PICKERS, tmp_path, rgb_file=tiny_models["volume"])
    describe = result["describe"]
    texture, volume = result["items"]["texture"], result["items"]["volume"]
    domains = {name: entry["domain"] for name, entry in describe.items()}
    assert "2d" in domains.values()
    assert set(texture) == {n for n, d in domains.items() if d in ("mesh", "volume")} | {"FILE"}
    assert set(volume) == {n for n, d in domains.items() if d == "volume"} | {"FILE"}
    assert "Mesh model" in texture["granite_mesh"] and "solid texture" in texture["volume_default"]
    assert "albedo, normal, roughness, height, ao" in texture["eroded_concrete_mesh"]
    assert "OpenVDB" in volume["volume_default"]
    assert result["defaults"][0] in PBR_MESH_MODELS and result["defaults"][1] == "volume_default"
    assert result["new_scene"] == [result["defaults"][0]]
    assert "granite_mesh" in result["volume_refuses"] and "bricks_2d" in result["texture_refuses"]

    # the backend reports each model's header facts; the add-on derives maps and training spacing
    assert describe["granite_mesh"]["channels"] == ["rgb"] and describe["granite_mesh"]["lattice"]["kind"] == "mesh"
    assert describe["granite_mesh"]["maps"] == ["albedo"] and not describe["granite_mesh"]["pbr"]
    assert describe["eroded_concrete_mesh"]["maps"] == ["albedo", "normal", "roughness", "height", "ao"]
    assert math.isclose(describe["granite_mesh"]["spacing"], GRANITE_SPACING, rel_tol=1e-9)
    assert math.isclose(describe["ore_mesh"]["spacing"], ORE_SPACING, rel_tol=1e-9)  # as default_cells
    assert math.isclose(describe["volume_default"]["spacing"], 2.0 / 64, rel_tol=1e-9)

    rgb, pbr = result["draw_rgb"], result["draw_pbr"]
    for kind in ("normal", "roughness", "height", "ao"):  # greyed out for the RGB model, with the reason
        assert rgb["props"][f"use_{kind}"] is False and pbr["props"][f"use_{kind}" if kind != "ao" else "use_ao"]
    assert rgb["props"]["use_albedo"] and rgb["props"]["displace"] is False
    assert "'granite_mesh' has albedo only (no normal, roughness, height, ao)" in rgb["labels"]
    assert not any("has" in label for label in pbr["labels"])
    auto = [label for label in pbr["labels"] if label.startswith("Auto:")]
    assert auto and "per cell" in auto[0] and not any(lb.startswith("Auto:") for lb in result["draw_scaled"]["labels"])
    assert rgb["props"]["nca3d_texture_scale"]  # the active object's own override
    # A model file's header is read by the add-on: a volume model (rgb + density) makes albedo only.
    assert result["file_model"]["info"] == ["albedo"]
    assert result["file_model"]["draw"]["props"]["use_normal"] is False


FIRST_CLICK = r'''
enable_addon()
obj = bpy.data.objects["Cube"]  # the default scene's cube, as a new user finds it
bpy.context.view_layer.objects.active = obj
obj.select_set(True)
settings = bpy.context.scene.nca3d_texture
settings.size = 32  # the only change from the panel's defaults (speed)
RESULT["model"] = settings.model
t0 = time.time()
RESULT["run"] = call(bpy.ops.nca3d.texture_mesh)
RESULT["seconds"] = time.time() - t0
RESULT["status"] = status()
RESULT["links"] = links_of(obj.active_material) if obj.active_material else []
'''


def test_first_click_with_the_panel_defaults_succeeds(tmp_path: Path):
    result = run_blender(FIRST_CLICK, tmp_path, timeout=600)
    assert result["model"] in PBR_MESH_MODELS
    assert result["run"] == [["FINISHED"], None], result["run"]
    assert result["status"]["last_level"] == "INFO", result["status"]
    targets = {link[3] for link in result["links"]}
    assert {"Base Color", "Roughness", "Normal", "Displacement"} <= targets, targets


SCRIPTED = r'''
enable_addon()
mod = addon()
bpy.ops.object.select_all(action="SELECT")
bpy.ops.object.delete()
bpy.ops.mesh.primitive_uv_sphere_add(segments=16, ring_count=8, radius=0.5)
obj = bpy.context.active_object
tex = bpy.context.scene.nca3d_texture
# A bundled model by name, first thing in a background script: no timer has listed the library.
tex.model = "granite_mesh"
RESULT["model"] = tex.model
tex.size = 32
tex.steps = 4
starts = []
start = mod.backend.Job.start
mod.backend.Job.start = lambda job: (starts.append(job.argv[:4]), start(job))[1]


def case(name):
    base = snapshot()
    RESULT[name] = {"run": call(bpy.ops.nca3d.texture_mesh), "same": snapshot() == base, "status": status(),
                    "backend_runs": len(starts)}
    starts.clear()


# Maps the model cannot make are refused before the backend runs, naming what it has.
tex.use_albedo = False
case("no_map_it_has")
tex.use_albedo = True
tex.displace = True
case("displace_without_height")
tex.displace = False
# The default toggles (albedo, normal, roughness, height): the model's albedo is baked, the rest named.
case("albedo_only")
mat = obj.active_material
RESULT["links"] = links_of(mat)
bsdf = next(n for n in mat.node_tree.nodes if n.bl_idname == "ShaderNodeBsdfPrincipled")
RESULT["roughness"] = bsdf.inputs["Roughness"].default_value
RESULT["images"] = sorted(n.name for n in mat.node_tree.nodes if n.bl_idname == "ShaderNodeTexImage")
# The operator's own `model` argument: it becomes the panel's choice; a 2D or unknown name is refused.
tex.model = "FILE"
tex.model_file = ""
base = snapshot()
RESULT["argument_2d"] = {"run": call(bpy.ops.nca3d.texture_mesh, model="bricks_2d"), "same": snapshot() == base}
RESULT["argument"] = {"run": call(bpy.ops.nca3d.texture_mesh, model="granite_mesh"), "model": tex.model}
'''


def test_a_background_script_textures_with_a_bundled_name(tmp_path: Path):
    result = run_blender(SCRIPTED, tmp_path)
    assert result["model"] == "granite_mesh"
    refusals = {"no_map_it_has": "'granite_mesh' has albedo only (no normal, roughness, height): turn on Albedo",
                "displace_without_height": "Displace needs a height map and 'granite_mesh' has none"}
    for name, words in refusals.items():
        case = result[name]
        assert case["run"][0] is None and words in case["run"][1], (name, case)
        assert case["same"] and case["backend_runs"] == 0, (name, case)
    done = result["albedo_only"]
    assert done["run"] == [["FINISHED"], None] and done["backend_runs"] == 1, done
    assert "'granite_mesh' has albedo only (no normal, roughness, height)" in done["status"]["last_message"]
    assert result["images"] == ["NCA albedo"]
    assert not any(link[3] == "Roughness" for link in result["links"])
    assert math.isclose(result["roughness"], 0.8, abs_tol=1e-6)  # matte, not Blender's 0.5
    refused = result["argument_2d"]
    assert refused["run"][0] is None and refused["same"], refused
    assert "'bricks_2d' is not a bundled mesh or volume model; use one of" in refused["run"][1], refused
    assert result["argument"] == {"run": [["FINISHED"], None], "model": "granite_mesh"}, result["argument"]


WORLD_SCALE = r'''
enable_addon()
mod = addon()
bpy.ops.object.select_all(action="SELECT")
bpy.ops.object.delete()
bpy.ops.mesh.primitive_uv_sphere_add(segments=24, ring_count=12, radius=0.5, location=(-3, 0, 0))
small = bpy.context.active_object
bpy.ops.mesh.primitive_uv_sphere_add(segments=24, ring_count=12, radius=1.0, location=(3, 0, 0))
big = bpy.context.active_object
big.scale = (2.0, 2.0, 2.0)  # a radius-2 sphere in the world
tex = bpy.context.scene.nca3d_texture
tex.model = "granite_mesh"
tex.size = 32
tex.steps = 2
records = []
apply = mod.ops_texture.TextureTask.apply


def recording_apply(self, context, job):
    with open(os.path.join(self.out, "nca.json")) as handle:  # the backend's record of its settings
        records.append(json.load(handle)["lattice"])
    return apply(self, context, job)


mod.ops_texture.TextureTask.apply = recording_apply


def texture(obj):
    bpy.ops.object.select_all(action="DESELECT")
    bpy.context.view_layer.objects.active = obj
    obj.select_set(True)
    base = snapshot()
    run = call(bpy.ops.nca3d.texture_mesh)
    return {"run": run, "lattice": records[-1] if run[0] else None, "same": snapshot() == base}


RESULT["auto"] = [texture(small), texture(big)]  # scene Texture Scale 0: the model's training spacing
tex.scale = 0.2
RESULT["scene"] = [texture(small), texture(big)]
big.nca3d_texture_scale = 0.3  # the object's own override
RESULT["override"] = texture(big)
big.nca3d_texture_scale = 0.0
tex.scale = 0.001  # 4 million cells on the big sphere: refused before the backend runs
RESULT["too_fine"] = texture(big)
'''


def test_objects_of_different_sizes_get_the_same_world_space_cell_spacing(tmp_path: Path):
    result = run_blender(WORLD_SCALE, tmp_path)
    for key, spacing in (("auto", GRANITE_SPACING), ("scene", 0.2)):
        small, big = result[key]
        assert small["run"] == [["FINISHED"], None] and big["run"] == [["FINISHED"], None], (key, small, big)
        for lattice in (small["lattice"], big["lattice"]):
            assert math.isclose(lattice["spacing"], spacing, rel_tol=1e-5), (key, lattice)
            assert 0.85 < lattice["edge_median"] < 1.15, (key, lattice)  # the lattice's edges, in spacings
        # the same spacing on a sphere 4x as wide: about 16x the cells (not the same count on both)
        assert 11 < big["lattice"]["cells"] / small["lattice"]["cells"] < 22, (key, small, big)
    assert math.isclose(result["override"]["lattice"]["spacing"], 0.3, rel_tol=1e-5)
    too_fine = result["too_fine"]
    assert too_fine["run"][0] is None and too_fine["same"], too_fine
    assert "would need" in too_fine["run"][1] and "raise Texture Scale to" in too_fine["run"][1], too_fine
