"""Registering and unregistering the add-on leaves nothing behind; every operator and property is
described; Check Backend and the model library talk to the real backend."""

from __future__ import annotations

from pathlib import Path

from .conftest import run_blender

REGISTER = r'''
import gc


def capture():
    handlers = {name: sorted(getattr(f, "__qualname__", str(f)) for f in getattr(bpy.app.handlers, name))
                for name in dir(bpy.app.handlers) if not name.startswith("_")
                and isinstance(getattr(bpy.app.handlers, name), list)}
    menu = bpy.types.VIEW3D_MT_volume_add
    # (the menu's own draw joins the list the first time anything is appended: not ours)
    draw_funcs = [getattr(f, "__qualname__", str(f)) for f in getattr(menu.draw, "_draw_funcs", [])
                  if getattr(f, "__qualname__", "") != "VIEW3D_MT_volume_add.draw"]
    return {"types": sorted(dir(bpy.types)), "handlers": handlers, "menu": draw_funcs,
            "scene_props": sorted(p for p in ("nca3d_texture", "nca3d_volume") if hasattr(bpy.types.Scene, p)),
            "wm_props": sorted(p for p in ("nca3d_job",) if hasattr(bpy.types.WindowManager, p)),
            "ops": sorted(n for n in dir(bpy.ops.nca3d) if hasattr(getattr(bpy.ops.nca3d, n), "poll")),
            "addons": sorted(bpy.context.preferences.addons.keys()),
            "threads": sorted(t.name for t in threading.enumerate() if t.name.startswith("nca3d"))}


before = capture()
enable_addon()
during = capture()
mod = addon()
RESULT["new_types"] = sorted(set(during["types"]) - set(before["types"]))
RESULT["during"] = {k: during[k] for k in ("handlers", "menu", "scene_props", "wm_props", "ops", "addons")}

# Operators: F3-searchable labels, descriptions; properties: every one has a tooltip.
RESULT["operators"] = {}
for name in RESULT["new_types"]:
    cls = getattr(bpy.types, name)
    if "_OT_" in name:
        category, op_name = cls.bl_idname.split(".")
        rna = getattr(getattr(bpy.ops, category), op_name).get_rna_type()
        RESULT["operators"][name] = {"label": rna.name, "description": rna.description, "idname": cls.bl_idname}
missing = []
groups = [bpy.types.Scene.bl_rna.properties["nca3d_texture"].fixed_type,
          bpy.types.Scene.bl_rna.properties["nca3d_volume"].fixed_type,
          bpy.types.WindowManager.bl_rna.properties["nca3d_job"].fixed_type,
          type(bpy.context.preferences.addons[MODULE].preferences).bl_rna]
for group in groups:
    for prop in group.properties:
        if prop.identifier in ("rna_type", "name", "bl_idname"):
            continue
        if not prop.description.strip():
            missing.append(f"{group.identifier}.{prop.identifier}")
RESULT["props_without_description"] = missing
RESULT["prop_count"] = sum(len(g.properties) for g in groups)

# The panels' draw code, on a recording layout (drawing needs a window): every prop exists.
class Layout:
    def __init__(self, calls):
        self.calls = calls
        self.enabled = True

    def __getattr__(self, name):
        def method(*args, **kwargs):
            if name in ("prop", "template_icon_view"):
                data, prop = args[0], args[1]
                assert prop in data.bl_rna.properties, (name, prop)
                self.calls.append(f"{name}:{prop}")
            elif name == "operator":
                category, op_name = args[0].split(".")
                assert hasattr(getattr(bpy.ops, category), op_name), args[0]
                self.calls.append(f"operator:{args[0]}")
            elif name in ("label", "progress"):
                self.calls.append(f"{name}:{kwargs.get('text', '')}")
            return Layout(self.calls)
        return method


ui = mod.ui
calls = []
bpy.context.scene.nca3d_volume.model = "FILE"  # (the texture panel keeps its default bundled model)
ui.draw_texture_settings(Layout(calls), bpy.context)
ui.draw_volume_settings(Layout(calls), bpy.context)
info = bpy.context.window_manager.nca3d_job
info.running, info.label, info.stage, info.fraction = True, "NCA texture", "bake", 0.5
ui.draw_status(Layout(calls), bpy.context)
info.running = False
from types import SimpleNamespace
real_prefs = bpy.context.preferences.addons[MODULE].preferences
type(real_prefs).draw(SimpleNamespace(layout=Layout(calls), python_path=real_prefs.python_path,
                                      bl_rna=real_prefs.bl_rna), bpy.context)
RESULT["draw_calls"] = calls

# Check Backend runs `python -m nca3d --version`; then the library lists the bundled models.
RESULT["check"] = call(bpy.ops.nca3d.check_backend)
RESULT["check_status"] = status()
mod.library.wait()
RESULT["library"] = mod.library.models()
RESULT["library_icon"] = {n: mod.library.has_preview(n) for n in RESULT["library"]}
settings = bpy.context.scene.nca3d_volume
if "volume_default" in RESULT["library"]:
    settings.model = "volume_default"
    RESULT["model_argument"] = mod.library.model_argument(settings)

# Unregister while a library listing (and its timer) and a backend job are running.
mod.library.refresh(ARGS["python"])
RESULT["timer_while_listing"] = bpy.app.timers.is_registered(mod.library._collect)
job = mod.backend.Job([ARGS["python"], "-c", "import time; time.sleep(60)"], json_progress=False).start()
mod.runner._ACTIVE["job"] = job
collect = mod.library._collect
addon_utils.disable(MODULE, default_set=True)
RESULT["job_after_disable"] = [job.state, os.path.exists(f"/proc/{job.pid}")]
RESULT["timer_after_disable"] = bpy.app.timers.is_registered(collect)
deadline = time.monotonic() + 20  # reader threads end once the killed processes' pipes close
while time.monotonic() < deadline and capture()["threads"] != before["threads"]:
    time.sleep(0.1)
after = capture()
RESULT["diff"] = {k: [before[k], after[k]] for k in before if before[k] != after[k]}

# A second register/unregister cycle works the same.
enable_addon()
again = capture()
RESULT["again_same_types"] = again["types"] == during["types"]
addon_utils.disable(MODULE, default_set=True)
final = capture()
RESULT["final_diff"] = {k: [before[k], final[k]] for k in before if before[k] != final[k]}
'''


