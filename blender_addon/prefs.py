"""Add-on preferences: which Python runs the nca3d backend (found, chosen, or set up here in a
venv of its own), on which device, where files go."""

from __future__ import annotations

import json
import os
import time

import bpy
from bpy.props import EnumProperty, StringProperty

from . import backend, config, runner, setup_backend

_CHECK: dict = {"text": "", "ok": None}
_SETUP: dict = {"log": ""}  # the last Set up Backend's log file


class NCA3D_OT_detect_backend(bpy.types.Operator):
    """Find a Python that has nca3d installed and store it in the preferences"""

    bl_idname = "nca3d.detect_backend"
    bl_label = "NCA: Detect Backend Python"
    bl_options = {"REGISTER", "INTERNAL"}

    def execute(self, context):
        found = config.detect(force=True)
        if found is None:
            self.report({"ERROR"}, "No Python with nca3d found (set-up backend, nca3d and python3 on PATH, "
                                   "~/nca3d-env, pipx, ~/.venvs): click Set up Backend, or set it by hand")
            return {"CANCELLED"}
        prefs = config.get_prefs(context)
        if prefs is not None:
            prefs.python_path = found
        self.report({"INFO"}, f"Backend Python: {found}")
        return {"FINISHED"}


def describe(found: dict, python: str) -> str:
    """One line from a backend probe (backend.PROBE_SCRIPT) or a setup marker."""
    version = found.get("version") or found.get("nca3d", "nca3d")
    return f"{version}, torch {found.get('torch', '?')}, {found.get('device', '?')}, " \
           f"{found.get('models', 0)} bundled models ({python})"


class PrefsBackendOperator(runner.BackendOperator):
    """A backend run started from the preferences: a failure leaves its message in the check line."""

    def _finish(self, context):
        result = super()._finish(context)
        if result != {"FINISHED"}:
            info = runner.status(context)
            _CHECK.update(text=info.last_message if info is not None else "failed", ok=False)
        return result


class CheckTask(runner.Task):
    label = "Check backend"

    def __init__(self, python: str, device: str):
        super().__init__(backend.probe_argv(python, device), json_progress=False)
        self.python = python

    def apply(self, context, job) -> str:
        found = backend.parse_probe(job.stdout_text)
        if not found:
            raise runner.UserError(f"'{self.python}' gave no report: is its nca3d older than this add-on? "
                                   f"Set up Backend, or pip install -U nca3d there")
        if "device_error" in found:
            raise runner.UserError(f"{found['device_error']} (Device is set in Preferences > Add-ons > NCA3D)")
        text = describe(found, self.python)
        _CHECK.update(text=text, ok=True)
        from . import library

        library.refresh(self.python)
        return f"Backend OK: {text}"


class NCA3D_OT_check_backend(PrefsBackendOperator, bpy.types.Operator):
    """Run the backend Python once and report its nca3d version, the device it would use (CPU or the
    CUDA GPU's name) and the number of bundled models"""

    bl_idname = "nca3d.check_backend"
    bl_label = "NCA: Check Backend"
    bl_options = {"REGISTER"}

    def make_task(self, context):
        try:
            python = config.resolve_python(context)
        except runner.UserError as exc:
            _CHECK.update(text=str(exc), ok=False)
            raise
        return CheckTask(python, config.device(context))


class SetupTask(runner.Task):
    """setup_backend.py making `env`; an unfinished `env` (cancelled, failed) is removed afterwards."""

    label = "Set up backend"

    def __init__(self, argv: list[str], env: str, log: str, note: str = ""):
        super().__init__(argv)
        self.env, self.log, self.note = env, log, note

    def apply(self, context, job) -> str:
        with open(os.path.join(self.env, backend.SETUP_MARKER), encoding="utf-8") as handle:
            found = json.load(handle)
        python = found["python"]
        prefs = config.get_prefs(context)
        if prefs is not None:
            prefs.python_path = python
        config.forget_detection()
        text = describe(found, python)
        _CHECK.update(text=text, ok=True)
        from . import library

        library.refresh(python)
        return f"Backend set up: {text}{self.note}; log: {self.log}"

    def cleanup(self) -> None:
        setup_backend.remove_unfinished(self.env)


