"""Texture Selected Mesh: bake NCA PBR maps on the active mesh and build its material."""

from __future__ import annotations

import glob
import json
import os
import re
import shutil
import tempfile

import bpy

from . import library, materials, mesh_io, prefs, runner

MAP_KINDS = ("albedo", "normal", "roughness", "height", "ao")
BASE_NAME = "nca"  # file stem of the backend's outputs inside the temp folder


def safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("._") or "nca"


def unique_folder(root: str, name: str) -> str:
    """root/name, or root/name_2, _3 ... when it exists (earlier bakes keep their files)."""
    path, index = os.path.join(root, name), 1
    while os.path.exists(path):
        index += 1
        path = os.path.join(root, f"{name}_{index}")
    return path


def wanted_maps(settings) -> list[str]:
    kinds = [k for k in ("albedo", "normal", "roughness", "height") if getattr(settings, f"use_{k}")]
    if settings.use_ao and settings.use_albedo:
        kinds.append("ao")
    return kinds


def texture_argv(python: str, mesh_path: str, model: str, out: str, settings, scale: float, device: str) -> list:
    argv = [python, "-m", "nca3d", "texture", mesh_path, "--model", model, "--out", out, "--name", BASE_NAME,
            "--size", str(settings.size), "--steps", str(settings.steps), "--seed", str(settings.seed),
            "--preview-size", "0", "--device", device, "--progress", "json"]
    if scale > 0:
        argv += ["--scale", f"{float(scale):.6g}"]
    if settings.animate:
        argv += ["--frames", str(settings.frames), "--every", str(settings.every)]
    if settings.displace and settings.use_height:
        argv += ["--displace"]
        if settings.displace_strength > 0:  # world units: the exported mesh carries the object's scale
            argv += ["--displace-strength", f"{float(settings.displace_strength):.6g}"]
    return argv


