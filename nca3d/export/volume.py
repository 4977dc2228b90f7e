"""Volume export: grow a volume model's texture and write it as OpenVDB for Blender.

The pipeline of ``python -m nca3d.volume [--model M.nca3d] [--res 128] [--steps 96] [--frames N --every K] ...``
(the command itself, its arguments, is nca3d.commands.volume).

The NCA runs on its periodic cube lattice (64^3 cells by default) from the seed for ``--steps``
steps; the LPPN then decodes density and colour at the centres of a dense ``res^3`` voxel grid
spanning the whole lattice, in chunks of ``--chunk`` points streamed straight into preallocated
float32 arrays (so decoder memory stays bounded at any resolution). Written into ``--out``:

* ``NAME.vdb``: float grid ``density`` (class fog volume) and vec3 grid ``color``; the transform
  places the volume in the cube ``[-S/2, S/2]^3`` centred at the origin (S = ``--size``), voxel
  ``(i, j, k)`` at world ``(x, y, z)`` = the lattice's own x, y, z axes (x along the last state
  axis), with ``voxel_size = S / res``.
* ``NAME.npz``: the same arrays, ``density`` (X, Y, Z) and ``color`` (X, Y, Z, 3), plus
  ``voxel_size``, ``origin`` (world centre of voxel (0, 0, 0)), ``size``, ``density_scale``,
  ``color_space``, ``steps`` and ``seed`` (``--no-npz`` skips it; stored uncompressed).
* ``NAME.png``: an emission-absorption preview (``--preview-size``, 0 = none), the same renderer
  training uses, on a white background.
* ``NAME.json``: the settings, transform and units (used by ``--resume``).

With ``--frames N`` the rollout continues ``--every K`` steps between frames and the files are
numbered ``NAME.0001.vdb`` ... (one numbered npz/png per frame too); ``--resume`` skips frames
whose files are all present, after checking that ``NAME.json`` records the same settings. Every
file is written under a temporary name and renamed when complete.

Units
-----
The model's density is an extinction coefficient per *model* unit, where the lattice fills the
cube [-1, 1]^3 (2 units wide); that is what training and the preview render with. The written
``density`` is an extinction coefficient per **world unit** (Blender unit) of the exported cube::

    density_written = density_model * (2 / size) * density_scale

so the optical depth through the cube, and thus the look, is the same for every ``--size``: a
ray through the VDB at Principled Volume density 1.0 sees what the preview (rendered with the
same ``density_scale``) sees. ``--density-scale`` thickens or thins both alike.

Colour: the model's ``rgb`` is display-encoded (sRGB), as its renders are compared to sRGB
exemplars. ``--color-space linear`` (default) writes it linearised (sRGB EOTF) because Blender
reads attribute values as scene-linear; ``srgb`` writes the decoder's values unchanged.

To reproduce the preview's emission-absorption in Blender, use a Principled Volume with
Density = 1 (Density Attribute ``density``), Color = black, Absorption Color = black, Emission
Color = Attribute ``color`` (Color output) and Emission Strength = Attribute ``density`` (Fac):
Cycles then absorbs ``density`` per unit length and emits ``density * color`` per unit length,
the preview's model (up to the compositing colour space). Checked with Cycles (bpy 5.0.1) on a
constant-density cube of edge 1: transmittance exp(-density) and the emission term agree within
2 %. For smoke-like scattering instead, plug ``color`` into Color.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import torch

from ..core.dense import COLOR_SPACES, DEFAULT_CHUNK, check_volume_model, decode_volume
from ..core.grow import grow
from ..errors import NCA3DError
from ..io.atomic import prepare_out_dir
from ..memory import available_memory, human_bytes

DEFAULT_MODEL_NAME = "volume_default.nca3d"
DEFAULT_OUT = "nca3d_out"
DEFAULT_NAME = "volume"
DEFAULT_RES = 128
MIN_RES, MAX_RES = 8, 1024
DEFAULT_STEPS = 96
DEFAULT_EVERY = 8
DEFAULT_PREVIEW = 256
PREVIEW_SAMPLES = 128
MIN_LATTICE, MAX_LATTICE = 3, 512
# zlib level of the .vdb grids: dense float noise barely compresses better at higher levels
# (192^3 model volume: level 1 -> 71.5 MiB in 3.3 s, level 6 -> 70.2 MiB in 5.4 s, none -> 107 MiB).
VDB_ZLIB_LEVEL = 1

# Memory model of an export, in bytes (checked against available RAM before any work starts):
#  * the output arrays: density 4 + colour 12 bytes per voxel, held for the whole run;
#  * write_vdb's transient peak while it writes a grid: measured about 60 bytes per voxel on
#    dense 128^3 and 192^3 volumes (activity masks, the leaf copy, the active values, their raw
#    bytes and the zlib output of the 12-byte colour grid), rounded up;
#  * the NCA state and its perception/update temporaries, and one decoder chunk.
ARRAY_BYTES_PER_VOXEL = 16
VDB_WRITE_BYTES_PER_VOXEL = 64
STATE_COPIES = 8  # state + fire mask + perception slabs + update blocks + cat, generously
CHUNK_BYTES_PER_POINT = 2048  # corners (8 x C floats), weights, local, SIREN activations, indices
PLANE_BYTES = 64 << 20  # the separable decoder's interpolated (y, z) planes of one chunk
TABLE_BYTES_PER_PIXEL = 256  # its (y, z) corner/weight/local tables, per voxel of one res^2 slice
BASE_BYTES = 256 << 20  # interpreter, torch, the model, the preview

_FORMAT = "nca3d-volume"


# --------------------------------------------------------------------------- model and settings


def default_model_candidates() -> list[Path]:
    """Where the bundled default volume model is looked for, in order: inside the installed
    package (``nca3d/assets/models/``), then the source checkout's ``assets/models/``."""
    from ..models import library_folders

    return [folder / DEFAULT_MODEL_NAME for folder in library_folders()]


