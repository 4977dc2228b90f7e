"""Add-on preferences: which Python runs the nca3d backend (found, chosen, or set up here in a
venv of its own), on which device, where files go."""

from __future__ import annotations

import json
import os
import time

import bpy
from bpy.props import EnumProperty, StringProperty

from . import backend, runner, setup_backend

_DETECTED: dict = {"python": None, "tried": False}
_CHECK: dict = {"text": "", "ok": None}
_SETUP: dict = {"log": ""}  # the last Set up Backend's log file


def get_prefs(context=None):
    """This add-on's preferences, or None when it is registered without being enabled."""
    context = context or bpy.context
    addon = context.preferences.addons.get(__package__)
    return addon.preferences if addon is not None else None


def addon_user_folder(path: str, create: bool = True) -> str:
    """A folder in this extension's user folder (installed as a legacy add-on: Blender's user data)."""
    try:
        return bpy.utils.extension_path_user(__package__, path=path, create=create)
    except (ValueError, AttributeError):  # installed as a legacy add-on
        return bpy.utils.user_resource("DATAFILES", path=f"nca3d/{path}", create=create)


def setup_root(create: bool = False) -> str:
    """Where Set up Backend makes its environments (env-<time>) and its log."""
    return addon_user_folder("backend", create)


def detect(force: bool = False) -> str | None:
    """Auto-detected backend Python (cached): the environment Set up Backend made, else
    backend.detect_python's places (nca3d on PATH, ~/nca3d-env, pipx, ..., python3 on PATH)."""
    if force or not _DETECTED["tried"]:
        _DETECTED["python"] = backend.detect_python(extra=[backend.own_venv_python(setup_root())])
        _DETECTED["tried"] = True
    return _DETECTED["python"]


def python_setting(prefs) -> str:
    """The Backend Python preference as an absolute path ('' when empty)."""
    if prefs is None or not prefs.python_path.strip():
        return ""
    return os.path.expanduser(bpy.path.abspath(prefs.python_path.strip()))


def resolve_python(context=None) -> str:
    """The backend Python to run (the preference: a Python, the nca3d command or a venv folder; else
    auto-detected), or runner.UserError saying how to set one up."""
    path = python_setting(get_prefs(context))
    if path:
        try:
            return backend.interpreter_for(path)
        except ValueError as exc:
            raise runner.UserError(f"{exc}; fix Backend Python in Preferences > Add-ons > NCA3D (or clear it "
                                   f"to auto-detect)") from None
    found = detect()
    if found is None:
        raise runner.UserError("no Python with nca3d found: click Set up Backend in Preferences > Add-ons > NCA3D, "
                               "or set Backend Python to your nca3d install")
    return found


def device(context=None) -> str:
    prefs = get_prefs(context)
    return prefs.device if prefs is not None else "auto"


def output_root(context=None) -> str | None:
    """Absolute folder for files kept on disk (Save as Files, animated maps, VDBs): the Output Folder
    preference if set, else a folder `nca3d` next to the saved .blend; None while the .blend is
    unsaved (nothing is written into hidden folders), or the preference is relative to it (//...)."""
    prefs = get_prefs(context)
    folder = prefs.output_dir.strip() if prefs is not None and prefs.output_dir.strip() else "//nca3d"
    if folder.startswith("//") and not bpy.data.filepath:
        return None
    return os.path.normpath(os.path.expanduser(bpy.path.abspath(folder)))


class NCA3D_OT_detect_backend(bpy.types.Operator):
    """Find a Python that has nca3d installed and store it in the preferences"""

    bl_idname = "nca3d.detect_backend"
    bl_label = "NCA: Detect Backend Python"
    bl_options = {"REGISTER", "INTERNAL"}

    def execute(self, context):
        found = detect(force=True)
        if found is None:
            self.report({"ERROR"}, "No Python with nca3d found (set-up backend, nca3d and python3 on PATH, "
                                   "~/nca3d-env, pipx, ~/.venvs): click Set up Backend, or set it by hand")
            return {"CANCELLED"}
        prefs = get_prefs(context)
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
            python = resolve_python(context)
        except runner.UserError as exc:
            _CHECK.update(text=str(exc), ok=False)
            raise
        return CheckTask(python, device(context))


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
        prefs = get_prefs(context)
        if prefs is not None:
            prefs.python_path = python
        _DETECTED.update(python=None, tried=False)
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
        prefs = get_prefs(context)
        if prefs is None:
            raise runner.UserError("enable the NCA3D add-on in Preferences > Add-ons first")
        source = bpy.path.abspath(prefs.setup_source.strip() or "nca3d")
        try:
            setup_backend.nca3d_args(source)
            base, version = setup_backend.find_base_python(backend.own_python())
        except ValueError as exc:
            raise runner.UserError(str(exc)) from None
        root = setup_root(create=True)
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
        path = python_setting(self)
        if path:
            try:
                python = backend.interpreter_for(path)
            except ValueError as exc:
                layout.label(text=str(exc), icon="ERROR")
            else:
                if python != path:
                    layout.label(text=f"Runs {python}")
        elif _DETECTED["tried"]:
            layout.label(text=f"Auto-detected: {_DETECTED['python'] or 'none found'}")
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
    _DETECTED.update(python=None, tried=False)
    _CHECK.update(text="", ok=None)
    _SETUP.update(log="")
