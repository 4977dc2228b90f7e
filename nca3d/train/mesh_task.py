"""Mesh supervision: the icosphere seen through cached ray-cast views.

A view looks from the sphere's centre outward, so every pixel hits the surface. Its pixels
store the face id and barycentrics of their hit; the LPPN is evaluated per pixel from those,
so no differentiable rasteriser is needed.

Views.
- `views` centres on a Fibonacci sphere (even coverage; poles on the y axis).
- Image up is world +y projected onto the view plane, so oriented exemplars keep one
  direction everywhere except near the poles, where no tangent field can be consistent.
- Image right is up x forward: the view is not mirrored, i.e. it shows the surface as seen
  from outside, as on a rendered object.

Projection: azimuthal equidistant about the view centre (pixel offsets are arc lengths).
A full view spans about 64 degrees. Over that window:
- a gnomonic (tangent-plane) image would magnify the surface 1.8x radially at the corners;
- the equidistant image has radial scale exactly 1 and tangential scale
  sin(rho)/rho >= 0.90 at the corners.
So the texture scale stays uniform across the crop. `projection="gnomonic"` remains available.

Window size: a full view covers as many cells as a 2D training lattice of `view_cells` x
`view_cells` cells (64 by default). The cell spacing is the root of the sphere's area per
vertex, sqrt(4 pi / N): 0.01752 rad at frequency 64 (mean edge length 0.0188). The window
side is therefore view_cells * sqrt(4 pi / N), or 1.121 rad (64.2 degrees) at frequency 64
and view_cells 64. The 120 default views then cover the sphere about 12 times.

Cache. Each view is cast once at the finest resolution needed, R = patch * max(scales)
(384 for patch 96).
- Stored per pixel: face as int32, and barycentric (u, v) quantised to uint16, 1/65535 steps.
  w0 = 1 - u - v. The position error is below 1e-6 of a cell.
- The file is an uncompressed .npz (allow_pickle=False), 8 bytes a pixel: 142 MB for 120
  views at 384^2.
- It lives under `cache_dir`, which defaults to $NCA3D_CACHE/raycast, then
  $XDG_CACHE_HOME/nca3d/raycast, then ~/.cache/nca3d/raycast.
- Its name hashes everything its content depends on. Writes are atomic.

Crops at scale s are windows of side R/s fine pixels: a random view, at a random integer
offset. They are sampled at patch x patch by nearest pixel (the step is max(scales)/s fine
pixels). The finest scale is therefore exact. The others are offset by at most half a fine
pixel.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import zipfile
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..core.model import Model
from ..io.atomic import atomic_path
from ..lattices import MeshLattice, SurfacePoints, icosphere
from .losses import crop_count
from .tasks import pooled_crops, samples_per_px

CACHE_VERSION = 1  # bump when the view geometry or the file layout changes
PROJECTIONS = ("equidistant", "gnomonic")
UV_SCALE = 65535.0


def default_cache_dir() -> Path:
    """$NCA3D_CACHE/raycast, else $XDG_CACHE_HOME/nca3d/raycast, else ~/.cache/nca3d/raycast."""
    if os.environ.get("NCA3D_CACHE"):
        return Path(os.environ["NCA3D_CACHE"]).expanduser() / "raycast"
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "nca3d" / "raycast"


def fibonacci_sphere(count: int) -> np.ndarray:
    """`count` nearly evenly spread unit vectors (count, 3); rings stacked along y."""
    i = np.arange(count, dtype=np.float64) + 0.5
    y = 1.0 - 2.0 * i / count
    r = np.sqrt(np.clip(1.0 - y * y, 0.0, None))
    phi = i * math.pi * (3.0 - math.sqrt(5.0))
    return np.stack([r * np.cos(phi), y, r * np.sin(phi)], axis=1)


def view_frames(centres: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Image (right, up) unit vectors (V, 3) for views from the origin towards `centres`.

    Up is world +y projected onto the view plane (+z at the poles). Right = up x forward, so
    the image is the surface as seen from outside (not mirrored).
    """
    world_up = np.broadcast_to(np.array([0.0, 1.0, 0.0]), centres.shape).copy()
    polar = np.abs(centres[:, 1]) > 1.0 - 1e-9
    world_up[polar] = (0.0, 0.0, 1.0)
    up = world_up - np.sum(world_up * centres, axis=1, keepdims=True) * centres
    up /= np.linalg.norm(up, axis=1, keepdims=True)
    right = np.cross(up, centres)
    return right, up


