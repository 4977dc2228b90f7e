"""Add-on preferences: which Python runs the nca3d backend, on which device, where files go."""

from __future__ import annotations

import os

import bpy
from bpy.props import EnumProperty, StringProperty

from . import backend, runner

_DETECTED: dict = {"python": None, "tried": False}
_CHECK: dict = {"text": "", "ok": None}


def get_prefs(context=None):
    """This add-on's preferences, or None when it is registered without being enabled."""
    context = context or bpy.context
    addon = context.preferences.addons.get(__package__)
    return addon.preferences if addon is not None else None


def detect(force: bool = False) -> str | None:
    """Auto-detected backend Python (cached): `nca3d` on PATH, else python3/python with nca3d."""
    if force or not _DETECTED["tried"]:
        _DETECTED["python"] = backend.detect_python()
        _DETECTED["tried"] = True
    return _DETECTED["python"]


def resolve_python(context=None) -> str:
    """The backend Python to run, or runner.UserError saying how to set one up."""
    prefs = get_prefs(context)
    path = bpy.path.abspath(prefs.python_path).strip() if prefs is not None and prefs.python_path else ""
    if path:
        if not os.path.isfile(path):
            raise runner.UserError(f"the backend Python '{path}' does not exist; fix it in "
                                   f"Preferences > Add-ons > NCA3D (or clear it to auto-detect)")
        return path
    found = detect()
    if found is None:
        raise runner.UserError("no Python with nca3d found: install it (pip install nca3d) and set its Python "
                               "in Preferences > Add-ons > NCA3D")
    return found


def device(context=None) -> str:
    prefs = get_prefs(context)
    return prefs.device if prefs is not None else "auto"


def output_root(context=None) -> str:
    """Absolute folder for files kept on disk (animated maps, VDBs, 'Save Next to .blend').

    The preference if set; else a folder `nca3d` next to the saved .blend; else this extension's
    user folder (the .blend is unsaved)."""
    prefs = get_prefs(context)
    if prefs is not None and prefs.output_dir.strip():
        return bpy.path.abspath(prefs.output_dir)
    if bpy.data.filepath:
        return bpy.path.abspath("//nca3d")
    try:
        return bpy.utils.extension_path_user(__package__, path="outputs", create=True)
    except (ValueError, AttributeError):  # installed as a legacy add-on
        return bpy.utils.user_resource("DATAFILES", path="nca3d/outputs", create=True)


class NCA3D_OT_detect_backend(bpy.types.Operator):
    """Find a Python that has nca3d installed and store it in the preferences"""

    bl_idname = "nca3d.detect_backend"
    bl_label = "NCA: Detect Backend Python"
    bl_options = {"REGISTER", "INTERNAL"}

    def execute(self, context):
        found = detect(force=True)
        if found is None:
            self.report({"ERROR"}, "No Python with nca3d found on PATH (nca3d, python3, python); set it by hand")
            return {"CANCELLED"}
        prefs = get_prefs(context)
        if prefs is not None:
            prefs.python_path = found
        self.report({"INFO"}, f"Backend Python: {found}")
        return {"FINISHED"}


class CheckTask(runner.Task):
    label = "Check backend"

    def __init__(self, python: str):
        super().__init__([python, "-m", "nca3d", "--version"], json_progress=False)
        self.python = python

    def apply(self, context, job) -> str:
        version = job.stdout_text.strip().splitlines()[-1] if job.stdout_text.strip() else "nca3d"
        _CHECK["text"], _CHECK["ok"] = f"{version} ({self.python})", True
        from . import library

        library.refresh(self.python)
        return f"Backend OK: {version} ({self.python})"


class NCA3D_OT_check_backend(runner.BackendOperator, bpy.types.Operator):
    """Run `python -m nca3d --version` with the backend Python and report the result"""

    bl_idname = "nca3d.check_backend"
    bl_label = "NCA: Check Backend"
    bl_options = {"REGISTER"}

    def make_task(self, context):
        try:
            python = resolve_python(context)
        except runner.UserError as exc:
            _CHECK["text"], _CHECK["ok"] = str(exc), False
            raise
        return CheckTask(python)

    def _finish(self, context):
        job = self._job
        result = super()._finish(context)
        if job is not None and job.state != "DONE":
            _CHECK["text"], _CHECK["ok"] = job.error or "failed", False
        return result


class NCA3DPreferences(bpy.types.AddonPreferences):
    bl_idname = __package__

    python_path: StringProperty(
        name="Backend Python",
        description="Python interpreter that has nca3d installed (e.g. your venv's bin/python); "
                    "empty: auto-detect from the nca3d command or python3 on PATH",
        subtype="FILE_PATH", default="")
    device: EnumProperty(
        name="Device",
        description="Where the backend runs the neural networks",
        items=[("auto", "Auto", "A CUDA GPU when there is one, else the CPU"),
               ("cpu", "CPU", "Always the CPU"),
               ("cuda", "CUDA", "The first CUDA GPU")],
        default="auto")
    output_dir: StringProperty(
        name="Output Folder",
        description="Folder for maps saved as files, animated maps and VDB volumes; empty: a folder "
                    "'nca3d' next to the .blend file (or the add-on's user folder while it is unsaved)",
        subtype="DIR_PATH", default="")

    def draw(self, context):
        layout = self.layout
        row = layout.row(align=True)
        row.prop(self, "python_path")
        row.operator(NCA3D_OT_detect_backend.bl_idname, text="", icon="VIEWZOOM")
        if not self.python_path and _DETECTED["tried"]:
            layout.label(text=f"Auto-detected: {_DETECTED['python'] or 'none found'}")
        layout.prop(self, "device")
        layout.prop(self, "output_dir")
        row = layout.row()
        row.operator(NCA3D_OT_check_backend.bl_idname, icon="CHECKMARK")
        if _CHECK["text"]:
            icon = "CHECKMARK" if _CHECK["ok"] else "ERROR"
            layout.label(text=_CHECK["text"], icon=icon)
        info = runner.status(context)
        if info is not None and info.running and info.label == CheckTask.label:
            layout.label(text="Checking...", icon="TIME")


classes = (NCA3D_OT_detect_backend, NCA3D_OT_check_backend, NCA3DPreferences)


def reset() -> None:
    _DETECTED.update(python=None, tried=False)
    _CHECK.update(text="", ok=None)