class NCA3D_OT_setup_backend(PrefsBackendOperator, bpy.types.Operator):
    """Make a Python environment in the add-on's user folder and install torch and nca3d into it with pip
    (it downloads 0.3 to 3 GB, by the torch build); Backend Python then points at it"""

    bl_idname = "nca3d.setup_backend"
    bl_label = "NCA: Set up Backend"
    bl_options = {"REGISTER"}

    def make_task(self, context):
        prefs = config.get_prefs(context)
        if prefs is None:
            raise runner.UserError("enable the NCA3D add-on in Preferences > Add-ons first")
        source = bpy.path.abspath(prefs.setup_source.strip() or "nca3d")
        try:
            setup_backend.nca3d_args(source)
            base, version = setup_backend.find_base_python(backend.own_python())
        except ValueError as exc:
            raise runner.UserError(str(exc)) from None
        root = config.setup_root(create=True)
        env = os.path.join(root, time.strftime("env-%Y%m%d-%H%M%S"))
        log = os.path.join(root, "setup.log")
        _SETUP["log"] = log
        argv = [base, setup_backend.__file__, "--env", env, "--log", log, "--torch", prefs.setup_torch,
                "--source", source, "--device", prefs.device]
        note = "" if base == backend.own_python() else \
            f"; Blender's Python has no venv/ensurepip, so Python {version} ({base}) made it"
        if bpy.app.background:
            print(f"Set up backend: Python {version} ({base}) makes {env}; log: {log}", flush=True)
        return SetupTask(argv, env, log, note)


class NCA3DPreferences(bpy.types.AddonPreferences):
    bl_idname = __package__

    python_path: StringProperty(
        name="Backend Python",
        description="The Python that has nca3d: its python, its nca3d command, or its venv folder; empty: "
                    "auto-detect (the backend set up here, the nca3d command or python3 on PATH, ~/nca3d-env, "
                    "pipx, ~/.venvs)",
        subtype="FILE_PATH", default="")
    setup_source: StringProperty(
        name="nca3d Package",
        description="Where Set up Backend installs nca3d from: the name nca3d (PyPI) or a version such as "
                    "nca3d==0.1.0, a wheel or sdist file, a folder of wheels, or a source checkout",
        subtype="FILE_PATH", default="nca3d")
    setup_torch: EnumProperty(
        name="Torch Build",
        description=f"Which torch {setup_backend.TORCH_VERSION} Set up Backend installs",
        items=[(identifier, label, description) for identifier, label, description, _index in
               setup_backend.TORCH_BUILDS],
        default="pypi")
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
                    "'nca3d' next to the .blend file (an unsaved .blend then keeps packed maps only)",
        subtype="DIR_PATH", default="")

    def draw(self, context):
        layout = self.layout
        row = layout.row(align=True)
        row.prop(self, "python_path")
        row.operator(NCA3D_OT_detect_backend.bl_idname, text="", icon="VIEWZOOM")
        path = config.python_setting(self)
        if path:
            try:
                python = backend.interpreter_for(path)
            except ValueError as exc:
                layout.label(text=str(exc), icon="ERROR")
            else:
                if python != path:
                    layout.label(text=f"Runs {python}")
        elif config.detected()[0]:
            layout.label(text=f"Auto-detected: {config.detected()[1] or 'none found'}")
        layout.prop(self, "device")
        layout.prop(self, "output_dir")
        row = layout.row()
        row.operator(NCA3D_OT_check_backend.bl_idname, icon="CHECKMARK")
        info = runner.status(context)
        if info is not None and info.running and info.label in (CheckTask.label, SetupTask.label):
            from . import ui

            ui.draw_status(layout, context)
        elif _CHECK["text"]:
            layout.label(text=_CHECK["text"], icon="CHECKMARK" if _CHECK["ok"] else "ERROR")
        box = layout.box()
        box.label(text="No backend yet? Set one up here (a venv in the add-on's user folder, installed by pip):")
        box.prop(self, "setup_source")
        box.prop(self, "setup_torch")
        box.operator(NCA3D_OT_setup_backend.bl_idname, icon="IMPORT")
        if _SETUP["log"]:
            box.label(text=f"Log: {_SETUP['log']}", icon="TEXT")


classes = (NCA3D_OT_detect_backend, NCA3D_OT_check_backend, NCA3D_OT_setup_backend, NCA3DPreferences)


def reset() -> None:
    config.forget_detection()
    _CHECK.update(text="", ok=None)
    _SETUP.update(log="")