def test_register_unregister_leaves_nothing(tmp_path: Path):
    result = run_blender(REGISTER, tmp_path)
    new = result["new_types"]
    assert {"NCA3D_OT_texture_mesh", "NCA3D_OT_add_volume", "NCA3D_OT_check_backend", "NCA3D_OT_cancel_job",
            "VIEW3D_PT_nca3d", "MATERIAL_PT_nca3d"} <= set(new), new
    during = result["during"]
    assert during["scene_props"] == ["nca3d_texture", "nca3d_volume"] and during["wm_props"] == ["nca3d_job"]
    assert "menu_add_volume" in during["menu"]
    assert any("_stop_jobs_on_load" in f for f in during["handlers"]["load_pre"])
    assert {"texture_mesh", "add_volume", "check_backend", "cancel_job"} <= set(during["ops"])
    for identifier, op in result["operators"].items():
        assert op["idname"].startswith("nca3d.") and op["label"].startswith("NCA: "), op
        assert op["description"].strip(), identifier
    assert result["prop_count"] > 30 and result["props_without_description"] == []

    calls = result["draw_calls"]
    for want in ("operator:nca3d.texture_mesh", "operator:nca3d.add_volume", "operator:nca3d.cancel_job",
                 "operator:nca3d.check_backend", "prop:model", "prop:model_file", "prop:size", "prop:scale",
                 "prop:steps", "prop:seed", "prop:use_normal", "prop:use_ao", "prop:displace", "prop:displacement",
                 "prop:animate", "prop:storage",
                 "prop:res", "prop:python_path", "progress:NCA texture: bake 50%"):
        assert want in calls, want

    assert result["check"] == [["FINISHED"], None], result["check"]
    assert "nca3d 0.1.0" in result["check_status"]["last_message"]
    library = result["library"]
    assert "volume_default" in library and library["volume_default"]["path"].endswith("volume_default.nca3d")
    if library["volume_default"]["preview"]:
        assert result["library_icon"]["volume_default"]
    assert result["model_argument"] == "volume_default"

    assert result["timer_while_listing"] and not result["timer_after_disable"]
    assert result["job_after_disable"] == ["CANCELLED", False]
    assert result["diff"] == {}, result["diff"]
    assert result["again_same_types"] and result["final_diff"] == {}
