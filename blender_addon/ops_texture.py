"""Texture Selected Mesh: bake NCA PBR maps on the active mesh and build its material."""

from __future__ import annotations

import glob
import json
import os
import re
import shutil
import tempfile
import uuid

import bpy

from . import config, library, materials, mesh_io, runner

MAP_KINDS = ("albedo", "normal", "roughness", "height", "ao")
BASE_NAME = "nca"  # file stem of the backend's outputs inside the temp folder


def safe_name(text: str) -> str:
    """`text` as a file name: letters (any script), digits, '_', '.', '-'."""
    return re.sub(r"[^\w.-]+", "_", text).strip("._") or "nca"


RECORD = "nca3d.json"  # in each output folder: which .blend (and Blender session) and object its files belong to
SESSION = uuid.uuid4().hex  # tells this session's folders from others' while the .blend is unsaved


def files_root(context, what: str, other: str = "") -> str:
    """The absolute folder for files on disk, or runner.UserError when the .blend is unsaved and no
    Output Folder is set (nothing is written into hidden folders). what: why files are needed;
    other: another way out."""
    root = config.output_root(context)
    if root is None:
        raise runner.UserError(f"{what} and this .blend is unsaved: save it (files go to the folder 'nca3d' next "
                               f"to it) or set an Output Folder in Preferences > Add-ons > NCA3D{other}")
    return root


def packed_root(context) -> str:
    """The folder packed images name as theirs (nothing is written there): where 'Save as Files' would
    put them, relative to the .blend where it can be ('//nca3d' while it is unsaved)."""
    root = config.output_root(context)
    return relative(root) if root else "//nca3d"


def _absolute(path: str, library=None) -> str:
    return os.path.normcase(os.path.abspath(bpy.path.abspath(path, library=library)))


def file_users(folder: str, skip=()) -> list:
    """Images and volumes of this .blend (other than `skip`) whose files are in `folder`."""
    inside = _absolute(folder) + os.sep
    users = []
    for block in list(bpy.data.images) + list(bpy.data.volumes):
        if block in skip or not block.filepath or getattr(block, "packed_file", None) is not None:
            continue
        if _absolute(block.filepath, block.library).startswith(inside):
            users.append(block)
    return users


def _written_here(folder: str) -> bool:
    """The folder's RECORD names this saved .blend, or this session while the .blend is unsaved."""
    try:
        with open(os.path.join(folder, RECORD), encoding="utf-8") as handle:
            record = json.load(handle)
    except (OSError, ValueError):
        return False
    if not isinstance(record, dict) or record.get("blend") != bpy.data.filepath:
        return False
    return bool(bpy.data.filepath) or record.get("session") == SESSION


def folder_free(folder: str, replaced=()) -> bool:
    """True when `folder` is missing, or holds this add-on's files that nothing else uses: no other
    image or volume of this .blend, and it was written for this saved .blend or `replaced` (the
    images this run replaces) use it. A folder of another .blend (or session) is never replaced."""
    if not os.path.exists(folder):
        return True
    if not os.path.isfile(os.path.join(folder, RECORD)) or file_users(folder, skip=replaced):
        return False
    return _written_here(folder) or bool(file_users(folder))  # file_users: only what this run replaces


def stage_folder(root: str, name: str, files: dict[str, str], record: dict) -> str:
    """Copy files (target name -> source path) and the RECORD into a new hidden folder in `root`
    (it becomes root/name with commit_folder)."""
    os.makedirs(root, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".{name}.partial-", dir=root)
    try:
        for target, source in files.items():
            shutil.copyfile(source, os.path.join(staging, target))
        with open(os.path.join(staging, RECORD), "w", encoding="utf-8") as handle:
            json.dump({**record, "blend": bpy.data.filepath, "session": SESSION}, handle, indent=1)
    except Exception:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return staging


def commit_folder(staging: str, folder: str) -> None:
    """Put the staged folder in place of `folder` (its earlier files are removed)."""
    old = None
    if os.path.exists(folder):
        old = tempfile.mkdtemp(prefix=f".{os.path.basename(folder)}.old-", dir=os.path.dirname(folder))
        os.rmdir(old)
        os.rename(folder, old)
    try:
        os.rename(staging, folder)
    except OSError:
        if old is not None:
            os.rename(old, folder)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def drop_unused_folders(folders) -> None:
    """Remove this add-on's output folders (with a RECORD) that no image or volume uses any more."""
    for folder in set(folders):
        if os.path.isfile(os.path.join(folder, RECORD)) and not file_users(folder):
            shutil.rmtree(folder, ignore_errors=True)


def relative(path: str) -> str:
    """`path` relative to the saved .blend (//...) where it can be, else absolute."""
    if bpy.data.filepath:
        try:
            return bpy.path.relpath(path)
        except ValueError:  # another drive on Windows
            pass
    return path


