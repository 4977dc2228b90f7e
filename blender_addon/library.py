"""The models the panels offer: the backend's bundled library (with preview icons) and model files.

Listing the library runs `<python> -c ...` (importing nca3d takes a few seconds). In the UI it
runs in a background thread started by a draw or enum callback, and a short-lived
bpy.app.timers function collects the result and redraws. In a background script (no timer
ever fires) the enum callbacks list it synchronously, so `settings.model = "granite_mesh"`
works in `blender --background`. A model file's header is read here (a few bytes of JSON).

Each model is described by its domain, the maps it bakes on a mesh and its training cell
spacing in world units; the texture picker offers mesh and volume models, the volume picker
volume models (2D models belong to `nca3d maps`).
"""

from __future__ import annotations

import json
import math
import os
import struct
import threading
import zlib

import bpy

from . import backend

FILE_ITEM = "FILE"
MAP_KINDS = ("albedo", "normal", "roughness", "height", "ao")
CELL_AREA = math.sqrt(3.0) / 2.0  # area per vertex of an equilateral lattice of edge 1 (the backend's)
TRAINING_SPHERE_RADIUS = 1.0  # mesh models train on a unit icosphere: this many world units
VOLUME_EDGE = 2.0  # world units spanned by a volume model's own grid (Add NCA Volume's default size)
MAX_HEADER_BYTES = 16 << 20
MAX_CELLS = 1_000_000  # lattice cells on one object (the bundled mesh models train on 40,962)
NOT_LISTED = 1_000_001  # the Model enum's value while the library is not listed yet (no item has it)
PICKERS = {"texture": ("mesh", "volume"), "volume": ("volume",)}  # domains each picker offers
DOMAIN_TEXT = {
    "mesh": "Mesh model: grows on a cell lattice laid over the surface, at Texture Scale",
    "volume": "Volume model: grows a 3D block of cells; on a mesh it is a solid texture (each surface "
              "point takes the colour of the block where it lies, as if carved from it)",
}
VOLUME_PICKER_TEXT = "Volume model: grows a 3D block of density and colour, added as an OpenVDB volume"

_MODELS: dict = {}  # name -> entry (see describe)
_FILES: dict = {}  # absolute path -> ((mtime, size), entry or None)
_STATE: dict = {"thread": None, "job": None, "result": None, "error": "", "loaded": False, "python": None}
_PREVIEWS: dict = {"collection": None}
_ITEMS: dict = {"texture": [], "volume": []}  # enum items must stay referenced from Python


def training_spacing(domain: str | None, lattice: dict, zoom: float | None = None) -> float | None:
    """World units per cell the model was trained at: a mesh model's icosphere (10 f^2 + 2 cells on
    a radius-1 sphere: the backend's automatic scale on a mesh that size; f times the training zoom
    where that is below 1, as the backend's default_cells), or a volume model's grid over
    VOLUME_EDGE. None when unknown."""
    try:
        if domain == "mesh":
            frequency = int(lattice["icosphere_frequency"]) * min(1.0, float(zoom or 1.0))
            cells = round(10 * frequency ** 2) + 2
            return math.sqrt(4.0 * math.pi * TRAINING_SPHERE_RADIUS ** 2 / (cells * CELL_AREA))
        if domain == "volume":
            return VOLUME_EDGE / max(int(side) for side in lattice["size"])
    except (KeyError, TypeError, ValueError):
        return None
    return None


def describe(entry: dict) -> dict:
    """A model's header facts (name, path, domain, channels, lattice, ...) plus what the panels use:
    maps (albedo always; the others when the model has those outputs), pbr, spacing."""
    channels = entry.get("channels") or []
    maps = ["albedo"] + [kind for kind in MAP_KINDS[1:] if kind in channels]
    return {**entry, "maps": maps, "pbr": len(maps) > 1,
            "spacing": training_spacing(entry.get("domain"), entry.get("lattice") or {},
                                        (entry.get("scale") or {}).get("zoom"))}


def read_file_header(path: str) -> dict | None:
    """The nca3d header of a model file (safetensors metadata), without loading weights; None
    when it is unreadable (the backend then says why)."""
    try:
        with open(path, "rb") as handle:
            (length,) = struct.unpack("<Q", handle.read(8))
            if length > MAX_HEADER_BYTES:
                return None
            header = json.loads(json.loads(handle.read(length))["__metadata__"]["nca3d"])
    except (OSError, ValueError, KeyError, TypeError, struct.error):
        return None
    return header if isinstance(header, dict) and header.get("format") == "nca3d" else None


