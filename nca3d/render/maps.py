"""The maps a grown model makes: the map set (albedo, normal, roughness, height, AO, ORM) and the
bakers that fill it, a mesh's texels (MeshBaker: UV raster, ray cast onto the cell lattice,
decode, tangent-space normals, seam dilation) or one period of a 2D model's grid (GridBaker),
with the settings of `nca3d texture` and `nca3d maps` they bake by.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..core.dense import decode_grid_chunks
from ..errors import NCA3DError
from ..jit import compiled
from ..progress import Progress

DEFAULT_CELLS = 40962  # volume models on a mesh: cells of the default 64-frequency icosphere
MIN_SIZE, MAX_SIZE = 16, 8192
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


def _quantise(values: np.ndarray, bits: int = 8, copy: bool = True) -> np.ndarray:
    """Values (...) in [0, 1] -> uint8 / uint16 (NaN: 0); copy=False: a float32 `values` is used as
    scratch space."""
    values = np.array(values, np.float32, copy=copy or None)
    np.fmax(values, 0.0, out=values)  # fmax and fmin drop NaN: NaN -> 0 (np.nan_to_num is 30x slower)
    np.fmin(values, 1.0, out=values)
    values *= (1 << bits) - 1
    return np.rint(values, out=values).astype(np.uint8 if bits == 8 else np.uint16)


def _level(value, levels):
    """One value's _quantise in a compiled loop: NaN -> 0, clamped to [0, 1], times `levels` (255
    or 65535, float32) and rounded half to even, in float32."""
    zero, one = np.float32(0.0), np.float32(1.0)
    return np.rint((min(max(value, zero), one) if value == value else zero) * levels)


def _put_quantised(view, index, values, levels):
    """view[index[t], c] = _quantise(values[t, c]) as one loop (compiled by nca3d.jit with _level).
    view (S*S, C) uint8 or uint16; values (T, C) float32, any strides."""
    for t in range(index.shape[0]):
        for c in range(view.shape[1]):
            view[index[t], c] = _level(values[t, c], levels)


def _store_normals(values, first, n, right, up, turn, index, directx, tangent_map, object_map, with_object):
    """MeshBaker's normals stage and their store as one loop (compiled by nca3d.jit): per texel the
    model normal decoded from values[:, first:first + 3] as decoded_normals does, turned into the
    tangent frame (turn) and, with_object, the object frame (n, right, up), encoded as
    encode_normals does (directx: green flipped) and quantised to 8 bits (_level) into the (S*S, 3)
    maps."""
    half, one, two, floor = np.float32(0.5), np.float32(1.0), np.float32(2.0), np.float32(1e-3)
    levels = np.float32(255.0)
    local = np.empty(3, np.float32)
    encoded = np.empty(3, np.float32)
    for t in range(index.shape[0]):
        x = values[t, first] * two - one
        y = values[t, first + 1] * two - one
        z = max(values[t, first + 2] * two - one, floor)
        length = max(np.sqrt(x * x + y * y + z * z), np.float32(1e-12))
        local[0], local[1], local[2] = x / length, y / length, z / length
        cos, sin, sign = turn[t, 0], turn[t, 1], turn[t, 2]
        encoded[0] = (cos * local[0] + sin * local[1]) * half + half
        encoded[1] = (sign * (cos * local[1] - sin * local[0])) * half + half
        encoded[2] = local[2] * half + half
        if directx:
            encoded[1] = one - encoded[1]
        for c in range(3):
            tangent_map[index[t], c] = _level(encoded[c], levels)
        if with_object:
            for c in range(3):
                value = (local[0] * right[t, c] + local[1] * up[t, c] + local[2] * n[t, c]) * half + half
                object_map[index[t], c] = _level(value, levels)


def _dot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise dot products (Q,) of (Q, 3) arrays."""
    return np.einsum("qd,qd->q", a, b)