def view_directions(centre, right, up, window: float, resolution: int,
                    projection: str = "equidistant") -> np.ndarray:
    """Unit ray directions (R*R, 3), image row order, of one view spanning `window` radians a side."""
    coords = ((np.arange(resolution) + 0.5) / resolution - 0.5) * window  # arc offsets, centre 0
    y, x = np.meshgrid(-coords, coords, indexing="ij")  # row 0 at the top (up)
    x, y = x.reshape(-1, 1), y.reshape(-1, 1)
    if projection == "equidistant":
        rho = np.sqrt(x * x + y * y)
        sinc = np.where(rho > 0, np.sin(rho) / np.where(rho > 0, rho, 1.0), 1.0)
        directions = np.cos(rho) * centre + sinc * (x * right + y * up)
    else:  # gnomonic: uniform in the tangent plane, the window's axes span `window` radians
        scale = math.tan(window / 2.0) / (window / 2.0)
        directions = centre + scale * (x * right + y * up)
    return directions / np.linalg.norm(directions, axis=1, keepdims=True)


def build_view_cache(vertices, faces, centres, rights, ups, window: float, resolution: int,
                     projection: str = "equidistant") -> tuple[np.ndarray, np.ndarray]:
    """Cast every view from the origin: face (V, R, R) int32 and uv (V, R, R, 2) uint16."""
    from ..render.raycast import RayCaster

    caster = RayCaster(vertices, faces)
    count = len(centres)
    face = np.empty((count, resolution, resolution), np.int32)
    uv = np.empty((count, resolution, resolution, 2), np.uint16)
    origins = np.zeros((resolution * resolution, 3), np.float32)
    for v in range(count):
        directions = view_directions(centres[v], rights[v], ups[v], window, resolution, projection)
        hit_face, bary, _ = caster.cast(origins, directions)
        for attempt in range(1, 4):  # a ray through an edge or corner may slip through: nudge it
            miss = hit_face < 0
            if not miss.any():
                break
            nudged = directions[miss] + np.random.default_rng(attempt).normal(0.0, 1e-6, (int(miss.sum()), 3))
            hit_face[miss], bary[miss], _ = caster.cast(origins[: len(nudged)], nudged)
        if (hit_face < 0).any():
            raise RuntimeError(f"view {v}: {(hit_face < 0).sum()} rays from the centre missed the mesh; "
                               f"is it closed around the origin?")
        face[v] = hit_face.reshape(resolution, resolution)
        uv[v] = np.rint(bary[:, 1:] * UV_SCALE).astype(np.uint16).reshape(resolution, resolution, 2)
    return face, uv


def _pixel_rays(patch: int, rays_per_px: float, side: int) -> np.ndarray:
    """Offsets (patch * side,) of the cached rays a crop's px sample along one axis, px by px: `side`
    evenly spread over each px's `rays_per_px` (side 1: the ray at its centre)."""
    within = (np.arange(side) + 0.5) * (rays_per_px / side)
    return np.floor(np.arange(patch)[:, None] * rays_per_px + within[None, :]).astype(np.int64).reshape(-1)


