"""Where the nca3d backend is and where files go, as the add-on's preferences say: the bottom of
the add-on (the library, the operators and the preferences panel read it; it reads none of them)."""

from __future__ import annotations

import os

import bpy

from . import backend, runner

_DETECTED: dict = {"python": None, "tried": False}


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


def detected() -> tuple[bool, str | None]:
    """(whether auto-detection ran, what it found) without running it."""
    return _DETECTED["tried"], _DETECTED["python"]


def forget_detection() -> None:
    """Detect again on next use (a new environment was set up, or the add-on is reloaded)."""
    _DETECTED.update(python=None, tried=False)