def replaced_by(obj) -> tuple[set, set]:
    """What a bake on `obj` frees: its NCA materials that no one else uses (taken off it, or the one
    rebuilt) and the images only those use."""
    slots = [slot.material for slot in obj.material_slots if slot.material is not None]
    materials_ = {m for m in set(slots) if m.get("nca3d") and m.library is None
                  and not m.use_fake_user and m.users <= slots.count(m)}
    uses: dict = {}
    for m in materials_:
        for node in m.node_tree.nodes if m.node_tree else ():
            if node.bl_idname == "ShaderNodeTexImage" and node.image is not None:
                uses[node.image] = uses.get(node.image, 0) + 1
    images = {i for i, n in uses.items() if i.users <= n and not i.use_fake_user and i.library is None}
    return materials_, images


def file_name(stem: str, kind: str, backend_file: str) -> str:
    """The file name of a map: <stem>_<kind>.png, or .0001.png ... as the backend's frame."""
    return f"{safe_name(stem)}_{kind}" + os.path.basename(backend_file)[len(f"{BASE_NAME}_{kind}"):]


def image_stem(obj_name: str, kinds, replaced: set, root: str | None) -> str:
    """NCA_<object>, or NCA_<object>_2, _3 ... when an image this run does not replace already has one of its
    names (NCA_<object>_<map>) or file names, or its folder in `root` (files only) is another's."""
    names = {i.name for i in bpy.data.images if i not in replaced}
    files = {os.path.basename(bpy.path.abspath(i.filepath)) for i in bpy.data.images
             if i not in replaced and i.filepath}
    index = 1
    while True:
        stem = f"NCA_{obj_name}" + (f"_{index}" if index > 1 else "")
        taken = any(f"{stem}_{kind}" in names or f"{safe_name(stem)}_{kind}.png" in files for kind in kinds)
        if not taken and (root is None or folder_free(os.path.join(root, safe_name(stem)), replaced)):
            return stem
        index += 1


def wanted_maps(settings) -> list[str]:
    kinds = [k for k in ("albedo", "normal", "roughness", "height") if getattr(settings, f"use_{k}")]
    if settings.use_ao and settings.use_albedo:
        kinds.append("ao")
    return kinds


