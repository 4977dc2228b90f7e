"""`nca3d texture`: grow a model on any mesh and bake PBR maps; `nca3d maps`: tileable 2D map sets.

texture: load the mesh -> unwrap it when it has no usable UVs -> build a uniform cell lattice
(mesh models) -> grow the NCA -> bake every texel (closest lattice point, decode) -> dilate
seams -> write the maps, a .glb, an .obj + .mtl, a preview and NAME.json (the resolved
settings); with --displace also NAME_displaced.glb/.obj, moved along the normals by the height
(ops.displace). A volume model textures the mesh as a solid texture: each texel decodes at its 3D
position, `--scale` mesh units per cell.

Everything is written into a hidden staging folder inside --out and moved into place at the
end, so an interrupted or failed run leaves no partial files.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .errors import NCA3DError
from .io.images import write_png
from .progress import Progress

MAP_KINDS = ("albedo", "normal", "roughness", "height", "ao", "orm")
DEFAULT_CELLS = 40962  # volume models on a mesh: cells of the default 64-frequency icosphere
MIN_SIZE, MAX_SIZE = 16, 8192
STAGING_PREFIX = ".nca3d-staging-"
GEOMETRY_CACHE_BYTES = 1 << 30  # located texels kept across the frames of an animated bake


@dataclass
class TextureConfig:
    """Settings of one `nca3d texture` run; saved as NAME.json next to the outputs."""

    mesh: str
    model: str
    out: str
    name: str = ""  # output file stem (default: the mesh file's stem)
    size: int = 2048
    scale: float = 0.0  # cell spacing in mesh units (0: from `cells`)
    cells: int = 0  # lattice cells over the whole surface (0 and no `scale`: default_cells(model))
    steps: int = 96
    seed: int = 0
    frames: int = 0  # > 0: an animated sequence NAME_albedo.0001.png ...
    every: int = 8
    margin: int = 0  # seam dilation in px (0: size / 128, at least 4)
    normal_convention: str = "opengl"
    object_normals: bool = False  # also write NAME_normal_object.png
    exr: bool = False  # height as 32-bit float EXR instead of 16-bit PNG
    preview_size: int = 512
    device: str = "auto"
    displace: bool = False  # also write NAME_displaced.glb/.obj: vertices moved along normals by the height
    displace_strength: float = 0.0  # mesh units per unit of height (0: ops.displace's default for the mesh)

    def __post_init__(self):
        if not (self.displace_strength >= 0 and math.isfinite(self.displace_strength)):
            raise NCA3DError(f"--displace-strength {self.displace_strength} must be a finite number >= 0 "
                             f"(mesh units; 0: the default for the mesh)")
        self.displace = self.displace or self.displace_strength > 0  # a strength implies --displace
        if self.scale < 0 or self.cells < 0 or (self.scale and self.cells):
            raise NCA3DError("give either --scale S (mesh units per cell, > 0) or --cells N (> 0), not both")
        self.margin = self.margin or max(4, self.size // 128)
        self.name = self.name or Path(self.mesh).stem
        _check_common(self)


def _check_common(config) -> None:
    """Checks shared by `texture` and `maps` settings."""
    if not MIN_SIZE <= config.size <= MAX_SIZE:
        raise NCA3DError(f"--size {config.size} is out of range; use {MIN_SIZE} to {MAX_SIZE} pixels")
    if config.steps < 0 or config.frames < 0 or config.every < 1:
        raise NCA3DError("need --steps >= 0, --frames >= 0 and --every >= 1")
    if config.normal_convention not in ("opengl", "directx"):
        raise NCA3DError("--normal-convention must be opengl or directx")
    if config.name and any(c in config.name for c in '/\\:*?"<>|'):
        raise NCA3DError(f"output name '{config.name}' is not a valid file name; pass another --name")


# --------------------------------------------------------------------------- encoding outputs


def _quantise(values: np.ndarray, bits: int = 8) -> np.ndarray:
    top = (1 << bits) - 1
    return np.round(np.clip(np.nan_to_num(values), 0.0, 1.0) * top).astype(np.uint8 if bits == 8 else np.uint16)


def _unit(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)


def decoded_normals(encoded: np.ndarray) -> np.ndarray:
    """Model normal outputs (Q, 3) in [0, 1] -> unit vectors (Q, 3), z towards the outside."""
    n = encoded * 2.0 - 1.0
    n[:, 2] = np.maximum(n[:, 2], 1e-3)
    return _unit(n)


def encode_normals(unit: np.ndarray, convention: str = "opengl") -> np.ndarray:
    """Unit vectors (Q, 3) -> colours (Q, 3) in [0, 1]; DirectX maps flip green (-Y)."""
    colour = unit * 0.5 + 0.5
    if convention == "directx":
        colour[:, 1] = 1.0 - colour[:, 1]
    return colour


class MapSet:
    """The baked maps of one frame, as uint8 / uint16 arrays (S, S[, C]) filled chunk by chunk."""

    def __init__(self, names: list[str], size: int, height_float: bool):
        channels = {"albedo": 3, "normal": 3, "normal_object": 3, "roughness": 1, "ao": 1}
        self.arrays: dict[str, np.ndarray] = {}
        for name in names:
            if name == "height":
                dtype = np.float32 if height_float else np.uint16
                self.arrays[name] = np.zeros((size, size), dtype)
            else:
                shape = (size, size, channels[name]) if channels[name] > 1 else (size, size)
                self.arrays[name] = np.zeros(shape, np.uint8)

    def put(self, name: str, flat_index: np.ndarray, values: np.ndarray) -> None:
        array = self.arrays[name]
        view = array.reshape(array.shape[0] * array.shape[1], -1)
        if array.dtype == np.float32:
            view[flat_index] = values.reshape(len(flat_index), -1)
        else:
            view[flat_index] = _quantise(values, 16 if array.dtype == np.uint16 else 8).reshape(len(flat_index), -1)

    def orm(self) -> np.ndarray | None:
        """R = ao, G = roughness, B = metallic (0); None when the model has neither."""
        if "ao" not in self.arrays and "roughness" not in self.arrays:
            return None
        some = next(iter(self.arrays.values()))
        packed = np.zeros((*some.shape[:2], 3), np.uint8)
        packed[..., 0] = self.arrays.get("ao", 255)
        packed[..., 1] = self.arrays.get("roughness", 128)
        return packed


def model_maps(model, object_space: bool = False) -> list[str]:
    """The maps a model can bake: albedo always; the others when it has those outputs.
    object_space: also an object-space normal map (mesh bakes: it feeds the preview)."""
    slices = model.channel_slices()
    names = ["albedo"]
    if "normal" in slices:
        names += ["normal"] + (["normal_object"] if object_space else [])
    names += [n for n in ("roughness", "height", "ao") if n in slices]
    return names


def store_outputs(maps: MapSet, model, values: np.ndarray, index: np.ndarray, normals_object=None,
                  normals_tangent=None, convention: str = "opengl") -> None:
    """Scatter decoded values (Q, K) into `maps` at flat texel `index`; normals come converted."""
    slices = model.channel_slices()
    colour = values[:, slices["albedo"] if "albedo" in slices else slices["rgb"]]
    maps.put("albedo", index, colour)
    for name in ("roughness", "height", "ao"):
        if name in maps.arrays:
            maps.put(name, index, values[:, slices[name]])
    if "normal" in maps.arrays:
        maps.put("normal", index, encode_normals(normals_tangent, convention))
    if "normal_object" in maps.arrays:
        maps.put("normal_object", index, encode_normals(normals_object))


# --------------------------------------------------------------------------- the mesh bake


def default_cells(model) -> int:
    """Lattice cells over a mesh when neither --cells nor --scale is given.

    A mesh model gets its training icosphere's count (10 f^2 + 2): the texture then covers the
    mesh as it covered the sphere in training, whatever frequency it was trained at."""
    if model.config.domain == "mesh":
        return 10 * model.config.icosphere_frequency ** 2 + 2
    return DEFAULT_CELLS


def _spacing_for_cells(area: float, cells: int) -> float:
    """Edge length of an equilateral lattice with `cells` vertices over `area` (sqrt(3)/2 h^2 each)."""
    return math.sqrt(area / cells / (math.sqrt(3) / 2))


class MeshBaker:
    """Everything fixed across the frames of one bake: the mesh, its texels' frames, the lattice."""

    def __init__(self, model, mesh, config: TextureConfig, progress: Progress, keep_geometry: bool = False):
        from .ops.bake import tangent_frames

        self.model, self.mesh, self.config, self.progress = model, mesh, config, progress
        frames = tangent_frames(mesh.vertices, mesh.faces, mesh.uv)
        self.frames = dataclasses.replace(frames, tangent=frames.tangent.astype(np.float32),
                                          normal=frames.normal.astype(np.float32))
        area = float(np.linalg.norm(np.cross(mesh.vertices[mesh.faces[:, 1]] - mesh.vertices[mesh.faces[:, 0]],
                                             mesh.vertices[mesh.faces[:, 2]] - mesh.vertices[mesh.faces[:, 0]]),
                                    axis=1).sum() / 2)
        if not config.scale and not config.cells:
            config.cells = default_cells(model)  # resolved here: the saved settings show it
        self.spacing = config.scale or _spacing_for_cells(area, config.cells)
        self.lattice_stats: dict = {"spacing": self.spacing}
        self.timings: dict[str, float] = {}
        self.texels = 0  # texels decoded (over all bakes)
        self.keep_geometry = keep_geometry or config.frames > 1
        self._located: list | None = None  # the located texel chunks, kept across bakes
        self.covered: np.ndarray | None = None  # (S, S) bool: texels inside the UV layout
        if model.config.domain == "mesh":
            from .ops.remesh import uniform_lattice
            from .render.raycast import RayCaster

            progress.update("lattice", 0.0, f"remeshing to cell spacing {self.spacing:.4g}", force=True)
            lattice_mesh = uniform_lattice(mesh.vertices, mesh.faces, spacing=self.spacing)
            self.lattice_stats = {"spacing": self.spacing, **lattice_mesh.stats}
            self.lattice = model.make_lattice((lattice_mesh.vertices, lattice_mesh.faces))
            self.caster = RayCaster(lattice_mesh.vertices, lattice_mesh.faces)
            self.lattice_stats["raycast_backend"] = self.caster.backend
            progress.update("lattice", 1.0, f"{len(lattice_mesh.vertices)} cells, edge length p5/p95 "
                            f"{lattice_mesh.stats['edge_p5']:.2f}/{lattice_mesh.stats['edge_p95']:.2f} of the spacing")
        else:
            self.lattice = model.make_lattice()
            self.caster = None

    def query(self, positions: np.ndarray, normals: np.ndarray):
        """Texel positions and unit normals (Q, 3) -> the model's query: lattice face + barycentrics
        (mesh models), or cell coordinates (volume models).

        The lattice lies on the surface (within a few % of the spacing), so each texel casts a ray
        back along its normal from one spacing outside: 10x faster than a closest-point query.
        Rays that miss or land farther than half a spacing away (thin crevices) take the closest
        point instead."""
        if self.caster is None:
            return torch.from_numpy((positions / self.spacing).astype(np.float32))
        from .lattices.mesh import SurfacePoints

        face, bary, t = self.caster.cast(positions + normals * self.spacing, -normals)
        stray = (face < 0) | (np.abs(t - self.spacing) > 0.5 * self.spacing)
        if stray.any():
            face[stray], bary[stray], _ = self.caster.closest_points(positions[stray])
        return SurfacePoints(torch.from_numpy(face), torch.from_numpy(bary))

    def _located_chunks(self, with_tangents: bool):
        """Per chunk of covered texels: (flat index (T,), query, frame), frame = (t, b, n) each
        (T, 3) with tangents, else (n,); then `self.covered` is set.

        All of it depends on the mesh only, so with `keep_geometry` it is kept for the next bakes
        (animation frames, live views) while it fits in GEOMETRY_CACHE_BYTES (a 2K map does;
        larger maps recompute)."""
        from .ops.bake import UVRasteriser, interpolate, texel_frames

        if self._located is not None:
            for number, chunk in enumerate(self._located):
                yield chunk, (number + 1) / len(self._located)
            return
        mesh, clock = self.mesh, self._clock
        rasteriser = UVRasteriser(mesh.uv, mesh.faces, self.config.size)
        chunks = iter(rasteriser)
        cache, cached_bytes = ([] if self.keep_geometry else None), 0
        while True:
            with clock("rasterise"):
                texels = next(chunks, None)
            if texels is None:
                break
            with clock("locate"):
                positions = interpolate(mesh.vertices, mesh.faces, texels.face, texels.bary)
                if with_tangents:
                    frame = texel_frames(self.frames, mesh.faces, texels.face, texels.bary)
                else:
                    frame = (_unit(interpolate(self.frames.normal, mesh.faces, texels.face, texels.bary)),)
            with clock("query"):  # the ray cast onto a mesh lattice
                chunk = (texels.index, self.query(positions, frame[-1]), frame)
            if cache is not None:
                cached_bytes += texels.index.nbytes + sum(a.nbytes for a in frame) + _query_bytes(chunk[1])
                if cached_bytes <= GEOMETRY_CACHE_BYTES:
                    cache.append(chunk)
                else:
                    cache = None
            yield chunk, rasteriser.position / max(rasteriser.candidates, 1)
        self.covered = rasteriser.covered
        self._located = cache

    @torch.no_grad()
    def bake(self, state: torch.Tensor, label: str = "") -> tuple[MapSet, np.ndarray]:
        """Bake one frame -> (maps, covered (S, S) bool), seams dilated. Adds each part's
        seconds to `self.timings` (rasterise, locate, query, decode, normals, store, dilate)."""
        from .ops.bake import dilate, up_frames

        cfg, clock = self.config, self._clock
        names = model_maps(self.model, object_space=True)
        maps = MapSet(names, cfg.size, cfg.exr)
        for (index, query, frame), done in self._located_chunks("normal" in names):
            with clock("decode"):
                values = self.model.decode(state, self.lattice, query)[0].float().cpu().numpy()
            tangent_normals = object_normals = None
            if "normal" in names:
                with clock("normals"):
                    t, b, n = frame
                    right, up = up_frames(n)
                    local = decoded_normals(values[:, self.model.channel_slices()["normal"]])
                    object_normals = _unit(local[:, :1] * right + local[:, 1:2] * up + local[:, 2:] * n)
                    tangent_normals = np.stack([np.sum(object_normals * t, 1), np.sum(object_normals * b, 1),
                                                np.sum(object_normals * n, 1)], axis=1)
            with clock("store"):
                store_outputs(maps, self.model, values, index, object_normals, tangent_normals,
                              cfg.normal_convention)
            self.texels += len(index)
            self.progress.update("bake", done, f"{label}{cfg.size}x{cfg.size} texels")
        with clock("dilate"):
            dilate(list(maps.arrays.values()), self.covered, cfg.margin)
        return maps, self.covered

    @contextlib.contextmanager
    def _clock(self, part: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.timings[part] = self.timings.get(part, 0.0) + time.perf_counter() - start


def _query_bytes(query) -> int:
    """Memory held by a located query: a tensor of cell coordinates or SurfacePoints."""
    if isinstance(query, torch.Tensor):
        return query.nbytes
    return query.face.nbytes + query.bary.nbytes


def _prepare_out(out: str) -> Path:
    from .volume import prepare_out_dir

    folder = prepare_out_dir(out)
    for stale in folder.glob(STAGING_PREFIX + "*"):  # left by a killed run: never half a result
        shutil.rmtree(stale, ignore_errors=True)
    return folder


def _map_file(folder: Path, name: str, kind: str, frame: int | None, suffix: str = ".png") -> Path:
    return folder / (f"{name}_{kind}.{frame:04d}{suffix}" if frame is not None else f"{name}_{kind}{suffix}")


def write_maps(maps: MapSet, folder: Path, name: str, frame: int | None, exr: bool,
               object_normals: bool = False) -> dict[str, Path]:
    """Write one frame's maps as PNG (height: 16-bit, or EXR) -> {kind: path}."""
    written = {}
    for kind, array in maps.arrays.items():
        if kind == "normal_object" and not object_normals:
            continue
        if kind == "height" and exr:
            from .io.exr import write_exr

            path = _map_file(folder, name, kind, frame, ".exr")
            write_exr(path, array)
        else:
            path = _map_file(folder, name, kind, frame)
            write_png(path, array, bits=16 if array.dtype == np.uint16 else 8)
        written[kind] = path
    orm = maps.orm()
    if orm is not None:
        written["orm"] = _map_file(folder, name, "orm", frame)
        write_png(written["orm"], orm)
    return written


def _preview_arrays(maps: MapSet, limit: int = 1024) -> dict[str, np.ndarray]:
    """Float maps for the preview renderer, downsampled to at most `limit` px."""
    from PIL import Image

    out = {}
    for kind in ("albedo", "normal_object", "roughness", "ao"):
        array = maps.arrays.get(kind)
        if array is None:
            continue
        image = Image.fromarray(array)
        if image.width > limit:
            image = image.resize((limit, limit), Image.BILINEAR)
        out[kind] = np.asarray(image, np.float32) / 255.0
    return out


def texture_mesh(config: TextureConfig, progress: Progress | None = None) -> list[str]:
    """Run `nca3d texture`; returns the written files (all appear at the end, or none)."""
    from .ops.demo_meshes import load_demo_or_mesh
    from .ops.uv import has_usable_uv, unwrap

    progress = progress or Progress("bar")
    model = _load(config.model, config.device)
    if model.config.domain == "2d":
        raise NCA3DError(f"'{config.model}' is a 2D model: it makes tileable maps, not mesh textures; "
                         f"use `nca3d maps --model {config.model}` or a mesh or volume model")
    if config.displace and "height" not in model.channel_slices():
        raise NCA3DError(f"'{config.model}' has no height output, so --displace has nothing to displace by; "
                         f"use a PBR model with a height map (see `nca3d models`) or drop --displace")
    progress.update("load", 0.0, f"reading {config.mesh}", force=True)
    mesh = load_demo_or_mesh(config.mesh)
    progress.update("load", 1.0, f"{len(mesh.vertices)} vertices, {len(mesh.faces)} faces", force=True)
    folder = _prepare_out(config.out)
    unwrapped = not has_usable_uv(mesh)
    if unwrapped:
        progress.update("unwrap", 0.0, "no usable UVs: unwrapping with xatlas", force=True)
        mesh = unwrap(mesh, resolution=config.size, padding=max(2, config.margin // 2))
        progress.update("unwrap", 1.0, "unwrapped", force=True)
    baker = MeshBaker(model, mesh, config, progress)

    def export(staging: Path, maps: MapSet, written: dict[str, Path]) -> dict:
        extra = _export(mesh, maps, written, staging, config, progress)
        return {"unwrapped": unwrapped, "lattice": baker.lattice_stats, **extra}

    return _bake_sequence(model, baker.lattice, baker.bake, config, folder, progress, export)


def _load(model: str, device: str):
    from .device import resolve_device
    from .io.model_file import load_model
    from .models import resolve_model

    return load_model(resolve_model(model), device=resolve_device(device))


def _bake_sequence(model, lattice, bake, config, folder: Path, progress: Progress, export) -> list[str]:
    """Grow, bake each frame, export; all files go through a staging folder moved into place at the end.

    bake(state, label) -> (MapSet, covered); export(staging, first maps, first files) -> extra record."""
    start = time.monotonic()
    staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=folder))
    try:
        generator = torch.Generator(device=model.device).manual_seed(config.seed)
        state = _grow(model, model.seed(lattice), lattice, config.steps, generator, progress)
        frames = config.frames or 1
        first = None
        for index in range(frames):
            label = f"frame {index + 1}/{frames}: " if config.frames else ""
            if index:
                state = _grow(model, state, lattice, config.every, generator, progress, label)
            maps, _ = bake(state, label)
            written = write_maps(maps, staging, config.name, index + 1 if config.frames else None, config.exr,
                                 getattr(config, "object_normals", False))
            first = first or (maps, written)
        progress.update("export", 0.0, "writing", force=True)
        extra = export(staging, *first)
        record = {"config": dataclasses.asdict(config), "model_domain": model.config.domain,
                  "model_provenance": {k: model.provenance.get(k) for k in ("exemplar", "license", "credit")},
                  "maps": sorted(first[1]), "seconds": round(time.monotonic() - start, 2), **extra}
        (staging / f"{config.name}.json").write_text(json.dumps(record, indent=2))
        files = []
        for path in sorted(staging.iterdir()):
            os.replace(path, folder / path.name)
            files.append(str(folder / path.name))
        progress.update("export", 1.0, "done", force=True)
        return files
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _grow(model, state, lattice, steps, generator, progress, label=""):
    from .volume import grow

    return grow(model, state, lattice, steps, generator, progress, label)


def _export(mesh, maps: MapSet, written: dict[str, Path], folder: Path, config: TextureConfig,
            progress: Progress | None = None) -> dict:
    """Write the .glb, .obj + .mtl, preview (and with --displace the displaced .glb and .obj);
    returns what NAME.json records about them."""
    from .io.export import write_glb, write_obj
    from .render.preview import render_pbr_preview

    material = {kind: path for kind, path in written.items() if kind in ("albedo", "normal", "orm")}
    # the .mtl has no slot for the height (nor the ORM or object-space normals): a --exr height is no PNG
    obj_maps = {k: v for k, v in written.items() if k not in ("orm", "normal_object", "height")}
    write_glb(folder / f"{config.name}.glb", mesh, material)
    write_obj(folder / f"{config.name}.obj", mesh, obj_maps)
    record = {}
    if config.displace:
        displaced, record["displacement"] = _displaced_mesh(mesh, maps, config)
        write_glb(folder / f"{config.name}_displaced.glb", displaced, material)
        write_obj(folder / f"{config.name}_displaced.obj", displaced, obj_maps)
        if progress is not None:
            info = record["displacement"]
            progress.update("export", 0.5, f"displaced by strength {info['strength']:.4g} "
                            f"({info['rule']}); {info['flipped_faces']} triangles flipped", force=True)
    if config.preview_size:
        arrays = _preview_arrays(maps)
        image = render_pbr_preview(mesh, arrays["albedo"], normal_object=_object_normals(arrays, maps),
                                   roughness=arrays.get("roughness"), ao=arrays.get("ao"),
                                   size=config.preview_size)
        write_png(folder / f"{config.name}_preview.png", image)
    return record


def _displaced_mesh(mesh, maps: MapSet, config: TextureConfig):
    """The mesh moved along its normals by the baked height (ops.displace); the strength used
    goes into `config.displace_strength` (so NAME.json's settings show it) and the record."""
    from .ops.bake import vertex_normals
    from .ops.displace import DEFAULT_FRACTION, MIDLEVEL, SAFE_FRACTION, default_strength, displace, flipped_faces

    height = maps.arrays["height"]
    height = height / 65535.0 if height.dtype == np.uint16 else np.clip(np.nan_to_num(height), 0.0, 1.0)  # as a PNG
    bounds = default_strength(mesh.vertices, mesh.faces, vertex_normals(mesh.vertices, mesh.faces))
    if config.displace_strength > 0:
        rule = "given"
    else:
        config.displace_strength = bounds["strength"]
        rule = (f"default: {DEFAULT_FRACTION:g} x the bounding-box diagonal" if bounds["strength"] == bounds["nominal"]
                else f"default: capped at {SAFE_FRACTION:g} x the no-flip bound")
    displaced, offsets = displace(mesh, height, config.displace_strength)
    record = {"strength": config.displace_strength, "midlevel": MIDLEVEL, "rule": rule,
              "nominal_strength": bounds["nominal"], "no_flip_strength": bounds["no_flip"] if math.isfinite(bounds["no_flip"]) else None,
              "max_offset": float(np.abs(offsets).max()),
              "flipped_faces": flipped_faces(mesh.vertices, displaced.vertices, mesh.faces)}
    return displaced, record


def _object_normals(arrays: dict, maps: MapSet) -> np.ndarray | None:
    if "normal_object" in arrays:
        return arrays["normal_object"] * 2.0 - 1.0
    return None


# --------------------------------------------------------------------------- tileable 2D maps


@dataclass
class MapsConfig:
    """Settings of one `nca3d maps` run; saved as NAME.json next to the maps."""

    model: str
    out: str
    name: str = ""  # output file stem (default: the model's name)
    size: int = 2048
    steps: int = 96
    seed: int = 0
    frames: int = 0
    every: int = 8
    normal_convention: str = "opengl"
    exr: bool = False
    preview_size: int = 512
    device: str = "auto"

    def __post_init__(self):
        self.name = self.name or Path(self.model).stem
        _check_common(self)


class GridBaker:
    """Decodes a 2D model's periodic grid at S x S texels: one lattice period, so the maps tile."""

    def __init__(self, model, config: MapsConfig, progress: Progress, rows: int = 64):
        self.model, self.config, self.progress = model, config, progress
        self.lattice = model.make_lattice()
        self.rows = rows

    @torch.no_grad()
    def bake(self, state: torch.Tensor, label: str = "") -> tuple[MapSet, np.ndarray]:
        size = self.config.size
        maps = MapSet(model_maps(self.model), size, self.config.exr)
        width, height = self.lattice.sizes_xyz[:2]
        x = (torch.arange(size, dtype=torch.float32) + 0.5) * (width / size)
        for top in range(0, size, self.rows):
            bottom = min(size, top + self.rows)
            y = (torch.arange(top, bottom, dtype=torch.float32) + 0.5) * (height / size)
            points = torch.stack(torch.broadcast_tensors(x[None, :], y[:, None]), dim=-1).reshape(-1, 2)
            values = self.model.decode(state, self.lattice, points)[0].float().cpu().numpy()
            index = np.arange(top * size, bottom * size)
            normals = decoded_normals(values[:, self.model.channel_slices()["normal"]]) \
                if "normal" in maps.arrays else None
            store_outputs(maps, self.model, values, index, normals, normals, self.config.normal_convention)
            self.progress.update("bake", bottom / size, f"{label}{size}x{size} texels")
        return maps, np.ones((size, size), bool)


def tileable_maps(config: MapsConfig, progress: Progress | None = None) -> list[str]:
    """Run `nca3d maps`: a seamless PBR map set from a 2D model; returns the written files."""
    progress = progress or Progress("bar")
    model = _load(config.model, config.device)
    if model.config.domain != "2d":
        raise NCA3DError(f"'{config.model}' is a {model.config.domain} model; `nca3d maps` needs a 2D model "
                         f"(use `nca3d texture MESH --model {config.model}` for meshes)")
    folder = _prepare_out(config.out)
    baker = GridBaker(model, config, progress)

    def export(staging: Path, maps: MapSet, written: dict[str, Path]) -> dict:
        if config.preview_size:
            from PIL import Image

            tile = Image.fromarray(maps.arrays["albedo"]).resize((config.preview_size // 2,) * 2, Image.BILINEAR)
            preview = np.tile(np.asarray(tile), (2, 2, 1))  # 2 x 2 copies: any seam would show
            write_png(staging / f"{config.name}_preview.png", preview)
        record = {"lattice": {"grid": list(baker.lattice.sizes_xyz)}}
        if "normal" in maps.arrays and "height" in maps.arrays:
            record["normal_height_agreement"] = _agreement(maps, config.normal_convention)
        return record

    return _bake_sequence(model, baker.lattice, baker.bake, config, folder, progress, export)


def _agreement(maps: MapSet, convention: str) -> dict:
    """How well a tileable map set's normal map agrees with its height (ops.pbr)."""
    from .ops.pbr import normal_height_agreement

    normal = maps.arrays["normal"].astype(np.float32) / 255.0
    if convention == "directx":
        normal[..., 1] = 1.0 - normal[..., 1]
    height = maps.arrays["height"]
    height = height / 65535.0 if height.dtype == np.uint16 else height
    return {key: round(value, 4) for key, value in normal_height_agreement(normal, height).items()}