def displace_strength(folder: str) -> float:
    """The strength the backend displaced by (NAME.json, `--displace`), in world units."""
    try:
        with open(os.path.join(folder, f"{BASE_NAME}.json"), encoding="utf-8") as handle:
            return float(json.load(handle)["displacement"]["strength"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise runner.UserError(f"the backend did not record its displacement strength ({exc}); "
                               f"is it an nca3d without --displace?") from None


def map_files(folder: str, kind: str, animated: bool) -> list[str]:
    """The backend's files of one map kind: [NAME_kind.png] or its numbered frames, in order."""
    if animated:
        pattern = os.path.join(glob.escape(folder), f"{BASE_NAME}_{kind}.[0-9]*.png")
        return sorted(glob.glob(pattern))
    path = os.path.join(folder, f"{BASE_NAME}_{kind}.png")
    return [path] if os.path.isfile(path) else []


class TextureTask(runner.Task):
    label = "NCA texture"

    def __init__(self, argv, workdir, obj_name, uv_name, settings_snapshot, model_label):
        super().__init__(argv, workdir)
        self.obj_name = obj_name
        self.uv_name = uv_name
        self.settings = settings_snapshot
        self.model_label = model_label

    @property
    def out(self) -> str:
        return os.path.join(self.workdir, "out")

    def apply(self, context, job) -> str:
        obj = bpy.data.objects.get(self.obj_name)
        if obj is None or obj.type != "MESH":
            raise runner.UserError(f"the object '{self.obj_name}' is gone")
        if obj.mode != "OBJECT":
            raise runner.UserError(f"'{obj.name}' is in {obj.mode.replace('_', ' ').title()} mode; "
                                   f"switch to Object Mode and run it again")
        s = self.settings
        animated = s["animate"]
        found = {kind: map_files(self.out, kind, animated) for kind in s["maps"]}
        found = {kind: files for kind, files in found.items() if files}
        if not found:
            raise runner.UserError("the backend wrote none of the chosen maps")
        if animated and any(len(files) != s["frames"] for files in found.values()):
            raise runner.UserError("the backend wrote an incomplete image sequence")
        displace = s["displace"] and "height" in found
        height_scale = displace_strength(self.out) if displace else s["displacement"] * mesh_io.object_size(obj)

        # Everything that can fail happens before the scene changes; what was created is removed on error.
        created_images, new_mesh, folder = [], None, None
        keep_files = animated or s["storage"] == "FILES"
        try:
            if keep_files:
                folder = unique_folder(prefs.output_root(context), safe_name(f"{obj.name}_{self.model_label}"))
                os.makedirs(folder)
                copied = {}
                for kind, files in found.items():
                    copied[kind] = []
                    for path in files:
                        target = os.path.join(folder, safe_name(f"{obj.name}_{self.model_label}") +
                                              os.path.basename(path)[len(BASE_NAME):])
                        shutil.copyfile(path, target)
                        copied[kind].append(target)
                found = copied
            images = {}
            for kind, files in found.items():
                image = bpy.data.images.load(files[0], check_existing=False)
                created_images.append(image)
                image.name = f"NCA {obj.name} {kind}"
                image.colorspace_settings.name = materials.COLOR_SPACES[kind]
                if tuple(image.size) != (s["size"], s["size"]):
                    raise runner.UserError(f"the {kind} map is {image.size[0]}x{image.size[1]} px, "
                                           f"not {s['size']} px")
                if animated:
                    image.source = "SEQUENCE"
                if keep_files:
                    if bpy.data.filepath:
                        try:
                            image.filepath = bpy.path.relpath(files[0])
                        except ValueError:  # another drive on Windows
                            pass
                else:
                    image.pack()
                images[kind] = image
            uv_name = self.uv_name
            if uv_name is None:
                smooth = any(p.use_smooth for p in obj.data.polygons) if len(obj.data.polygons) else True
                new_mesh = mesh_io.mesh_from_obj(os.path.join(self.out, f"{BASE_NAME}.obj"), obj,
                                                 obj.data.name, uv_name="UVMap", smooth=smooth)
                uv_name = "UVMap"
        except Exception:
            for image in created_images:
                bpy.data.images.remove(image)
            if new_mesh is not None:
                bpy.data.meshes.remove(new_mesh)
            if folder is not None:
                shutil.rmtree(folder, ignore_errors=True)
            raise

        # The scene changes from here on.
        notes = [s["maps_note"]] if s["maps_note"] else []
        if new_mesh is not None:
            for material in obj.data.materials:
                new_mesh.materials.append(material)
            obj.data = new_mesh
            applied = [m for m in obj.modifiers if m.show_viewport or m.show_render]
            for modifier in applied:
                modifier.show_viewport = modifier.show_render = False
            notes.append("the mesh had no UV map: it now has the backend's unwrapped mesh"
                         + (f" (modifiers applied; {len(applied)} turned off)" if applied else ""))
        material = self._material(obj)
        sequence = ({"frames": s["frames"], "frame_start": context.scene.frame_start, "cyclic": s["loop"]}
                    if animated else None)
        materials.build_texture_material(material, images, uv_name, height_scale, s["use_ao"], sequence,
                                         displace=displace)
        material["nca3d_model"] = self.model_label
        if len(obj.material_slots) == 0:
            obj.data.materials.append(material)
        else:
            for slot in obj.material_slots:
                slot.material = material
        if displace:
            notes.append(f"displacement {height_scale:.4g} (Cycles)")
        kinds = ", ".join(images)
        where = "packed" if not keep_files else f"saved in {os.path.dirname(next(iter(found.values()))[0])}"
        message = f"NCA texture: '{material.name}' on '{obj.name}' ({kinds}; {where})"
        return message + ("; " + "; ".join(notes) if notes else "")

    def _material(self, obj):
        """The object's NCA material for this model when only it uses it (rebuilt), else a new one."""
        name = f"NCA {self.model_label}"
        current = obj.active_material
        if current is None or current.library is not None or current.get("nca3d_model") != self.model_label:
            return bpy.data.materials.new(name)
        users_here = sum(1 for slot in obj.material_slots if slot.material == current)
        if current.get("nca3d") and current.users == users_here and not current.use_fake_user:
            return current
        return bpy.data.materials.new(name)


class NCA3D_OT_texture_mesh(runner.BackendOperator, bpy.types.Operator):
    """Grow the chosen NCA model on the active mesh and bake its PBR maps into a new material"""

    bl_idname = "nca3d.texture_mesh"
    bl_label = "NCA: Texture Selected Mesh"
    bl_options = {"REGISTER", "UNDO"}

    @classmethod
    def poll_more(cls, context):
        obj = context.active_object
        if obj is None or obj.type != "MESH":
            cls.poll_message_set("Select a mesh object (it must be the active object)")
            return False
        if obj.mode != "OBJECT":
            cls.poll_message_set("Switch to Object Mode first")
            return False
        return True

    def make_task(self, context):
        obj = context.active_object
        if obj is None or obj.type != "MESH":
            raise runner.UserError("select a mesh object to texture")
        settings = context.scene.nca3d_texture
        model = library.model_argument(settings)
        maps = wanted_maps(settings)
        if not maps:
            raise runner.UserError("choose at least one map to bake")
        if settings.displace and not settings.use_height:
            raise runner.UserError("Displace needs the Height map: turn Height on, or Displace off")
        maps, maps_note = library.bakeable_maps(settings, maps)
        python = prefs.resolve_python(context)
        scale = library.texture_spacing(context, obj, settings)  # world units per cell, as the exported mesh
        workdir = tempfile.mkdtemp(prefix="nca3d-texture-")
        try:
            mesh_path = os.path.join(workdir, "mesh.obj")
            exported = mesh_io.export_evaluated_obj(context, obj, mesh_path)
        except mesh_io.MeshError as exc:
            shutil.rmtree(workdir, ignore_errors=True)
            raise runner.UserError(str(exc)) from None
        except Exception:
            shutil.rmtree(workdir, ignore_errors=True)
            raise
        snapshot = {"maps": maps, "animate": settings.animate, "frames": settings.frames,
                    "loop": settings.loop, "storage": settings.storage, "size": settings.size,
                    "use_ao": settings.use_ao, "displacement": settings.displacement,
                    "displace": settings.displace, "maps_note": maps_note}
        argv = texture_argv(python, mesh_path, model, os.path.join(workdir, "out"), settings, scale,
                            prefs.device(context))
        return TextureTask(argv, workdir, obj.name, exported["uv_name"], snapshot, library.model_label(settings))


classes = (NCA3D_OT_texture_mesh,)