def bake_request(context, settings, model_name: str = "") -> tuple[str, dict]:
    """The model argument and the bake's settings snapshot (maps, animation, storage, where files go)
    for the texture panel's settings, `model_name` (a script's choice) taking over the panel's;
    refuses in one line what cannot run (no map, Displace without Height, no folder for files)."""
    if model_name:
        library.choose(settings, "texture", model_name)
    model = library.model_argument(settings)
    maps = wanted_maps(settings)
    if not maps:
        raise runner.UserError("choose at least one map to bake")
    if settings.displace and not settings.use_height:
        raise runner.UserError("Displace needs the Height map: turn Height on, or Displace off")
    maps, maps_note = library.bakeable_maps(settings, maps)
    root = None
    if settings.animate:
        root = files_root(context, "animated maps are image sequences on disk")
    elif settings.storage == "FILES":
        root = files_root(context, "Store Images is 'Save as Files'", other=", or choose 'Pack into .blend'")
    return model, {"maps": maps, "animate": settings.animate, "frames": settings.frames,
                   "loop": settings.loop, "storage": settings.storage, "size": settings.size,
                   "use_ao": settings.use_ao, "displacement": settings.displacement,
                   "displace": settings.displace, "maps_note": maps_note, "root": root,
                   "packed_root": packed_root(context)}


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

    def __init__(self, argv, workdir, obj_name, exported, settings_snapshot, model_label):
        super().__init__(argv, workdir)
        self.obj_name = obj_name
        self.exported = exported
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
        loop_uv = self._new_uv(obj)
        rebuilt = self._reusable_material(obj)
        old_materials, old_images = replaced_by(obj)
        old_folders = {os.path.dirname(_absolute(i.filepath)) for i in old_images
                       if i.filepath and i.packed_file is None}
        root = s["root"]  # None: packed only, nothing on disk
        stem = image_stem(obj.name, found, old_images, root)
        folder = os.path.join(root, safe_name(stem)) if root else None

        # Everything that can fail happens before the scene changes; what was created is removed on error.
        images, staging = {}, None
        try:
            if folder:
                named = {file_name(stem, kind, path): path for kind, files in found.items() for path in files}
                staging = stage_folder(root, safe_name(stem), named,
                                       {"object": obj.name, "model": self.model_label, "maps": list(found)})
            for kind, files in found.items():
                name = file_name(stem, kind, files[0])
                image = bpy.data.images.load(os.path.join(staging, name) if staging else files[0],
                                             check_existing=False)
                images[kind] = image
                image.colorspace_settings.name = materials.COLOR_SPACES[kind]
                if tuple(image.size) != (s["size"], s["size"]):
                    raise runner.UserError(f"the {kind} map is {image.size[0]}x{image.size[1]} px, "
                                           f"not {s['size']} px")
                if animated:
                    image.source = "SEQUENCE"
                if not folder:  # packed, under the path it would have as a file (File > External Data > Unpack)
                    image.filepath_raw = os.path.join(s["packed_root"], safe_name(stem), name)
                    with open(files[0], "rb") as handle:
                        data = handle.read()
                    image.pack(data=data, data_len=len(data))
            if folder:
                commit_folder(staging, folder)
                staging = None
        except Exception:
            for image in images.values():
                bpy.data.images.remove(image)
            if staging is not None:
                shutil.rmtree(staging, ignore_errors=True)
            raise

        # The scene changes from here on.
        notes = [s["maps_note"]] if s["maps_note"] else []
        uv_name = self.exported["uv_name"]
        if loop_uv is not None:
            uv_name = mesh_io.add_uv_layer(obj, loop_uv)
            how = "the backend's unwrap" if self.exported["unwrap"] == "backend" else \
                "Smart UV Project: the mesh has quads or n-gons"
            before = "; its mesh before its modifiers, which change its topology" if self.exported["base"] else ""
            notes.append(f"new UV map '{uv_name}' ({how}{before})")
        material = rebuilt or bpy.data.materials.new(f"NCA {self.model_label}")
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
        for old in old_materials - {material}:
            if old.users == 0:
                bpy.data.materials.remove(old)
        for old in old_images:
            if old.users == 0:
                bpy.data.images.remove(old)
        for kind, image in images.items():
            image.name = f"{stem}_{kind}"
            if folder:
                image.filepath = relative(os.path.join(folder, os.path.basename(image.filepath)))
        drop_unused_folders(old_folders - {_absolute(folder)} if folder else old_folders)
        if displace:
            notes.append(f"displacement {height_scale:.4g} (Cycles)")
        kinds = ", ".join(images)
        where = f"files in {folder}" if folder else "packed into the .blend, no files on disk"
        message = f"NCA texture: '{material.name}' on '{obj.name}' ({kinds}; {where})"
        return message + ("; " + "; ".join(notes) if notes else "")

    def _new_uv(self, obj):
        """The corner UVs of a new UV map when the mesh had none (None when it has one)."""
        exported = self.exported
        if exported["unwrap"] is None:
            return None
        try:
            mesh_io.check_unchanged(obj, exported)
        except mesh_io.MeshError as exc:
            raise runner.UserError(str(exc)) from None
        if exported["unwrap"] == "smart":
            return exported["loop_uv"]
        try:
            return mesh_io.backend_loop_uv(os.path.join(self.workdir, "mesh.obj"),
                                           os.path.join(self.out, f"{BASE_NAME}.obj"),
                                           exported["tri_loops"], len(obj.data.loops))
        except (mesh_io.MeshError, OSError) as exc:
            raise runner.UserError(f"cannot read the backend's unwrap ({exc})") from None

    def _reusable_material(self, obj):
        """The object's NCA material for this model when only it uses it (it is rebuilt), else None."""
        current = obj.active_material
        if current is None or current.library is not None or current.get("nca3d_model") != self.model_label:
            return None
        users_here = sum(1 for slot in obj.material_slots if slot.material == current)
        if current.get("nca3d") and current.users == users_here and not current.use_fake_user:
            return current
        return None


class NCA3D_OT_texture_mesh(runner.BackendOperator, bpy.types.Operator):
    """Grow the chosen NCA model on the active mesh and bake its PBR maps into a new material"""

    bl_idname = "nca3d.texture_mesh"
    bl_label = "NCA: Texture Selected Mesh"
    bl_options = {"REGISTER", "UNDO"}

    model: bpy.props.StringProperty(
        name="Model", options={"SKIP_SAVE"},
        description="For scripts: a bundled model's name or a .nca3d file path; it becomes the panel's "
                    "choice (empty: the panel's choice)")

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
        model, snapshot = bake_request(context, settings, self.model)
        python = config.resolve_python(context)
        scale = library.texture_spacing(context, obj, settings)  # world units per cell, as the exported mesh
        workdir = tempfile.mkdtemp(prefix="nca3d-texture-")
        try:
            mesh_path = os.path.join(workdir, "mesh.obj")
            exported = mesh_io.export_for_texture(context, obj, mesh_path,
                                                  # islands apart by the backend's seam dilation (px)
                                                  margin=max(4, settings.size // 128) / settings.size)
        except mesh_io.MeshError as exc:
            shutil.rmtree(workdir, ignore_errors=True)
            raise runner.UserError(str(exc)) from None
        except Exception:
            shutil.rmtree(workdir, ignore_errors=True)
            raise
        argv = texture_argv(python, mesh_path, model, os.path.join(workdir, "out"), settings, scale,
                            config.device(context))
        return TextureTask(argv, workdir, obj.name, exported, snapshot, library.model_label(settings))


classes = (NCA3D_OT_texture_mesh,)