def _unit(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.maximum(np.sqrt(_dot(vectors, vectors)), 1e-12)[:, None]


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

    def put(self, index: np.ndarray, columns: dict[str, np.ndarray]) -> None:
        """Scatter values {name: (T, C) or (T,)} in [0, 1] at flat texel index (T,); all 8-bit
        channels are quantised together, as one (channels, T) float32 block, then scattered one
        channel at a time (a plain 1D scatter: 3x faster than rows of 3 bytes). Where numba
        imports, one compiled loop per map quantises and scatters (`_put_quantised`); these numpy
        passes are its reference."""
        kernel = compiled(_put_quantised, helpers=(_level,))
        if kernel is not None:
            for name, values in columns.items():
                view, values = self._flat(name), np.reshape(values, (len(index), -1))
                if view.dtype == np.float32:
                    view[index] = values
                else:
                    kernel(view, index, values, np.float32(np.iinfo(view.dtype).max))
            return
        eight = [name for name in columns if self.arrays[name].dtype == np.uint8]
        values = [np.reshape(columns[name], (len(index), -1)) for name in eight]
        block = np.empty((sum(v.shape[1] for v in values), len(index)), np.float32)
        channels = np.cumsum([0] + [v.shape[1] for v in values])
        for start, v in zip(channels, values):
            block[start:start + v.shape[1]] = v.T
        block = _quantise(block, copy=False)
        for start, name in zip(channels, eight):
            view = self._flat(name)
            for k in range(view.shape[1]):
                view[:, k][index] = block[start + k]
        for name in columns.keys() - set(eight):
            view, values = self._flat(name), np.reshape(columns[name], (len(index), -1))
            view[index] = values if view.dtype == np.float32 else _quantise(values, 16)

    def _flat(self, name: str) -> np.ndarray:
        """The map as a (S*S, C) view."""
        array = self.arrays[name]
        return array.reshape(array.shape[0] * array.shape[1], -1)

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
    """Scatter decoded values (Q, K) into `maps` at flat texel `index`; normals come converted (the
    normal maps are left alone where they are None)."""
    slices = model.channel_slices()
    columns = {"albedo": values[:, slices["albedo"] if "albedo" in slices else slices["rgb"]]}
    columns.update({name: values[:, slices[name]] for name in ("roughness", "height", "ao") if name in maps.arrays})
    if "normal" in maps.arrays and normals_tangent is not None:
        columns["normal"] = encode_normals(normals_tangent, convention)
    if "normal_object" in maps.arrays and normals_object is not None:
        columns["normal_object"] = encode_normals(normals_object)
    maps.put(index, columns)


def default_cells(model) -> int:
    """Lattice cells over a mesh when neither --cells nor --scale is given.

    A mesh model gets the count (10 f^2 + 2) of the icosphere whose zoom-1 views show what its
    training views showed: its training frequency f, times its zoom where that is below 1 (the
    views were narrowed to fewer cells, train.scale.view_span). The texture then covers the mesh
    as the exemplar covered those views, whatever lattice and zoom the model was trained at."""
    if model.config.domain == "mesh":
        zoom = float((model.provenance.get("scale") or {}).get("zoom") or 1.0)
        return round(10 * (model.config.icosphere_frequency * min(1.0, zoom)) ** 2) + 2
    return DEFAULT_CELLS


def _spacing_for_cells(area: float, cells: int) -> float:
    """Edge length of an equilateral lattice with `cells` vertices over `area` (sqrt(3)/2 h^2 each)."""
    return math.sqrt(area / cells / (math.sqrt(3) / 2))


class MeshBaker:
    """Everything fixed across the frames of one bake: the mesh, its texels' frames, the lattice."""

    def __init__(self, model, mesh, config: TextureConfig, progress: Progress, keep_geometry: bool = False):
        from ..ops.bake import tangent_frames

        self.model, self.mesh, self.config, self.progress = model, mesh, config, progress
        frames = tangent_frames(mesh.vertices, mesh.faces, mesh.uv)
        self.frames = dataclasses.replace(frames, tangent=frames.tangent.astype(np.float32),
                                          normal=frames.normal.astype(np.float32))
        # per face and corner: position, normal, tangent (F, 3, 9), all a texel interpolates
        self._corners = np.concatenate([mesh.vertices, frames.normal, frames.tangent], 1).astype(np.float32)[mesh.faces]
        self._sign = frames.sign.astype(np.float32)
        area = float(np.linalg.norm(np.cross(mesh.vertices[mesh.faces[:, 1]] - mesh.vertices[mesh.faces[:, 0]],
                                             mesh.vertices[mesh.faces[:, 2]] - mesh.vertices[mesh.faces[:, 0]]),
                                    axis=1).sum() / 2)
        if not config.scale and not config.cells:
            config.cells = default_cells(model)  # resolved here: the saved settings show it
        self.spacing = config.scale or _spacing_for_cells(area, config.cells)
        self.lattice_stats: dict = {"spacing": self.spacing}
        self.timings: dict[str, float] = {}
        self._timings_lock = threading.Lock()
        self.texels = 0  # texels decoded (over all bakes)
        self.keep_geometry = keep_geometry or config.frames > 1
        self._located: list | None = None  # the located texel chunks, kept across bakes
        self._rasteriser = None  # the current bake's UV rasteriser (ops.bake.UVRasteriser)
        self.covered: np.ndarray | None = None  # (S, S) bool: texels inside the UV layout
        self._dilation: tuple | None = None  # (covered, margin, moves of ops.bake.dilation_moves)
        if model.config.domain == "mesh":
            from ..ops.remesh import uniform_lattice
            from .raycast import RayCaster

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
        back along its normal from one spacing outside: 10x faster than a closest-point query, and
        as texels come in raster order, most rays are tested against the faces their neighbours
        hit instead (RayCaster.cast_coherent). Rays that miss or land farther than half a spacing
        away (thin crevices) take the closest point instead."""
        if self.caster is None:
            return torch.from_numpy((positions / self.spacing).astype(np.float32))
        from ..lattices.mesh import SurfacePoints

        face, bary, t = self.caster.cast_coherent(positions + normals * self.spacing, -normals,
                                                  far=1.5 * self.spacing, near=0.5 * self.spacing)
        stray = (face < 0) | (t < 0.5 * self.spacing)
        if stray.any():
            face[stray], bary[stray], _ = self.caster.closest_points(positions[stray])
        return SurfacePoints(torch.from_numpy(face), torch.from_numpy(bary))

    def locate(self, face: np.ndarray, bary: np.ndarray, with_tangents: bool):
        """Texel points (face (T,), bary (T, 3)) -> positions (T, 3) and frame: (n,), or with tangents
        (n, right, up, turn); all float32. n: the unit normal; (right, up): the model's frame at n
        (`ops.bake.up_frames`); turn (T, 3) = (right . t, up . t, s) turns it into the texel's
        tangent frame (t, b = s n x t, n) of `ops.bake.texel_frames`: b . right = -s up . t and
        b . up = s right . t, as both frames are orthonormal around the same n. One compiled loop
        where numba imports (ops.bake.locate_texels); these numpy passes are its reference."""
        from ..ops.bake import locate_texels, orthonormal_to, up_frames

        compiled_frames = locate_texels(self._corners, self._sign, face, bary, with_tangents)
        if compiled_frames is not None:
            return compiled_frames
        corners = np.take(self._corners, face, axis=0)  # (T, 3, 9)
        point = np.einsum("tk,tkd->td", bary, corners if with_tangents else corners[..., :6])
        n = _unit(point[:, 3:6])
        if not with_tangents:
            return point[:, :3], (n,)
        t = orthonormal_to(point[:, 6:], n)
        right, up = up_frames(n)
        return point[:, :3], (n, right, up, np.stack([_dot(right, t), _dot(up, t), self._sign[face]], 1))

    def _chunk_work(self) -> list[tuple]:
        """The chunks of one bake in raster order, as (located chunk, None) kept from an earlier bake
        (`_locate_chunk`), or else (None, rows [top, bottom)) of a band whose texels
        `self._rasteriser` (set here) gives. Rasterising new bands, pass 1 runs here on all of
        them (on every thread: bands are independent), so the coverage and `self.covered` are
        known before the texels."""
        from ..core.threads import run_threads, shared_numbers, threads_for
        from ..ops.bake import UVRasteriser

        if self._located is not None:
            return [(chunk, None) for chunk in self._located]
        with self._clock("rasterise"):
            self._rasteriser = UVRasteriser(self.mesh.uv, self.mesh.faces, self.config.size, chunk=UVRasteriser.CHUNK)
            bands = self._rasteriser.bands()
            numbers, streams = shared_numbers(len(bands)), threads_for(len(bands))
            run_threads(lambda _: [self._rasteriser.score(*bands[number]) for number in numbers()], streams)
            self.covered = self._rasteriser.covered
        return [(None, rows) for rows in bands]

    def _locate_chunk(self, texels, with_tangents: bool) -> tuple:
        """Texels -> the located chunk (flat index (T,), query, frame of `locate`). It depends on the
        mesh only, so with `keep_geometry` the chunks are kept for the next bakes (animation frames,
        live views) while they fit in GEOMETRY_CACHE_BYTES (a 2K map does; larger maps recompute),
        and the coverage with them."""
        with self._clock("locate"):
            positions, frame = self.locate(texels.face, texels.bary, with_tangents)
        with self._clock("query"):  # the ray cast onto a mesh lattice
            return texels.index, self.query(positions, frame[0]), frame

    @torch.no_grad()
    def bake(self, state: torch.Tensor, label: str = "") -> tuple[MapSet, np.ndarray]:
        """Bake one frame -> (maps, covered (S, S) bool), seams dilated. Adds each part's
        thread-seconds to `self.timings` (rasterise, locate, query, decode, normals, store, dilate).

        The chunks (bands of rows) go through one stream per torch thread (core.threads), each
        taking the next chunk and doing all of its work, its texels to storing, the decode on one
        thread: the parts around the decode (numpy, Embree) then use every core too. The seam
        dilation's moves are the first piece of work (the coverage is known before the streams
        start), so one stream finds them while the other bakes. A bake of one chunk runs in one
        stream with the decode threaded."""
        from ..core.threads import run_threads, shared_numbers, threads_for
        from ..ops.bake import copy_moves, dilation_moves

        cfg = self.config
        names = model_maps(self.model, object_space=True)
        maps = MapSet(names, cfg.size, cfg.exr)
        with_tangents = "normal" in names
        work = self._chunk_work()
        chunks = len(work)
        if self._dilation is None or self._dilation[0] is not self.covered or self._dilation[1] != cfg.margin:
            work.insert(0, ("dilation", None))  # the moves need the coverage only: first, beside the chunks
        lock, stop, numbers, done = threading.Lock(), threading.Event(), shared_numbers(len(work)), []
        cache = {} if self.keep_geometry and self._located is None else None
        cached_bytes = 0

        def stream(_: int) -> None:
            nonlocal cache, cached_bytes
            for number in numbers():
                if stop.is_set():
                    return
                chunk, rows = work[number]
                if isinstance(chunk, str):  # the dilation's moves
                    with self._clock("dilate"):
                        self._dilation = (self.covered, cfg.margin, dilation_moves(self.covered, cfg.margin))
                    chunk = None
                elif chunk is None:
                    with self._clock("rasterise"):
                        texels = self._rasteriser.texels(*rows)
                    if len(texels.index):
                        chunk = self._locate_chunk(texels, with_tangents)
                        with lock:
                            cached_bytes += _chunk_bytes(chunk)
                            cache = cache if cache is not None and cached_bytes <= GEOMETRY_CACHE_BYTES else None
                            if cache is not None:
                                cache[number] = chunk
                if chunk is not None:
                    self._bake_chunk(state, chunk, maps, names)
                with lock:
                    self.texels += 0 if chunk is None else len(chunk[0])
                    done.append(number)
                    self.progress.update("bake", len(done) / len(work), f"{label}{cfg.size}x{cfg.size} texels")

        run_threads(stream, threads_for(chunks), stop=stop)
        if cache is not None:
            self._located = [cache[number] for number in sorted(cache)]
        with self._clock("dilate"):  # the moves are kept while the coverage is (cached geometry: later frames)
            arrays, copies = list(maps.arrays.values()), threads_for(chunks)
            run_threads(lambda part: copy_moves(arrays, self._dilation[2], part, copies), copies)
        return maps, self.covered

    def _bake_chunk(self, state: torch.Tensor, chunk: tuple, maps: MapSet, names: list[str]) -> None:
        """Decode one located chunk, turn its normals and store its texels into `maps`."""
        index, query, frame = chunk
        with self._clock("decode"):
            values = self.model.decode(state, self.lattice, query)[0].float().cpu().numpy()
        tangent_normals = object_normals = None
        kernel = compiled(_store_normals, helpers=(_level,)) if "normal" in names else None
        if kernel is not None:  # turned, encoded, quantised and stored in one loop
            with self._clock("normals"):
                n, right, up, turn = frame
                flat = {name: maps.arrays[name].reshape(-1, 3) for name in ("normal", "normal_object")
                        if name in maps.arrays}
                kernel(values, self.model.channel_slices()["normal"].start, n, right, up, turn, index,
                       self.config.normal_convention == "directx", flat["normal"],
                       flat.get("normal_object", flat["normal"]), "normal_object" in flat)
        elif "normal" in names:
            with self._clock("normals"):
                n, right, up, turn = frame
                local = decoded_normals(values[:, self.model.channel_slices()["normal"]])
                object_normals = local[:, :1] * right + local[:, 1:2] * up + local[:, 2:] * n
                cos, sin, sign = turn[:, :1], turn[:, 1:2], turn[:, 2:]
                tangent_normals = np.concatenate([cos * local[:, :1] + sin * local[:, 1:2],
                                                  sign * (cos * local[:, 1:2] - sin * local[:, :1]),
                                                  local[:, 2:]], 1)
        with self._clock("store"):
            store_outputs(maps, self.model, values, index, object_normals, tangent_normals,
                          self.config.normal_convention)

    @contextlib.contextmanager
    def _clock(self, part: str):
        """Adds the block's seconds to self.timings[part] (from any thread)."""
        start = time.perf_counter()
        try:
            yield
        finally:
            with self._timings_lock:
                self.timings[part] = self.timings.get(part, 0.0) + time.perf_counter() - start


