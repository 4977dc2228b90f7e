"""The backend's bundled model library, listed once in a background thread, with preview icons.

Listing runs `<python> -c ...` (importing nca3d takes a few seconds), so it never runs in a
draw or enum callback: those start a refresh thread when nothing is known yet and show what
is known; a short-lived bpy.app.timers function collects the result and redraws.
"""

from __future__ import annotations

import os
import threading
import zlib

import bpy

from . import backend

FILE_ITEM = "FILE"
_MODELS: dict = {}  # name -> {"path", "preview"}
_STATE: dict = {"thread": None, "job": None, "result": None, "error": "", "loaded": False}
_PREVIEWS: dict = {"collection": None}
_ITEMS: list = []  # enum items must stay referenced from Python


def models() -> dict:
    return dict(_MODELS)


def loading() -> bool:
    thread = _STATE["thread"]
    return thread is not None and thread.is_alive()


def error() -> str:
    return _STATE["error"]


def _list(python: str) -> None:
    ok, text = backend.run_quick(backend.library_argv(python), timeout=120.0,
                                 on_start=lambda job: _STATE.update(job=job))
    _STATE["result"] = backend.parse_library(text) if ok else None
    _STATE["error"] = "" if ok else text


def refresh(python: str | None = None) -> bool:
    """Start listing the library in a background thread; False when no backend is known."""
    if loading():
        return True
    if python is None:
        from . import prefs, runner

        try:
            python = prefs.resolve_python()
        except runner.UserError as exc:
            _STATE["error"] = str(exc)
            _STATE["loaded"] = True
            return False
    thread = threading.Thread(target=_list, args=(python,), daemon=True, name="nca3d-library")
    _STATE["thread"], _STATE["result"] = thread, None
    thread.start()
    if not bpy.app.timers.is_registered(_collect):
        bpy.app.timers.register(_collect, first_interval=0.25)
    return True


def wait(timeout: float = 120.0) -> None:
    """Block until a running refresh ends and collect it (scripts and tests)."""
    thread = _STATE["thread"]
    if thread is not None:
        thread.join(timeout)
    _collect()
    if bpy.app.timers.is_registered(_collect):
        bpy.app.timers.unregister(_collect)


def _collect():
    """Timer: once the thread is done, take its result and load the previews."""
    if loading():
        return 0.25
    _STATE["thread"], _STATE["job"] = None, None
    _STATE["loaded"] = True
    found = _STATE["result"]
    if found is not None:
        _MODELS.clear()
        _MODELS.update(found)
        collection = _PREVIEWS["collection"]
        if collection is not None:
            for name, entry in found.items():
                preview = entry.get("preview")
                if preview and os.path.isfile(preview) and name not in collection:
                    try:
                        collection.load(name, preview, "IMAGE")
                    except (KeyError, RuntimeError):
                        pass
        _default_models()
    try:
        from . import runner

        runner.redraw_ui()
    except (AttributeError, RuntimeError):
        pass
    return None


def _default_models() -> None:
    """Point settings still on the empty 'model file' choice at a bundled model."""
    if not _MODELS:
        return
    volume_like = [n for n in sorted(_MODELS) if "volume" in n]
    surface_like = [n for n in sorted(_MODELS) if "volume" not in n] or sorted(_MODELS)
    for scene in bpy.data.scenes:
        for attr, names in (("nca3d_texture", surface_like), ("nca3d_volume", volume_like)):
            settings = getattr(scene, attr, None)
            if settings is None or not names or settings.model_file:
                continue
            try:
                if settings.model == FILE_ITEM:
                    settings.model = names[0]
            except (TypeError, AttributeError):
                pass


def icon_id(name: str) -> int:
    collection = _PREVIEWS["collection"]
    if collection is not None and name in collection:
        return collection[name].icon_id
    return 0


def has_preview(name: str) -> bool:
    collection = _PREVIEWS["collection"]
    return collection is not None and name in collection


def _stable_index(name: str) -> int:
    return 1 + zlib.crc32(name.encode("utf-8")) % 1_000_000


def model_items(self, context):
    """EnumProperty items: the bundled models (with previews) and 'Model File'."""
    if not _STATE["loaded"] and not loading() and not bpy.app.background:
        refresh()
    items = []
    for name in sorted(_MODELS):
        icon = icon_id(name)
        items.append((name, name, f"Bundled model '{name}' ({_MODELS[name]['path']})",
                      icon if icon else "TEXTURE", _stable_index(name)))
    items.append((FILE_ITEM, "Model File", "Any .nca3d model file: set its path below", "FILE_FOLDER", 0))
    _ITEMS[:] = items
    return _ITEMS


def model_label(settings) -> str:
    """A short name of the chosen model (for material and object names)."""
    if settings.model == FILE_ITEM:
        path = bpy.path.abspath(settings.model_file)
        return os.path.splitext(os.path.basename(path))[0] or "model"
    return settings.model


def model_argument(settings) -> str:
    """The --model argument: a library name or an absolute file path; runner.UserError if unusable."""
    from . import runner

    if not settings.model:
        raise runner.UserError("the chosen bundled model is not available (is the library still loading?); "
                               "choose a model again")
    if settings.model != FILE_ITEM:
        return settings.model
    if not settings.model_file.strip():
        raise runner.UserError("choose a model: a bundled one, or a .nca3d file")
    path = bpy.path.abspath(settings.model_file)
    if not os.path.isfile(path):
        raise runner.UserError(f"the model file '{path}' does not exist")
    return path


def register() -> None:
    import bpy.utils.previews

    _PREVIEWS["collection"] = bpy.utils.previews.new()


def unregister() -> None:
    job = _STATE["job"]
    if job is not None:
        job.cancel()  # a listing still running: stop it
    if bpy.app.timers.is_registered(_collect):
        bpy.app.timers.unregister(_collect)
    collection = _PREVIEWS["collection"]
    if collection is not None:
        bpy.utils.previews.remove(collection)
    _PREVIEWS["collection"] = None
    _MODELS.clear()
    _ITEMS.clear()
    _STATE.update(thread=None, job=None, result=None, error="", loaded=False)