class MeshTask:
    """Mesh textures trained on the icosphere: crops of cached ray-cast views from its centre."""

    def __init__(self, frequency: int = 64, patch: int = 96, scales=(1, 2, 4), views: int = 120,
                 cache_dir=None, coord: str = "sorted_cdf", view_cells: float = 64.0,
                 projection: str = "equidistant", supersample: int = 1):
        scales = tuple(int(s) for s in scales)
        if patch < 1 or views < 1 or not scales or min(scales) < 1 or view_cells <= 0 or supersample < 1:
            raise ValueError("MeshTask needs patch >= 1, views >= 1, scales >= 1, view_cells > 0 and supersample >= 1")
        if projection not in PROJECTIONS:
            raise ValueError(f"projection must be one of {PROJECTIONS}, got '{projection}'")
        vertices, faces = icosphere(frequency)
        self.lattice = MeshLattice(vertices, faces, coord)
        self._mesh = (vertices, faces)  # float64 geometry for the ray caster
        self.frequency, self.patch, self.scales, self.views = frequency, patch, scales, views
        self.projection = projection
        self.spacing = math.sqrt(4.0 * math.pi / len(vertices))  # radians per cell
        self.window = view_cells * self.spacing  # a full view's side, radians
        if self.window >= math.pi * (0.9 if projection == "equidistant" else 0.5):
            raise ValueError(f"view window {math.degrees(self.window):.0f} degrees is too wide; "
                             f"lower view_cells or raise the frequency")
        self.resolution = patch * max(scales)
        self.centres = fibonacci_sphere(views)
        self.rights, self.ups = view_frames(self.centres)
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
        self.cache_path = self.cache_dir / f"icosphere{frequency}-{self.cache_key()[:20]}.npz"
        self.face, self.uv = self._load_or_build()
        # A crop of scale s spans resolution / s cached rays a side, resolution / (s * patch) per px:
        # each px averages `rays_per_px[s]` of them a side (the bench's views: as many as `supersample`
        # asks and the cache holds, so a px shows the mean of finer detail, as an antialiased
        # reference does), else takes the ray at its centre (training: supersample 1)
        self.rays_per_px = samples_per_px(scales, supersample)  # resolution // (s * patch) = max(scales) // s
        self._offsets = {s: _pixel_rays(patch, self.resolution / (s * patch), self.rays_per_px[s]) for s in scales}
        self._preview: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}

    # --- cache -------------------------------------------------------------------------------
    def cache_meta(self) -> dict:
        """Everything the cached views depend on."""
        return {"version": CACHE_VERSION, "lattice": "icosphere", "frequency": self.frequency,
                "views": self.views, "resolution": self.resolution, "window": round(self.window, 12),
                "projection": self.projection, "centres": "fibonacci", "up": "+y"}

    def cache_key(self) -> str:
        return hashlib.sha256(json.dumps(self.cache_meta(), sort_keys=True).encode()).hexdigest()

    def _load_or_build(self) -> tuple[np.ndarray, np.ndarray]:
        loaded = self._load()
        if loaded is not None:
            return loaded
        face, uv = build_view_cache(*self._mesh, self.centres, self.rights, self.ups, self.window,
                                    self.resolution, self.projection)
        meta = np.array(json.dumps(self.cache_meta(), sort_keys=True))
        with atomic_path(self.cache_path) as tmp, open(tmp, "wb") as handle:
            np.savez(handle, face=face, uv=uv, meta=meta)
        return face, uv

    def _load(self) -> tuple[np.ndarray, np.ndarray] | None:
        """The cached views, or None when the file is missing, unreadable or for other settings."""
        if not self.cache_path.exists():
            return None
        r, v = self.resolution, self.views
        try:
            with np.load(self.cache_path, allow_pickle=False) as data:
                if json.loads(str(data["meta"])) != self.cache_meta():
                    return None
                face, uv = data["face"], data["uv"]
        except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError):
            return None
        if face.shape != (v, r, r) or face.dtype != np.int32 or uv.shape != (v, r, r, 2) or uv.dtype != np.uint16:
            return None
        if face.min() < 0 or face.max() >= len(self._mesh[1]):
            return None
        return face, uv

    # --- supervision -------------------------------------------------------------------------
    def to(self, device) -> MeshTask:
        """Move the lattice (the cache stays in host memory; crops are gathered there)."""
        self.lattice.to(device)
        return self

    def crop_plan(self, generator: torch.Generator) -> list[tuple[int, int, int, int]]:
        """(scale, view, row, col) of each crop: for each scale s, crop_count(s) crops; one draw per iteration."""
        count = sum(map(crop_count, self.scales))
        draws = torch.rand((count, 3), generator=generator, device=generator.device).cpu().double().numpy()
        plan, index = [], 0
        for scale in self.scales:
            span = self.resolution - math.ceil(self.resolution / scale) + 1  # integer offsets that fit
            for _ in range(crop_count(scale)):
                view, row, col = draws[index] * (self.views, span, span)
                plan.append((scale, min(int(view), self.views - 1), min(int(row), span - 1), min(int(col), span - 1)))
                index += 1
        return plan

    def crop_points(self, plan) -> SurfacePoints:
        """Face ids and barycentrics of the crops' rays, crop by crop: (patch * n)^2 each, n =
        rays_per_px of its scale (1: its pixels), in row, column order."""
        r = self.resolution
        index = np.concatenate([(view * r * r + (row + self._offsets[scale])[:, None] * r
                                 + (col + self._offsets[scale])[None, :]).reshape(-1)
                                for scale, view, row, col in plan])
        face = np.take(self.face.reshape(-1), index).astype(np.int64)
        uv = np.take(self.uv.reshape(-1, 2), index, axis=0).astype(np.float32) * np.float32(1.0 / UV_SCALE)
        bary = np.empty((len(index), 3), np.float32)
        bary[:, 1:] = uv
        bary[:, 0] = 1.0 - uv[:, 0] - uv[:, 1]
        np.clip(bary[:, 0], 0.0, None, out=bary[:, 0])  # u + v may exceed 1 by half a quantum
        bary /= bary.sum(axis=1, keepdims=True)
        return SurfacePoints(torch.from_numpy(face), torch.from_numpy(bary))

    def render(self, model: Model, state: Tensor, generator: torch.Generator) -> list[Tensor]:
        """For each scale s, crop_count(s) crops (B, K, patch, patch) of random views, decoded by the
        LPPN (each px the mean of its rays_per_px^2 rays)."""
        plan = self.crop_plan(generator)
        values = model.decode(state, self.lattice, self.crop_points(plan).to(state.device))  # (B, rays, K)
        return pooled_crops(values, [self.rays_per_px[scale] for scale, *_ in plan], self.patch)

    # --- previews ----------------------------------------------------------------------------
    def _preview_hits(self, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if size not in self._preview:
            from ..render.raycast import RayCaster, pinhole_rays

            caster = RayCaster(*self._mesh)
            origins, directions = pinhole_rays((1.2, 1.1, 2.5), (0.0, 0.0, 0.0), (0.0, 1.0, 0.0), 45.0, size, size)
            face, bary, _ = caster.cast(origins, directions)
            self._preview[size] = (face >= 0, face, bary)
        return self._preview[size]

    @torch.no_grad()
    def preview(self, model: Model, state: Tensor, size: int = 256) -> np.ndarray:
        """A pinhole image of the sphere with state[0]'s texture, background 0.5: (size, size, K)."""
        hit, face, bary = self._preview_hits(size)
        query = SurfacePoints(torch.from_numpy(face[hit]), torch.from_numpy(bary[hit])).to(state.device)
        values = model.decode(state[:1], self.lattice, query)[0].float().cpu().numpy()
        image = np.full((size * size, values.shape[-1]), 0.5, np.float32)
        image[hit] = values
        return image.reshape(size, size, -1)