def file_entry(path: str) -> dict | None:
    """describe() of a model file, cached until the file changes; None when unreadable."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    stamp = (stat.st_mtime_ns, stat.st_size)
    cached = _FILES.get(path)
    if cached is None or cached[0] != stamp:
        header = read_file_header(path)
        entry = None
        if header is not None:
            entry = describe({"name": os.path.splitext(os.path.basename(path))[0], "path": path,
                              "domain": header.get("domain"), "lattice": header.get("lattice"),
                              "scale": (header.get("provenance") or {}).get("scale"),
                              "channels": [o.get("name") for o in header.get("outputs") or []]})
        cached = _FILES[path] = (stamp, entry)
    return cached[1]


# --------------------------------------------------------------------------- listing the library


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


def _resolve_python() -> str | None:
    from . import config, runner

    try:
        return config.resolve_python()
    except runner.UserError as exc:
        _STATE["error"] = str(exc)
        return None


def refresh(python: str | None = None) -> bool:
    """Start listing the library in a background thread; False when no backend is known."""
    if loading():
        return True
    if python is None:
        python = _resolve_python()
        if python is None:
            _STATE["loaded"] = True
            return False
    thread = threading.Thread(target=_list, args=(python,), daemon=True, name="nca3d-library")
    _STATE.update(thread=thread, result=None, python=python)
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


def ensure_listed() -> None:
    """Take a finished listing now (no timer needed); list when nothing is known yet, or when the
    last listing found nothing and the backend Python changed since. In a background script
    (where no timer fires) this blocks until the listing is done; in the UI it only starts it."""
    if _STATE["thread"] is not None and not loading():
        _collect()
    if loading():
        if bpy.app.background:
            wait()
        return
    if _STATE["loaded"] and (_MODELS or _resolve_python() in (None, _STATE["python"])):
        return
    if refresh() and bpy.app.background:
        wait()


def _collect():
    """Timer: once the thread is done, take its result and load the previews."""
    if loading():
        return 0.25
    _STATE["thread"], _STATE["job"] = None, None
    _STATE["loaded"] = True
    found = _STATE["result"]
    _STATE["result"] = None
    if found is not None:
        _MODELS.clear()
        _MODELS.update({name: describe(entry) for name, entry in found.items()})
        collection = _PREVIEWS["collection"]
        if collection is not None:
            for name, entry in _MODELS.items():
                preview = entry.get("preview")
                if preview and os.path.isfile(preview) and name not in collection:
                    try:
                        collection.load(name, preview, "IMAGE")
                    except (KeyError, RuntimeError):
                        pass
    try:
        from . import runner

        runner.redraw_ui()
    except (AttributeError, RuntimeError):
        pass
    return None


# --------------------------------------------------------------------------- the pickers


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


def offered(picker: str) -> list[str]:
    """Bundled model names the picker ('texture' or 'volume') offers, by name."""
    return [name for name in sorted(_MODELS) if _MODELS[name].get("domain") in PICKERS[picker]]


def default_model(picker: str) -> str:
    """The model a picker starts on: texture, a bundled mesh model with the most maps (a PBR one),
    else any it offers; volume, `volume_default`, else any volume model; FILE_ITEM when none."""
    names = offered(picker)
    if picker == "volume":
        return "volume_default" if "volume_default" in names else (names or [FILE_ITEM])[0]
    mesh = [name for name in names if _MODELS[name]["domain"] == "mesh"]
    ranked = sorted(mesh or names, key=lambda name: (-len(_MODELS[name]["maps"]), name))
    return (ranked or [FILE_ITEM])[0]


def _tooltip(picker: str, entry: dict) -> str:
    text = VOLUME_PICKER_TEXT if picker == "volume" else DOMAIN_TEXT[entry["domain"]]
    if picker == "texture":
        text += f". Maps: {', '.join(entry['maps'])}"
    credit = entry.get("credit") or entry.get("license")
    return f"{text}. {credit}" if credit else text


def _items(picker: str) -> list:
    ensure_listed()
    items = []
    for name in offered(picker):
        icon = icon_id(name)
        items.append((name, name, _tooltip(picker, _MODELS[name]), icon if icon else "TEXTURE", _stable_index(name)))
    kinds = "a mesh or volume model" if picker == "texture" else "a volume model"
    items.append((FILE_ITEM, "Model File", f"Any .nca3d file ({kinds}): set its path below", "FILE_FOLDER", 0))
    _ITEMS[picker][:] = items
    return _ITEMS[picker]


def texture_model_items(self, context):
    """EnumProperty items of the texture picker: bundled mesh and volume models, and 'Model File'."""
    return _items("texture")


def volume_model_items(self, context):
    """EnumProperty items of the volume picker: bundled volume models, and 'Model File'."""
    return _items("volume")


def model_accessors(picker: str):
    """(get, set) of a picker's Model enum: the choice is kept by name in `model_name` (so it
    survives a library that changes), and an untouched picker shows default_model(picker)."""

    def get(settings) -> int:
        ensure_listed()
        if not settings.model_name and not _STATE["loaded"]:
            return NOT_LISTED  # no item: shown empty until the library is listed
        name = settings.model_name or default_model(picker)
        return 0 if name == FILE_ITEM else _stable_index(name)

    def set_(settings, value: int) -> None:
        names = {_stable_index(name): name for name in offered(picker)}
        settings.model_name = names.get(value, FILE_ITEM)

    return get, set_


def choose(settings, picker: str, model: str) -> None:
    """Point a picker's settings at `model`: a bundled name it offers, or a .nca3d file path
    (operators' `model` argument, for scripts); runner.UserError naming the choices otherwise."""
    from . import runner

    if model.lower().endswith(".nca3d") or os.sep in model or "/" in model:
        settings.model, settings.model_file = FILE_ITEM, model
        return
    ensure_listed()
    names = offered(picker)
    if model not in names:
        what = "mesh or volume" if picker == "texture" else "volume"
        raise runner.UserError(f"'{model}' is not a bundled {what} model; use one of {', '.join(names) or 'none'}, "
                               f"or a .nca3d file path")
    settings.model = model


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


def model_info(settings) -> dict | None:
    """describe() of the chosen model; None while unknown (library loading, unreadable file)."""
    if settings.model == FILE_ITEM:
        return file_entry(bpy.path.abspath(settings.model_file)) if settings.model_file.strip() else None
    return _MODELS.get(settings.model)


def missing_maps_text(label: str, info: dict, missing: list[str]) -> str:
    """Why some maps cannot be baked, e.g. "'granite_mesh' has albedo only (no normal, height)"."""
    has = "albedo only" if info["maps"] == ["albedo"] else "only " + ", ".join(info["maps"])
    return f"'{label}' has {has} (no {', '.join(missing)})"


def bakeable_maps(settings, wanted: list[str]) -> tuple[list[str], str]:
    """The chosen maps the model makes, and a note naming those it cannot make ("" if none);
    runner.UserError when none is left, or Displace with a model without height."""
    from . import runner

    info = model_info(settings)
    if info is None:  # an unreadable model file: the backend says what is wrong with it
        return wanted, ""
    label = model_label(settings)
    maps = [kind for kind in wanted if kind in info["maps"]]
    missing = [kind for kind in wanted if kind not in info["maps"]]
    if not maps:
        toggles = " or ".join(kind.title() for kind in info["maps"] if kind != "ao")  # AO needs Albedo
        raise runner.UserError(f"{missing_maps_text(label, info, missing)}: turn on {toggles}")
    if settings.displace and "height" not in info["maps"]:
        raise runner.UserError(f"Displace needs a height map and '{label}' has none: turn Displace off "
                               f"or choose a PBR model")
    return maps, (missing_maps_text(label, info, missing) if missing else "")


# --------------------------------------------------------------------------- texture scale


def scene_spacing(settings) -> float | None:
    """The scene's cell spacing in world units: Texture Scale, or (0) the model's training
    spacing; None while the model is unknown."""
    if settings.scale > 0:
        return settings.scale
    info = model_info(settings)
    return info["spacing"] if info else None


def world_area(context, obj) -> float:
    """Surface area of the object's evaluated mesh in world units (its scale applied)."""
    import numpy as np

    linear = np.array(obj.matrix_world.to_3x3(), dtype=np.float64)
    evaluated = obj.evaluated_get(context.evaluated_depsgraph_get())
    mesh = evaluated.to_mesh()
    try:
        mesh.calc_loop_triangles()
        co = np.empty(len(mesh.vertices) * 3, dtype=np.float32)
        mesh.vertices.foreach_get("co", co)
        tris = np.empty(len(mesh.loop_triangles) * 3, dtype=np.int32)
        mesh.loop_triangles.foreach_get("vertices", tris)
    finally:
        evaluated.to_mesh_clear()
    corners = (co.reshape(-1, 3).astype(np.float64) @ linear.T)[tris.reshape(-1, 3)]
    return float(np.linalg.norm(np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0]),
                                axis=1).sum() / 2.0)


def texture_spacing(context, obj, settings) -> float:
    """The `--scale` of texturing `obj`: world units per cell, the object's own Object Texture
    Scale, else the scene's (scene_spacing); 0 (the backend's automatic scale) only for an
    unreadable model file. runner.UserError when a mesh model would need more than MAX_CELLS
    cells on this object."""
    from . import runner

    spacing = obj.nca3d_texture_scale or scene_spacing(settings)
    if not spacing:
        return 0.0
    info = model_info(settings)
    if info and info.get("domain") == "mesh":
        area = world_area(context, obj)
        cells = area / (CELL_AREA * spacing ** 2)
        if cells > MAX_CELLS:
            coarsest = math.sqrt(area / (CELL_AREA * MAX_CELLS))
            raise runner.UserError(
                f"'{obj.name}' would need {cells:,.0f} cells at {spacing:.4g} units per cell (at most "
                f"{MAX_CELLS:,}): raise Texture Scale to {coarsest:.3g} or more (the scene's, or the object's "
                f"Object Texture Scale)")
    return spacing


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
    _FILES.clear()
    for items in _ITEMS.values():
        items.clear()
    _STATE.update(thread=None, job=None, result=None, error="", loaded=False, python=None)