def default_model_path(candidates: list[Path] | None = None) -> Path:
    """The bundled default volume model, or NCA3DError saying how to get one."""
    candidates = default_model_candidates() if candidates is None else [Path(c) for c in candidates]
    for path in candidates:
        if path.is_file():
            return path
    looked = " or ".join(f"'{p}'" for p in candidates)
    raise NCA3DError(f"no default volume model is installed (looked for {looked}); pass --model PATH, "
                     f"or make one with 'nca3d new --domain volume --out M.nca3d' (untrained) or "
                     f"'nca3d train EXEMPLAR --domain volume --out M.nca3d'")


def estimate_memory(res: int, lattice_cells: int = 64 ** 3, channels: int = 16, chunk: int = DEFAULT_CHUNK) -> int:
    """Peak host memory (bytes) of exporting a res^3 volume: see the memory model above."""
    voxels = int(res) ** 3
    return (voxels * (ARRAY_BYTES_PER_VOXEL + VDB_WRITE_BYTES_PER_VOXEL)
            + int(lattice_cells) * int(channels) * 4 * STATE_COPIES
            + int(res) ** 2 * TABLE_BYTES_PER_PIXEL + PLANE_BYTES
            + int(chunk) * CHUNK_BYTES_PER_POINT + BASE_BYTES)


def _largest_res(budget: int, lattice_cells: int, channels: int, chunk: int) -> int:
    res = MAX_RES
    while res > MIN_RES and estimate_memory(res, lattice_cells, channels, chunk) > budget:
        res -= 8 if res > 64 else 1
    return res


