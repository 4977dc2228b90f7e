"""Add NCA Volume: grow a volume model, write OpenVDB, and add it as a Volume object."""

from __future__ import annotations

import glob
import os
import shutil
import tempfile

import bpy

from . import config, library, materials, runner
from .ops_texture import (
    commit_folder,
    files_root,
    folder_free,
    relative,
    safe_name,
    stage_folder,
)

BASE_NAME = "volume"


def volume_argv(python: str, model: str, out: str, settings, device: str) -> list:
    argv = [python, "-m", "nca3d", "volume", "--model", model, "--out", out, "--name", BASE_NAME,
            "--res", str(settings.res), "--steps", str(settings.steps), "--seed", str(settings.seed),
            "--size", f"{settings.size:.6g}", "--density-scale", f"{settings.density_scale:.6g}",
            "--preview-size", "0", "--no-npz", "--device", device, "--progress", "json"]
    if settings.lattice:
        argv += ["--lattice", str(settings.lattice)]
    if settings.animate:
        argv += ["--frames", str(settings.frames), "--every", str(settings.every)]
    return argv


def vdb_files(folder: str, animated: bool) -> list[str]:
    if animated:
        return sorted(glob.glob(os.path.join(glob.escape(folder), f"{BASE_NAME}.[0-9]*.vdb")))
    path = os.path.join(folder, f"{BASE_NAME}.vdb")
    return [path] if os.path.isfile(path) else []


class VolumeTask(runner.Task):
    label = "NCA volume"

    def __init__(self, argv, workdir, snapshot, model_label):
        super().__init__(argv, workdir)
        self.settings = snapshot
        self.model_label = model_label

    def apply(self, context, job) -> str:
        s = self.settings
        files = vdb_files(os.path.join(self.workdir, "out"), s["animate"])
        if not files or (s["animate"] and len(files) != s["frames"]):
            raise runner.UserError("the backend wrote no (or an incomplete) VDB sequence")
        name = f"NCA {self.model_label}"
        root = s["root"]
        volume = material = obj = staging = folder = None
        try:
            volume = bpy.data.volumes.new(name)
            obj = bpy.data.objects.new(name, volume)  # linked to the scene at the end; its name names the files
            stem, index = safe_name(obj.name), 1
            while not folder_free(os.path.join(root, stem)):
                index += 1
                stem = f"{safe_name(obj.name)}_{index}"
            named = {stem + os.path.basename(path)[len(BASE_NAME):]: path for path in files}
            staging = stage_folder(root, stem, named, {"object": obj.name, "model": self.model_label})
            commit_folder(staging, os.path.join(root, stem))
            staging, folder = None, os.path.join(root, stem)
            volume.filepath = relative(os.path.join(folder, min(named)))
            # Check the first file's grids as a still volume, then make it a sequence.
            volume.grids.load()
            if volume.grids.error_message:
                raise runner.UserError(f"Blender cannot read the VDB: {volume.grids.error_message}")
            names = {grid.name for grid in volume.grids}
            if "density" not in names:
                raise runner.UserError(f"the VDB has no 'density' grid (grids: {', '.join(sorted(names))})")
            if s["animate"]:
                volume.grids.unload()
                volume.is_sequence = True
                volume.frame_duration = s["frames"]
                volume.frame_start = context.scene.frame_start
                volume.frame_offset = 0
                volume.sequence_mode = "REPEAT" if s["loop"] else "EXTEND"
            material = bpy.data.materials.new(name)
            materials.build_volume_material(material, s["shading"])
            material["nca3d_model"] = self.model_label
        except Exception:
            if obj is not None:
                bpy.data.objects.remove(obj)
            if volume is not None:
                bpy.data.volumes.remove(volume)
            if material is not None:
                bpy.data.materials.remove(material)
            for partial in (staging, folder):
                if partial is not None:
                    shutil.rmtree(partial, ignore_errors=True)
            raise

        # The scene changes from here on.
        volume.materials.append(material)
        obj.location = context.scene.cursor.location
        collection = context.collection or context.scene.collection
        collection.objects.link(obj)
        for other in context.view_layer.objects:
            if other.select_get():
                other.select_set(False)
        obj.select_set(True)
        context.view_layer.objects.active = obj
        frames = f"{s['frames']} frames{', looping' if s['loop'] else ''}, " if s["animate"] else ""
        return f"NCA volume: '{obj.name}' ({frames}grids {', '.join(sorted(names))}; files in {folder})"


class NCA3D_OT_add_volume(runner.BackendOperator, bpy.types.Operator):
    """Grow the chosen NCA volume model into an OpenVDB volume and add it at the 3D cursor"""

    bl_idname = "nca3d.add_volume"
    bl_label = "NCA: Add NCA Volume"
    bl_options = {"REGISTER", "UNDO"}

    model: bpy.props.StringProperty(
        name="Model", options={"SKIP_SAVE"},
        description="For scripts: a bundled model's name or a .nca3d file path; it becomes the panel's "
                    "choice (empty: the panel's choice)")

    @classmethod
    def poll_more(cls, context):
        if context.mode != "OBJECT":
            cls.poll_message_set("Switch to Object Mode first")
            return False
        return True

    def make_task(self, context):
        settings = context.scene.nca3d_volume
        if self.model:
            library.choose(settings, "volume", self.model)
        model = library.model_argument(settings)
        python = config.resolve_python(context)
        root = files_root(context, "VDB volumes are files on disk")
        workdir = tempfile.mkdtemp(prefix="nca3d-volume-")
        snapshot = {"animate": settings.animate, "frames": settings.frames, "loop": settings.loop,
                    "shading": settings.shading, "root": root}
        argv = volume_argv(python, model, os.path.join(workdir, "out"), settings, config.device(context))
        return VolumeTask(argv, workdir, snapshot, library.model_label(settings))


classes = (NCA3D_OT_add_volume,)