def _chunk_bytes(chunk: tuple) -> int:
    """Memory held by a located chunk: its index, frame and query (cell coordinates or SurfacePoints)."""
    index, query, frame = chunk
    held = query.nbytes if isinstance(query, torch.Tensor) else query.face.nbytes + query.bary.nbytes
    return index.nbytes + sum(a.nbytes for a in frame) + held


class GridBaker:
    """Decodes a 2D model's periodic grid at S x S texels: one lattice period, so the maps tile.
    The decode is core.dense's dense-grid decode (method "generic": the reference locate + decode)."""

    def __init__(self, model, config: MapsConfig, progress: Progress, method: str = "separable"):
        self.model, self.config, self.progress, self.method = model, config, progress, method
        self.lattice = model.make_lattice()

    def bake(self, state: torch.Tensor, label: str = "") -> tuple[MapSet, np.ndarray]:
        """Bake one frame of state[0] -> (maps, covered (S, S) bool: all of it); texel row r, column
        c is cell point ((c + 0.5) W / S, (r + 0.5) H / S)."""
        size = self.config.size
        maps = MapSet(model_maps(self.model), size, self.config.exr)
        normal = self.model.channel_slices().get("normal")
        for start, stop, values in decode_grid_chunks(self.model, state, self.lattice, (size, size),
                                                      method=self.method):
            values = values.float().cpu().numpy()
            normals = decoded_normals(values[:, normal]) if "normal" in maps.arrays else None
            store_outputs(maps, self.model, values, np.arange(start, stop), normals, normals,
                          self.config.normal_convention)
            self.progress.update("bake", stop / size ** 2, f"{label}{size}x{size} texels")
        return maps, np.ones((size, size), bool)