def check_memory(res: int, lattice_cells: int, channels: int, chunk: int, available: int | None = None) -> int:
    """Refuse (NCA3DError naming the estimate) an export that does not fit in available RAM."""
    need = estimate_memory(res, lattice_cells, channels, chunk)
    if available is None:
        available, total = available_memory()
    else:
        total = None
    if available is not None and need > available:
        best = _largest_res(available, lattice_cells, channels, chunk)
        of_total = f" of {human_bytes(total)}" if total else ""
        hint = f"use --res {best} or less" if estimate_memory(best, lattice_cells, channels, chunk) <= available \
            else "free some memory"
        raise NCA3DError(f"--res {res} needs about {human_bytes(need)} of memory (output arrays and VDB writer) "
                         f"but only {human_bytes(available)}{of_total} is available; {hint}")
    return need


def _check_int(name: str, value, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise NCA3DError(f"{name} must be a whole number, got {value!r}")
    if value < low or (high is not None and value > high):
        span = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise NCA3DError(f"{name} must be {span}, got {value}")
    return int(value)


def check_positive(name: str, value) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise NCA3DError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(number) or number <= 0:
        raise NCA3DError(f"{name} must be a positive finite number, got {value!r}")
    return number


def check_res(res) -> int:
    if isinstance(res, (int, np.integer)) and not isinstance(res, bool) and res > MAX_RES:
        raise NCA3DError(f"--res {res} is too large: at most {MAX_RES} voxels per axis (a {res}^3 volume "
                         f"would need about {human_bytes(estimate_memory(res))} of memory)")
    return _check_int("--res", res, MIN_RES, MAX_RES)


def check_name(name) -> str:
    if not isinstance(name, str) or not name.strip() or name in (".", ".."):
        raise NCA3DError(f"--name must be a non-empty file name, got {name!r}")
    if "/" in name or "\\" in name or (os.sep in name) or any(ord(ch) < 32 for ch in name):
        raise NCA3DError(f"--name must be a plain file name without folders or control characters, got {name!r}")
    return name


# --------------------------------------------------------------------------- growing and decoding


def volume_transform(res: int, size: float) -> tuple[float, tuple[float, float, float]]:
    """(voxel_size, origin) placing res^3 voxels in [-size/2, size/2]^3 (origin = centre of voxel 0)."""
    from ..io.vdb import fit_to_box

    half = float(size) / 2.0
    return fit_to_box((res, res, res), (-half,) * 3, (half,) * 3)


def render_preview(model, state: torch.Tensor, lattice, size: int, density_scale: float = 1.0,
                   samples: int = PREVIEW_SAMPLES) -> np.ndarray:
    """The preview image (size, size, 3) in [0, 1], density scaled like the exported volume."""
    from ..render.volume import render_volume_image

    with torch.inference_mode():
        return render_volume_image(model, state[:1], lattice, size=size, samples=samples,
                                   density_scale=density_scale)


# --------------------------------------------------------------------------- writing


def _write_npz(path: Path, arrays: dict) -> None:
    from ..io.atomic import atomic_path

    try:
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez(f, **arrays)  # streams each array in 16 MiB pieces: no extra copy
            f.flush()
            os.fsync(f.fileno())
    except OSError as exc:
        raise NCA3DError(f"cannot write '{path}': {exc.strerror or exc}") from None


def _write_text(path: Path, text: str) -> None:
    from ..io.atomic import write_bytes_atomic

    try:
        write_bytes_atomic(path, text.encode("utf-8"))
    except OSError as exc:
        raise NCA3DError(f"cannot write '{path}': {exc.strerror or exc}") from None


def _write_preview(path: Path, image: np.ndarray) -> None:
    from ..io.images import write_png

    try:
        write_png(path, image)
    except OSError as exc:
        raise NCA3DError(f"cannot write '{path}': {exc.strerror or exc}") from None


def _frame_files(out: Path, name: str, frames: int | None, npz: bool, preview: bool) -> list[dict]:
    """Per frame: {'vdb', 'npz'?, 'png'?} paths (one unnumbered frame when frames is None)."""
    width = max(4, len(str(frames or 0)))
    stems = [name] if frames is None else [f"{name}.{index:0{width}d}" for index in range(1, frames + 1)]
    result = []
    for stem in stems:
        files = {"vdb": out / f"{stem}.vdb"}
        if npz:
            files["npz"] = out / f"{stem}.npz"
        if preview:
            files["png"] = out / f"{stem}.png"
        result.append(files)
    return result


def _model_digest(model) -> str:
    from ..io.model_file import tensors_digest

    return tensors_digest(model.state_dict())


# --------------------------------------------------------------------------- the export


def generate_volume(model, out_dir=DEFAULT_OUT, name: str = DEFAULT_NAME, res: int = DEFAULT_RES,
                    steps: int = DEFAULT_STEPS, seed: int = 0, frames: int | None = None,
                    every: int = DEFAULT_EVERY, size: float = 1.0, lattice_size: int | None = None,
                    device=None, progress=None, *, density_scale: float = 1.0,
                    preview_size: int = DEFAULT_PREVIEW, npz: bool = True, color_space: str = "linear",
                    chunk: int = DEFAULT_CHUNK, resume: bool = False, model_source: str | None = None
                    ) -> list[str]:
    """Grow `model` and write NAME.vdb / .npz / .png (+ NAME.json) into `out_dir`; see the module doc.

    frames=None writes one unnumbered volume after `steps` steps; frames=N writes NAME.0001 ...
    NAME.000N, frame f after steps + (f - 1) * every steps of the same rollout. lattice_size=None
    uses the model's grid. device=None runs where the model is (the model is moved otherwise).
    Returns the written file paths (for frames: every frame's files, skipped ones included).
    Raises NCA3DError for bad settings, a non-volume model, too little memory or an unwritable
    folder, before anything is written.
    """
    from ..core.nca import make_generator
    from ..io.vdb import write_vdb
    from ..lattices import Grid3D
    from ..progress import Progress

    progress = progress if progress is not None else Progress("none")
    source = f"model '{model_source}'" if model_source else "the model"
    check_volume_model(model, source)
    res = check_res(res)
    steps = _check_int("--steps", steps, 0)
    seed = _check_int("--seed", seed, -(1 << 63), (1 << 64) - 1)
    if frames is not None:
        frames = _check_int("--frames", frames, 1, 999_999)
        every = _check_int("--every", every, 1)
    size = check_positive("--size", size)
    density_scale = check_positive("--density-scale", density_scale)
    preview_size = _check_int("--preview-size", preview_size, 0, 8192)
    chunk = _check_int("--chunk", chunk, 1, 1 << 26)
    name = check_name(name)
    if color_space not in COLOR_SPACES:
        raise NCA3DError(f"--color-space must be {' or '.join(COLOR_SPACES)}, got {color_space!r}")
    cfg = model.config
    if lattice_size is None:
        lattice = Grid3D(tuple(cfg.grid_size), cfg.harmonics)
    else:
        lattice = Grid3D(_check_int("--lattice", lattice_size, MIN_LATTICE, MAX_LATTICE), cfg.harmonics)
    if device is not None:
        model = model.to(device)
    device = model.device
    check_memory(res, lattice.num_cells, cfg.channels, chunk)

    out = prepare_out_dir(out_dir)
    plan = _frame_files(out, name, frames, npz, preview_size > 0)
    for files in plan:
        for path in files.values():
            if path.is_dir():
                raise NCA3DError(f"'{path}' is a folder; remove it or choose another --name")
    voxel_size, origin = volume_transform(res, size)
    density_factor = density_scale * 2.0 / size
    # What fixes the content of every frame (--resume requires these to match; the frame count,
    # --no-npz and --preview-size may change between runs).
    settings = {"res": res, "steps": steps, "seed": seed, "every": every if frames else None,
                "size": size, "lattice": list(lattice.cell_shape), "density_scale": density_scale,
                "color_space": color_space, "device": device.type}
    record = {
        "format": _FORMAT, "model": model_source, "model_sha256": _model_digest(model), "settings": settings,
        "frame_count": frames, "npz": bool(npz), "preview_size": preview_size,
        "voxel_size": voxel_size, "origin": list(origin), "box": [[-size / 2] * 3, [size / 2] * 3],
        "grids": {"density": "float, fog volume: extinction per world unit = model density x 2 / size x "
                             "density_scale", "color": f"vec3, rgb ({color_space})"},
        "frames": [{kind: path.name for kind, path in files.items()} for files in plan],
    }
    manifest = out / f"{name}.json"
    if resume:
        _check_resume(manifest, record, plan)
    _write_text(manifest, json.dumps(record, indent=2) + "\n")

    state = model.seed(lattice)
    generator = make_generator(seed, device)
    arrays = (np.empty((res,) * 3, np.float32), np.empty((res,) * 3 + (3,), np.float32))
    written: list[str] = []
    total = len(plan)
    for index, files in enumerate(plan):
        label = f"frame {index + 1}/{total}: " if frames is not None else ""
        run_steps = steps if index == 0 else every
        state = grow(model, state, lattice, run_steps, generator, progress, label)
        paths = [str(p) for p in files.values()]
        if resume and all(p.is_file() for p in files.values()):
            progress.update("write", 1.0, f"{label}kept existing {files['vdb'].name}", force=True)
            written += paths
            continue
        density, color = decode_volume(model, state, lattice, res, density_factor=density_factor,
                                       color_space=color_space, chunk=chunk, out=arrays, progress=progress,
                                       label=label)
        if "npz" in files:
            progress.update("write", 0.0, f"{label}{files['npz'].name}")
            _write_npz(files["npz"], {
                "density": density, "color": color, "voxel_size": np.float64(voxel_size),
                "origin": np.asarray(origin, np.float64), "size": np.float64(size),
                "density_scale": np.float64(density_scale), "color_space": np.str_(color_space),
                "steps": np.int64(steps + index * (every if frames else 0)), "seed": np.int64(seed)})
        progress.update("write", 0.5 if "npz" in files else 0.0, f"{label}{files['vdb'].name}", force=True)
        write_vdb(files["vdb"], {"density": density, "color": color}, voxel_size=voxel_size, origin=origin,
                  grid_classes={"density": "fog volume", "color": "unknown"}, zlib_level=VDB_ZLIB_LEVEL)
        progress.update("write", 1.0, f"{label}{files['vdb'].name}")
        if "png" in files:
            progress.update("preview", 0.0, f"{label}{files['png'].name}")
            _write_preview(files["png"], render_preview(model, state, lattice, preview_size, density_scale))
            progress.update("preview", 1.0, f"{label}{files['png'].name}")
        written += paths
    return written + [str(manifest)]


def _check_resume(manifest: Path, record: dict, plan: list[dict]) -> None:
    """Refuse --resume unless the frames already there were made by the same model and settings."""
    if not manifest.is_file():
        present = [path.name for files in plan for path in files.values() if path.exists()]
        if present:
            raise NCA3DError(f"cannot resume: '{present[0]}' exists but '{manifest.name}', the record of the "
                             f"settings that made it, does not; run without --resume to overwrite")
        return  # nothing to resume: a fresh run
    try:
        old = json.loads(manifest.read_text())
    except (OSError, ValueError):
        raise NCA3DError(f"cannot resume: '{manifest}' is unreadable; remove it or run without --resume") from None
    if not isinstance(old, dict) or old.get("format") != _FORMAT:
        raise NCA3DError(f"cannot resume: '{manifest}' is not an nca3d volume record; "
                         f"choose another --name or run without --resume")
    if old.get("model_sha256") != record["model_sha256"]:
        raise NCA3DError(f"cannot resume: the files in '{manifest.parent}' were made with a different model; "
                         f"run without --resume to overwrite them")
    old_settings = old.get("settings") or {}
    changed = [f"{key} {old_settings.get(key)!r} -> {value!r}" for key, value in record["settings"].items()
               if old_settings.get(key) != value]
    if changed:
        raise NCA3DError(f"cannot resume: settings differ from '{manifest.name}' ({', '.join(changed)}); "
                         f"use the same options or run without --resume")
