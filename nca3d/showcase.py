"""`nca3d render` and `nca3d view`: show a model with pyvista (VTK), and measure how it heals.

render: grow the model and draw it offscreen —
* mesh models: grown on a demo mesh (default rock; --mesh NAME|PATH), baked with the texture
  pipeline (MeshBaker) and shown with a PBR material (albedo, ORM = ao/roughness/metallic, and
  the tangent-space normal map when the model has one) under a key/fill/rim light rig and a
  sky-gradient environment, from a 3/4 view;
* volume models: a volume render of the decoded density and colour (direct RGBA mapping, opacity
  from the density as extinction), or with --mesh a solid texture on that mesh;
* 2D models: a 2 x 2 tiling of the baked maps on a plane seen from above (a seam would show);
  lit through the normal and roughness maps when the model has them, unlit albedo otherwise.
--turntable N renders N frames around the vertical axis: OUT.gif is one animated GIF (written
with Pillow), OUT.png becomes OUT.0001.png ... OUT.NNNN.png.

damage (`render --damage`): grow, erase a ball of cells (reset to the all-zero seed state)
mid-rollout, keep running, and compare the damaged region with the same region of an undamaged
rollout that draws the same random updates (see damage_experiment). Writes the panel
before damage | just after | healed.

view: an interactive window where the NCA keeps running (a timer: a few steps per tick, then the
texture or volume is decoded again); keys: d = damage, r = restart from the seed, space = pause.

Images are rendered at SUPERSAMPLE x the size and box-filtered down. Every file is written
under a temporary name and renamed when complete; frames appear all together or not at all.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .errors import NCA3DError, require
from .progress import Progress

DEFAULT_MESH = "rock"
RENDER_MAP_SIZE = 1024
VIEW_MAP_SIZE = 512
RENDER_VOLUME_RES = 128
VIEW_VOLUME_RES = 64
SUPERSAMPLE = 2
AZIMUTH_DEG, ELEVATION_DEG, FOV_DEG = 35.0, 25.0, 30.0
MARGIN = 1.12  # the bounding sphere fills 1 / MARGIN of the frame
GIF_FRAME_MS = 80
DEFAULT_ROUGHNESS = 0.6
BACKGROUND = ("#1d2026", "#59616e")  # bottom, top of the gradient
# Direct RGBA volumes: VTK (9.7, GPU and fixed-point mappers) reads alpha as the opacity over one
# world unit whatever the scalar opacity unit distance says (measured: a constant volume's
# transmittance follows exp(-sigma * path) with alpha = 1 - exp(-sigma) at 32^3 and 64^3 alike).
VOLUME_UNIT = 1.0
DAMAGE_RADIUS = 0.2
MIN_SIZE, MAX_SIZE = 16, 4096


# --------------------------------------------------------------------------- settings


@dataclass
class RenderConfig:
    """Settings of one `nca3d render` run."""

    model: str
    out: str
    mesh: str = ""  # demo mesh name or mesh path; "" = rock for mesh models, a volume render for volumes
    size: int = 512
    steps: int = 96
    seed: int = 0
    turntable: int = 0  # > 0: N frames around the vertical axis
    damage: bool = False
    heal_steps: int = 0  # steps after the damage (0: as many as --steps)
    map_size: int = RENDER_MAP_SIZE
    cells: int = 0  # lattice cells over a mesh (0: the texture pipeline's default)
    volume_res: int = RENDER_VOLUME_RES
    device: str = "auto"

    def __post_init__(self):
        if not MIN_SIZE <= self.size <= MAX_SIZE:
            raise NCA3DError(f"--size {self.size} is out of range; use {MIN_SIZE} to {MAX_SIZE} pixels")
        if self.steps < 0 or self.turntable < 0 or self.heal_steps < 0 or self.cells < 0:
            raise NCA3DError("--steps, --heal-steps, --turntable and --cells must be >= 0")
        if not 16 <= self.map_size <= 8192 or not 8 <= self.volume_res <= 512:
            raise NCA3DError("--map-size must be 16 to 8192 and --volume-res 8 to 512")
        if self.damage and self.turntable:
            raise NCA3DError("give --damage or --turntable, not both")
        suffix = Path(self.out).suffix.lower()
        if suffix not in (".png", ".gif") or (suffix == ".gif" and not self.turntable):
            raise NCA3DError(f"--out '{self.out}' must end in .png (or .gif with --turntable N)")


@dataclass
class ViewConfig:
    """Settings of one `nca3d view` window."""

    model: str
    mesh: str = ""
    steps: int = 0  # grown before the window opens (0: watch it grow from the seed)
    speed: int = 2  # NCA steps per timer tick
    interval_ms: int = 100
    seed: int = 0
    size: int = 800
    map_size: int = VIEW_MAP_SIZE
    cells: int = 0
    volume_res: int = VIEW_VOLUME_RES
    device: str = "auto"

    def __post_init__(self):
        if self.steps < 0 or self.speed < 1 or self.interval_ms < 1 or self.cells < 0:
            raise NCA3DError("need --steps >= 0, --speed >= 1 and --cells >= 0")
        if not 64 <= self.size <= 4096 or not 16 <= self.map_size <= 8192 or not 8 <= self.volume_res <= 512:
            raise NCA3DError("--map-size must be 16 to 8192 and --volume-res 8 to 512")


# --------------------------------------------------------------------------- helpers


def load_showcase_model(name: str, device: str = "auto"):
    """A model from a library name or path, in eval mode on the resolved device."""
    from .device import resolve_device
    from .io.model_file import load_model
    from .models import resolve_model

    return load_model(resolve_model(name), device=resolve_device(device)).eval()


def colour_slice(model) -> slice:
    """The model's colour output: albedo (PBR) or rgb."""
    slices = model.channel_slices()
    return slices["albedo"] if "albedo" in slices else slices["rgb"]


def _pyvista():
    return require("pyvista", "render", "Rendering with pyvista")


@contextlib.contextmanager
def _quiet_vtk():
    """Hide VTK's warning when it falls back from X11 to EGL/OSMesa on a machine without a display."""
    try:
        from vtkmodules.vtkCommonCore import vtkLogger
    except ImportError:  # pragma: no cover - pyvista always brings vtk
        yield
        return
    previous = vtkLogger.GetCurrentVerbosityCutoff()
    vtkLogger.SetStderrVerbosity(vtkLogger.VERBOSITY_ERROR)
    try:
        yield
    finally:
        vtkLogger.SetStderrVerbosity(previous)


def new_plotter(size: int, off_screen: bool = True, supersample: int = SUPERSAMPLE):
    """A pyvista Plotter with our background and no default lights."""
    pv = _pyvista()
    with _quiet_vtk():
        plotter = pv.Plotter(off_screen=off_screen, window_size=(size * supersample,) * 2, lighting="none")
    plotter.set_background(BACKGROUND[0], top=BACKGROUND[1])
    return plotter


def _texture(array: np.ndarray, srgb: bool = False, repeat: bool = False):
    pv = _pyvista()
    texture = pv.Texture(np.ascontiguousarray(array))
    texture.interpolate = True
    texture.mipmap = True
    texture.repeat = repeat
    if srgb:
        texture.UseSRGBColorSpaceOn()
    return texture


def _sky_texture():
    """A small equirectangular sky-over-ground gradient: soft image-based light for PBR."""
    height, width = 32, 64
    y = np.linspace(1.0, -1.0, height)[:, None]
    sky = np.array([0.62, 0.68, 0.78]) * (0.55 + 0.45 * np.clip(y, 0, 1)) + 0.12
    ground = np.array([0.28, 0.25, 0.22]) * (1.0 + 0.5 * np.clip(y, -1, 0))
    image = np.where(y[..., None] > 0, sky[:, None, :], ground[:, None, :])
    image = np.broadcast_to(image, (height, width, 3))
    return _texture((np.clip(image, 0, 1) * 255).astype(np.uint8))


def add_lights(plotter, environment: bool = True) -> None:
    """Key (warm, upper left), fill (cool, right) and rim (behind) lights that move with the camera
    (so a turntable turns the object under fixed lighting), plus the sky environment."""
    pv = _pyvista()
    # camera-light positions: x right, y up, z towards the viewer (the camera sits at z = 1)
    for position, colour, intensity in (((-1.0, 1.1, 1.2), (1.0, 0.95, 0.88), 1.6),
                                        ((1.4, 0.1, 0.7), (0.75, 0.82, 1.0), 0.45),
                                        ((0.3, 1.0, -1.2), (1.0, 1.0, 1.0), 0.7)):
        plotter.add_light(pv.Light(position=position, focal_point=(0, 0, 0), color=colour, intensity=intensity,
                                   light_type="camera light"))
    if environment:
        with _quiet_vtk():
            plotter.set_environment_texture(_sky_texture(), is_srgb=True, show_background=False)


def orbit_camera(plotter, centre, radius: float, azimuth: float = AZIMUTH_DEG, elevation: float = ELEVATION_DEG
                 ) -> None:
    """Look at a bounding sphere (centre, radius) from azimuth/elevation degrees, Y up."""
    a, e = math.radians(azimuth), math.radians(elevation)
    distance = radius * MARGIN / math.sin(math.radians(FOV_DEG) / 2)
    offset = (math.cos(e) * math.sin(a), math.sin(e), math.cos(e) * math.cos(a))
    camera = plotter.camera
    camera.parallel_projection = False
    camera.focal_point = tuple(np.asarray(centre, float))
    camera.position = tuple(np.asarray(centre, float) + distance * np.asarray(offset))
    camera.up = (0.0, 1.0, 0.0)
    camera.view_angle = FOV_DEG
    camera.clipping_range = (max(distance - 2 * radius, 1e-3), distance + 2 * radius)


def screenshot(plotter, size: int) -> np.ndarray:
    """The current image (size, size, 3) uint8, box-filtered down from the supersampled window."""
    from PIL import Image

    with _quiet_vtk():
        plotter.render()  # after the first image, screenshot alone would grab the old frame again
        image = plotter.screenshot(None, return_img=True)
    image = Image.fromarray(np.ascontiguousarray(image[..., :3]))
    if image.width != size:
        factor = image.width // size
        image = image.reduce(factor) if factor * size == image.width else image.resize((size, size), Image.BOX)
    return np.asarray(image)


def _polydata(vertices, faces, uv, normals, tangents):
    """A pyvista PolyData with UVs, point normals and point tangents (for the normal map)."""
    pv = _pyvista()
    cells = np.hstack([np.full((len(faces), 1), 3), faces]).astype(np.int64).ravel()
    poly = pv.PolyData(np.asarray(vertices, np.float32), cells)
    poly.active_texture_coordinates = np.asarray(uv, np.float32)
    poly.point_data["Normals"] = np.asarray(normals, np.float32)
    poly.point_data.active_normals_name = "Normals"
    poly.point_data["Tangents"] = np.asarray(tangents, np.float32)
    poly.GetPointData().SetTangents(poly.GetPointData().GetArray("Tangents"))
    poly.set_active_scalars(None)
    return poly


def display_tangents(frames, faces: np.ndarray) -> np.ndarray:
    """Per-vertex tangents for VTK's normal mapping, which takes the bitangent as N x T with no
    handedness: on mirrored UV islands (xatlas makes many) the tangent is negated so that N x T
    is the bake's bitangent; the normal map's red channel is flipped there to match (see
    mirrored_texels)."""
    sign = np.ones(len(frames.tangent))
    sign[faces[frames.sign < 0].ravel()] = -1.0
    return frames.tangent * sign[:, None]


def mirrored_texels(mesh, faces_sign: np.ndarray, size: int, margin: int) -> np.ndarray | None:
    """(S, S) bool: texels of mirrored UV faces (seam margins dilated like the bake); None if none."""
    from .ops.bake import UVRasteriser, dilate

    mirrored = faces_sign < 0
    if not mirrored.any():
        return None
    rasteriser = UVRasteriser(mesh.uv, mesh.faces, size)
    mask = np.zeros(size * size, np.uint8)
    for texels in rasteriser:
        mask[texels.index] = mirrored[texels.face]
    mask = mask.reshape(size, size)
    dilate([mask], rasteriser.covered, margin)
    return mask.astype(bool)


# --------------------------------------------------------------------------- damage on any lattice


def cell_positions(lattice) -> torch.Tensor:
    """Cell positions (N, d) in the lattice's own units (grid cells x first, or mesh vertices)."""
    if lattice.kind == "mesh":
        return lattice.vertices.float()
    axes = [torch.arange(n, dtype=torch.float32) for n in lattice.cell_shape]
    grid = torch.meshgrid(*axes, indexing="ij")  # array order (..., y, x)
    return torch.stack([g.reshape(-1) for g in grid[::-1]], dim=-1)  # (N, d) with x first


def erase_ball(state: torch.Tensor, lattice, centre, radius: float) -> torch.Tensor:
    """Reset cells within `radius` of `centre` (lattice units) to the seed state (zeros).
    Returns the mask (N,) bool of the erased cells; `state` (B, *cells, C) is changed in place."""
    positions = cell_positions(lattice).to(state.device)
    mask = (positions - torch.as_tensor(centre, dtype=torch.float32, device=state.device)).norm(dim=-1) <= radius
    with torch.inference_mode():  # rollouts return inference tensors
        state.view(state.shape[0], -1, state.shape[-1])[:, mask] = 0.0
    return mask


class _Probe:
    """Where a damage experiment erases cells and how it looks at them (one subclass per lattice
    kind). Subclasses set centre, radius (lattice units), crop_half, view_half and the intact
    comparison place `other`, and implement _picture."""

    def __init__(self, model, radius: float, pixels: int, crop_pixels: int):
        self.model, self.pixels, self.crop_pixels = model, pixels, crop_pixels
        self.lattice = model.make_lattice()
        self.colour = colour_slice(model)
        self.setup(radius)

    def setup(self, radius: float) -> None:
        raise NotImplementedError

    def _picture(self, state, where, half, n: int) -> torch.Tensor:
        """(n, n, 3) colours of the square of half-width `half` around `where`."""
        raise NotImplementedError

    def crop(self, state, other: bool = False) -> torch.Tensor:
        """(3, n, n) the square inscribed in the erased region (other: the same square elsewhere)."""
        where = self.other if other else self.centre
        return self._picture(state, where, self.radius / math.sqrt(2), self.crop_pixels).permute(2, 0, 1)

    def view(self, state) -> np.ndarray:
        """(n, n, 3) a wider picture around the region, for the panel."""
        return self._picture(state, self.centre, self.view_half, self.pixels).numpy()

    @property
    def outline(self) -> float:
        """The erased circle's radius as a fraction of the view's width."""
        half = self.view_half if np.isscalar(self.view_half) else min(self.view_half)
        return self.radius / (2 * half)

    def _decode_colour(self, state, query) -> torch.Tensor:
        with torch.inference_mode():
            return self.model.decode(state[:1], self.lattice, query)[0, :, self.colour].float().clamp(0, 1).cpu()


def _square(centre, half, n: int) -> torch.Tensor:
    """Pixel-centre points (n*n, 2) of the rectangle centre +- half (a number or (hx, hy)), row 0 at
    the top (high y)."""
    hx, hy = (half, half) if np.isscalar(half) else half
    t = (torch.arange(n, dtype=torch.float32) + 0.5) / n * 2 - 1
    y, x = torch.meshgrid(-t, t, indexing="ij")
    return torch.stack([centre[0] + hx * x.reshape(-1), centre[1] + hy * y.reshape(-1)], dim=-1)


class _GridProbe(_Probe):
    """2D: a disc at the grid's centre; the intact comparison region is shifted by half the grid.
    The view is the whole grid."""

    def setup(self, radius: float) -> None:
        sizes = self.lattice.sizes_xyz
        self.centre = [n / 2 for n in sizes]
        self.other = [0.0, 0.0]  # = the centre shifted by half the (periodic) grid
        self.radius = radius * min(sizes)
        self.view_half = [n / 2 for n in sizes]

    def _picture(self, state, where, half, n):
        return self._decode_colour(state, _square(where, half, n)).reshape(n, n, 3)


class _VolumeProbe(_Probe):
    """Volume: a ball at the cube's centre, seen through a slab of its thickness along z
    (emission-absorption over black); the intact comparison region is shifted by half the cube on
    every axis. The view is the slab across the whole cube."""

    SAMPLES = 24

    def setup(self, radius: float) -> None:
        sizes = self.lattice.sizes_xyz
        self.cell = 2.0 / sizes[0]  # model units per cell: the lattice spans 2
        self.centre = [n / 2 for n in sizes]
        self.other = [0.0, 0.0, 0.0]
        self.radius = radius * min(sizes)
        self.view_half = [sizes[0] / 2, sizes[1] / 2]
        self.density = self.model.channel_slices()["density"]

    def _picture(self, state, where, half, n):
        points, samples = _square(where[:2], half, n), self.SAMPLES
        depth = 2 * self.radius
        z = where[2] - self.radius + (torch.arange(samples, dtype=torch.float32) + 0.5) * depth / samples
        query = torch.cat([points.repeat_interleave(samples, 0), z.repeat(len(points))[:, None]], dim=1)
        with torch.inference_mode():
            values = self.model.decode(state[:1], self.lattice, query)[0].float().cpu()
        values = values.reshape(len(points), samples, -1)
        alpha = 1.0 - torch.exp(-values[..., self.density].squeeze(-1).clamp_min(0) * depth / samples * self.cell)
        transmittance = torch.cumprod(torch.cat([torch.ones(len(points), 1), 1 - alpha[:, :-1]], dim=1), dim=1)
        colour = (transmittance * alpha)[..., None] * values[..., self.colour].clamp(0, 1)
        return colour.sum(1).reshape(n, n, 3)


class _MeshProbe(_Probe):
    """Mesh: a cap of the model's own training icosphere around +Z (chord radius 2 * radius, the
    sphere being 2 across), pictured by a gnomonic projection; the intact comparison region is
    the opposite cap (-Z)."""

    def setup(self, radius: float) -> None:
        from .render.raycast import RayCaster

        self.caster = RayCaster(self.lattice.vertices.cpu().numpy(), self.lattice.faces.cpu().numpy())
        self.centre, self.other = [0.0, 0.0, 1.0], [0.0, 0.0, -1.0]
        self.radius = 2.0 * radius
        self.view_half = min(2.2 * self.radius, 1.2)

    def _picture(self, state, where, half, n):
        from .lattices.mesh import SurfacePoints

        pole = where[2]
        xy = _square([0.0, 0.0], half, n).numpy().astype(np.float64)
        points = np.concatenate([xy * [1.0, pole], np.full((len(xy), 1), pole)], axis=1)
        points /= np.linalg.norm(points, axis=1, keepdims=True)
        face, bary, _ = self.caster.closest_points(points)
        query = SurfacePoints(torch.from_numpy(face), torch.from_numpy(bary))
        return self._decode_colour(state, query).reshape(n, n, 3)


PROBES = {"grid2d": _GridProbe, "grid3d": _VolumeProbe, "mesh": _MeshProbe}


@dataclass
class DamageResult:
    """figures: the numbers (see damage_experiment); panel: (n, 3n, 3) uint8 before | after | healed."""

    figures: dict
    panel: np.ndarray = field(repr=False)


def damage_experiment(model, steps: int = 96, heal_steps: int | None = None, seed: int = 0,
                      radius: float = DAMAGE_RADIUS, pixels: int = 256, stats=None,
                      progress: Progress | None = None) -> DamageResult:
    """Grow `steps`, erase a ball of cells (reset to the seed state, zeros), run `heal_steps` more.

    Runs on the model's own lattice (its grid, or for mesh models its training icosphere). In
    parallel an undamaged copy of the state runs the same `heal_steps` with the same random
    updates (a cloned generator), so the only difference is the damage. Figures (all
    Portilla-Simoncelli statistics distances, nca3d.train.quality.TextureStatistics, of the
    colour of the square inscribed in the erased region; 2D: the grid; volume: an
    emission-absorption slab through the ball; mesh: a gnomonic view of the cap):
      error_damaged: just after the damage vs the same region before it;
      error_healed: after healing vs the same region of the undamaged rollout;
      error_intact: the undamaged rollout's region vs another region of it (the natural variation
        of the texture; healed ~ intact means fully healed);
      recovery: (damaged - healed) / (damaged - intact), 1 = fully healed, <= 0 = no healing.
    radius: of the erased ball, as a fraction of the grid side (mesh: of the sphere's diameter).
    """
    from .core.nca import make_generator
    from .train.quality import TextureStatistics
    from .core.grow import grow

    heal_steps = steps if heal_steps is None else heal_steps
    if not 0.01 <= radius <= 0.45:
        raise NCA3DError(f"damage radius {radius} is out of range; use 0.01 to 0.45")
    stats = stats or TextureStatistics()
    probe = PROBES[model.config.lattice_kind](model, radius, pixels, stats.size)
    lattice = probe.lattice
    generator = make_generator(seed, model.device)
    state = grow(model, model.seed(lattice), lattice, steps, generator, progress, "growing: ")
    before_crop, before_view = probe.crop(state), probe.view(state)
    intact = state.clone()
    intact_generator = torch.Generator(device=model.device)
    intact_generator.set_state(generator.get_state())
    mask = erase_ball(state, lattice, probe.centre, probe.radius)
    erased = int(mask.sum())
    after_crop, after_view = probe.crop(state), probe.view(state)
    state = grow(model, state, lattice, heal_steps, generator, progress, "healing: ")
    intact = grow(model, intact, lattice, heal_steps, intact_generator, None)
    healed_crop, healed_view = probe.crop(state), probe.view(state)
    intact_crop, other_crop = probe.crop(intact), probe.crop(intact, other=True)
    damaged = stats.distance(after_crop, before_crop)
    healed = stats.distance(healed_crop, intact_crop)
    variation = stats.distance(other_crop, intact_crop)
    span = damaged - variation
    figures = {
        "domain": model.config.domain, "steps": steps, "heal_steps": heal_steps, "seed": seed,
        "radius": radius, "erased_cells": erased, "erased_fraction": erased / lattice.num_cells,
        "error_damaged": damaged, "error_healed": healed, "error_intact": variation,
        "recovery": (damaged - healed) / span if span > 1e-9 else float("nan"),
        "metric": "Portilla-Simoncelli statistics distance (TextureStatistics) of the erased region's colour",
    }
    labels = ("before damage", "just after", f"healed (+{heal_steps} steps)")
    panel = _panel([before_view, after_view, healed_view], labels, probe.outline)
    return DamageResult(figures, panel)


def damage_figures(model, **options) -> dict:
    """damage_experiment's figures only (for benches): see damage_experiment."""
    return damage_experiment(model, **options).figures


def _panel(views: list[np.ndarray], labels, outline: float) -> np.ndarray:
    """Views side by side, a dashed circle around the erased region and a label on each."""
    from PIL import Image, ImageDraw

    tiles = []
    for view, label in zip(views, labels):
        image = Image.fromarray((np.clip(view, 0, 1) * 255).round().astype(np.uint8))
        draw = ImageDraw.Draw(image)
        n = image.width
        r = outline * n
        for k in range(0, 360, 12):  # a dashed circle: arcs of 6 degrees
            draw.arc([n / 2 - r, n / 2 - r, n / 2 + r, n / 2 + r], k, k + 6, fill=(255, 255, 255), width=1)
        draw.rectangle([0, 0, 8 + 6 * len(label), 14], fill=(0, 0, 0))
        draw.text((4, 2), label, fill=(255, 255, 255))
        tiles.append(np.asarray(image))
    gap = np.full((tiles[0].shape[0], 2, 3), 255, np.uint8)
    return np.concatenate([tiles[0], gap, tiles[1], gap, tiles[2]], axis=1)


# --------------------------------------------------------------------------- scenes


class Scene:
    """A model growing on what shows it. add_to(plotter) puts it in a plotter; refresh() decodes
    the current state again and updates the plotter's data; advance(k) runs k more NCA steps."""

    def __init__(self, model, seed: int = 0, progress: Progress | None = None):
        from .core.nca import make_generator

        self.model, self.seed_value = model, seed
        self.progress = progress or Progress("none")
        self.generator = make_generator(seed, model.device)
        self.steps_done = 0
        self.state = None  # set by subclasses once their lattice exists

    def reset(self) -> None:
        from .core.nca import make_generator

        self.generator = make_generator(self.seed_value, self.model.device)
        self.state = self.model.seed(self.lattice)
        self.steps_done = 0

    def advance(self, steps: int, report: bool = False) -> None:
        """Run `steps` more NCA steps (reporting stage 'grow' to the progress when `report`)."""
        from .core.grow import grow

        if steps:
            self.state = grow(self.model, self.state, self.lattice, steps, self.generator,
                              self.progress if report else None)
            self.steps_done += steps

    def damage(self, radius: float = DAMAGE_RADIUS) -> int:
        """Erase a ball of cells around the lattice's middle; returns how many."""
        positions = cell_positions(self.lattice)
        centre = self.damage_centre(positions)
        extent = float((positions.max(0).values - positions.min(0).values).max())
        return int(erase_ball(self.state, self.lattice, centre, radius * extent).sum())

    def damage_centre(self, positions) -> torch.Tensor:
        return (positions.max(0).values + positions.min(0).values) / 2

    # subclasses ------------------------------------------------------------------------------
    bounds: tuple = ((0.0, 0.0, 0.0), 1.0)  # bounding sphere (centre, radius)

    def add_to(self, plotter) -> None:
        raise NotImplementedError

    def refresh(self) -> None:
        raise NotImplementedError

    def place_camera(self, plotter, turn: float | None = None) -> None:
        """The still view (turn None), or the turntable's, turned `turn` degrees about the vertical."""
        centre, radius = self.bounds
        orbit_camera(plotter, centre, radius, AZIMUTH_DEG + (turn or 0.0), ELEVATION_DEG)


class MeshScene(Scene):
    """A mesh or volume model on a UV-mapped mesh, baked with MeshBaker, shown with a PBR material."""

    def __init__(self, model, mesh, map_size: int = RENDER_MAP_SIZE, cells: int = 0, seed: int = 0,
                 progress: Progress | None = None):
        from .ops.uv import has_usable_uv, unwrap
        from .render.maps import MeshBaker, TextureConfig

        super().__init__(model, seed, progress)
        if model.config.domain == "2d":
            raise NCA3DError("a 2D model makes tileable maps, not mesh textures; render it without --mesh")
        if not has_usable_uv(mesh):
            self.progress.update("unwrap", 0.0, "no usable UVs: unwrapping with xatlas", force=True)
            mesh = unwrap(mesh, resolution=map_size, padding=max(2, map_size // 256))
        self.mesh = mesh
        config = TextureConfig(mesh=mesh.name, model="", out=".", size=map_size, cells=cells,
                               preview_size=0)
        self.baker = MeshBaker(model, mesh, config, self.progress, keep_geometry=True)
        self.lattice = self.baker.lattice
        self.state = model.seed(self.lattice)
        centre = (mesh.vertices.min(0) + mesh.vertices.max(0)) / 2
        self.bounds = (centre, float(np.linalg.norm(mesh.vertices - centre, axis=1).max()))
        self.actor = None
        self.mirrored = None
        if "normal" in model.channel_slices():
            self.mirrored = mirrored_texels(mesh, self.baker.frames.sign, map_size, config.margin)

    def damage_centre(self, positions) -> torch.Tensor:
        if self.model.config.domain != "mesh":
            return super().damage_centre(positions)
        # the surface point that faces the camera of the still view
        a, e = math.radians(AZIMUTH_DEG), math.radians(ELEVATION_DEG)
        view = torch.tensor([math.cos(e) * math.sin(a), math.sin(e), math.cos(e) * math.cos(a)])
        return positions[int(((positions - positions.mean(0)) @ view).argmax())]

    def textures(self) -> dict:
        """Bake the current state -> pyvista textures: base (sRGB albedo), orm, normal (when present)."""
        maps, _ = self.baker.bake(self.state)
        textures = {"base": _texture(maps.arrays["albedo"], srgb=True)}
        orm = maps.orm()
        if orm is not None:
            textures["orm"] = _texture(orm)
        if "normal" in maps.arrays:
            normal = maps.arrays["normal"]
            if self.mirrored is not None:
                normal[self.mirrored, 0] = 255 - normal[self.mirrored, 0]
            textures["normal"] = _texture(normal)
        return textures

    def add_to(self, plotter) -> None:
        mesh, frames = self.mesh, self.baker.frames
        poly = _polydata(mesh.vertices, mesh.faces, mesh.uv, frames.normal, display_tangents(frames, mesh.faces))
        self.actor = plotter.add_mesh(poly, pbr=True, metallic=0.0, roughness=DEFAULT_ROUGHNESS, color="white",
                                      smooth_shading=True, scalars=None, show_scalar_bar=False)
        self.refresh()
        add_lights(plotter)

    def refresh(self) -> None:
        textures = self.textures()
        prop = self.actor.GetProperty()
        prop.SetBaseColorTexture(textures["base"])
        if "orm" in textures:
            prop.SetRoughness(1.0)  # the ORM texture's G is multiplied by this
            prop.SetOcclusionStrength(1.0)
            prop.SetORMTexture(textures["orm"])
        if "normal" in textures:
            prop.SetNormalTexture(textures["normal"])
            prop.SetNormalScale(1.0)


class VolumeScene(Scene):
    """A volume model as a volume render: density and colour decoded on a res^3 grid over the
    cube [-1, 1]^3, mapped straight to RGBA (alpha from density as extinction)."""

    def __init__(self, model, res: int = RENDER_VOLUME_RES, seed: int = 0, progress: Progress | None = None):
        from .core.dense import check_volume_model

        super().__init__(model, seed, progress)
        check_volume_model(model)
        self.res = res
        self.lattice = model.make_lattice()
        self.state = model.seed(self.lattice)
        self.bounds = ((0.0, 0.0, 0.0), math.sqrt(3.0))
        self.grid = None

    @property
    def spacing(self) -> float:
        return 2.0 / self.res

    def rgba(self) -> np.ndarray:
        """(res^3, 4) uint8 in VTK point order (x fastest); alpha = the opacity over VOLUME_UNIT."""
        from .core.dense import decode_volume

        density, colour = decode_volume(self.model, self.state, self.lattice, self.res, color_space="srgb")
        alpha = 1.0 - np.exp(-np.clip(density, 0, None) * VOLUME_UNIT)  # model units = world units
        rgba = np.concatenate([np.clip(colour, 0, 1), alpha[..., None]], axis=-1)
        rgba = np.round(rgba * 255).astype(np.uint8)
        return rgba.transpose(2, 1, 0, 3).reshape(-1, 4)  # (X, Y, Z) -> x fastest

    def add_to(self, plotter) -> None:
        pv = _pyvista()
        h = self.spacing
        self.grid = pv.ImageData(dimensions=(self.res,) * 3, spacing=(h,) * 3, origin=(-1 + h / 2,) * 3)
        self.grid.point_data["rgba"] = self.rgba()
        with _quiet_vtk():
            self.actor = plotter.add_volume(self.grid, scalars="rgba", mapper="smart", show_scalar_bar=False,
                                            opacity_unit_distance=VOLUME_UNIT)
        self.actor.prop.interpolation_type = "linear"
        self.grid = pv.wrap(self.actor.mapper.GetInput())  # add_volume renders a copy: update that one

    def refresh(self) -> None:
        self.grid.point_data["rgba"][:] = self.rgba()
        self.grid.Modified()


class TileScene(Scene):
    """A 2D model's maps tiled 2 x 2 on a square in the XZ plane (facing +Y), seen from straight
    above with u to the right and v up the image; the turntable orbits it like a tile on a table."""

    def __init__(self, model, map_size: int = RENDER_MAP_SIZE, seed: int = 0, progress: Progress | None = None):
        from .render.maps import GridBaker, MapsConfig

        super().__init__(model, seed, progress)
        if model.config.domain != "2d":
            raise NCA3DError("tiles are for 2D models")
        self.baker = GridBaker(model, MapsConfig(model="", out=".", name="tile", size=map_size, preview_size=0),
                               self.progress)
        self.lattice = self.baker.lattice
        self.state = model.seed(self.lattice)
        self.lit = "normal" in model.channel_slices() or "roughness" in model.channel_slices()
        self.bounds = ((0.0, 0.0, 0.0), math.sqrt(2.0))
        self.actor = None

    def add_to(self, plotter) -> None:
        vertices = np.array([[-1, 0, 1], [1, 0, 1], [1, 0, -1], [-1, 0, -1]], float)
        uv = np.array([[0, 0], [2, 0], [2, 2], [0, 2]], float)  # 2 x 2 tiles: u along +X, v along -Z
        plane = _polydata(vertices, np.array([[0, 1, 2], [0, 2, 3]]), uv, np.tile([0.0, 1.0, 0.0], (4, 1)),
                          np.tile([1.0, 0.0, 0.0], (4, 1)))  # N x T = -Z = dP/dv: no mirroring
        if self.lit:
            self.actor = plotter.add_mesh(plane, pbr=True, metallic=0.0, roughness=DEFAULT_ROUGHNESS, color="white",
                                          scalars=None, show_scalar_bar=False)
            add_lights(plotter)
        else:
            self.actor = plotter.add_mesh(plane, color="white", lighting=False, scalars=None, show_scalar_bar=False)
        self.refresh()

    def refresh(self) -> None:
        maps, _ = self.baker.bake(self.state)
        base = _texture(maps.arrays["albedo"], srgb=self.lit, repeat=True)
        if not self.lit:
            self.actor.texture = base
            return
        prop = self.actor.GetProperty()
        prop.SetBaseColorTexture(base)
        orm = maps.orm()
        if orm is not None:
            prop.SetRoughness(1.0)
            prop.SetORMTexture(_texture(orm, repeat=True))
        if "normal" in maps.arrays:
            prop.SetNormalTexture(_texture(maps.arrays["normal"], repeat=True))

    def place_camera(self, plotter, turn: float | None = None) -> None:
        if turn is not None:
            orbit_camera(plotter, (0, 0, 0), 1.25, AZIMUTH_DEG + turn, 40.0)
            return
        camera = plotter.camera  # the still: straight down, the 2 x 2 tiles filling the frame
        camera.parallel_projection = True
        camera.focal_point, camera.position, camera.up = (0, 0, 0), (0, 5, 0), (0, 0, -1)
        camera.parallel_scale = 1.0
        camera.clipping_range = (1.0, 10.0)


def make_scene(model, mesh: str = "", map_size: int = RENDER_MAP_SIZE, cells: int = 0, volume_res: int =
               RENDER_VOLUME_RES, seed: int = 0, progress: Progress | None = None) -> Scene:
    """The scene that shows `model`: see the module docstring."""
    from .ops.demo_meshes import load_demo_or_mesh

    domain = model.config.domain
    if domain == "2d":
        if mesh:
            raise NCA3DError("a 2D model is shown as a tile; --mesh is for mesh and volume models")
        return TileScene(model, map_size, seed, progress)
    if domain == "volume" and not mesh:
        return VolumeScene(model, volume_res, seed, progress)
    return MeshScene(model, load_demo_or_mesh(mesh or DEFAULT_MESH), map_size, cells, seed, progress)


# --------------------------------------------------------------------------- render


def render_frames(scene: Scene, size: int, turntable: int = 0) -> list[np.ndarray]:
    """The still image, or `turntable` frames turning 360 degrees; each (size, size, 3) uint8."""
    plotter = new_plotter(size)
    try:
        scene.add_to(plotter)
        if not turntable:
            scene.place_camera(plotter)
            return [screenshot(plotter, size)]
        frames = []
        for index in range(turntable):
            scene.place_camera(plotter, 360.0 * index / turntable)
            frames.append(screenshot(plotter, size))
            scene.progress.update("render", (index + 1) / turntable, f"frame {index + 1}/{turntable}")
        return frames
    finally:
        plotter.close()


def frame_paths(out: str | Path, count: int) -> list[Path]:
    """OUT.png -> [OUT.png] for a still, OUT.0001.png ... for a sequence."""
    out = Path(out)
    if count <= 1 and out.suffix.lower() == ".png":
        return [out]
    return [out.with_name(f"{out.stem}.{index + 1:04d}{out.suffix}") for index in range(count)]


def write_frames(frames: list[np.ndarray], out: str | Path, turntable: bool = False) -> list[str]:
    """PNG still, numbered PNGs or one GIF, each file atomic; on failure none of them remains."""
    from PIL import Image

    from .io.atomic import atomic_path
    from .io.images import write_png

    out = Path(out)
    if out.suffix.lower() == ".gif":
        with atomic_path(out) as tmp:
            images = [Image.fromarray(frame) for frame in frames]
            images[0].save(tmp, format="GIF", save_all=True, append_images=images[1:], duration=GIF_FRAME_MS,
                           loop=0, optimize=False)
        return [str(out)]
    paths = frame_paths(out, len(frames) if turntable else 1)
    written: list[Path] = []
    try:
        for frame, path in zip(frames, paths):
            write_png(path, frame)
            written.append(path)
    except BaseException:
        for path in written:
            with contextlib.suppress(OSError):
                path.unlink()
        raise
    return [str(p) for p in written]


def render(config: RenderConfig, progress: Progress | None = None) -> dict:
    """Run `nca3d render`; returns {"written": [...], ...} (with "figures" for --damage)."""
    progress = progress or Progress("none")
    start = time.monotonic()
    model = load_showcase_model(config.model, config.device)
    record = {"model": config.model, "domain": model.config.domain}
    if config.damage:
        from .io.images import write_png

        result = damage_experiment(model, config.steps, config.heal_steps or config.steps, config.seed,
                                   pixels=config.size, progress=progress)
        write_png(config.out, result.panel)
        record.update(written=[str(config.out)], figures=result.figures)
    else:
        _pyvista()  # fail before growing when pyvista is missing
        scene = make_scene(model, config.mesh, config.map_size, config.cells, config.volume_res, config.seed,
                           progress)
        scene.advance(config.steps, report=True)
        progress.update("render", 0.0, f"{config.size} px", force=True)
        frames = render_frames(scene, config.size, config.turntable)
        if not config.turntable:
            progress.update("render", 1.0, f"{config.size} px", force=True)
        record["written"] = write_frames(frames, config.out, bool(config.turntable))
    record["seconds"] = round(time.monotonic() - start, 2)
    return record


# --------------------------------------------------------------------------- view


def display_available(platform: str | None = None, environ=None) -> bool:
    """Whether a window can open: on Linux and other X11/Wayland systems only with DISPLAY or
    WAYLAND_DISPLAY set; macOS and Windows are assumed to have a display."""
    platform = platform or sys.platform
    environ = os.environ if environ is None else environ
    if platform == "darwin" or platform.startswith("win"):
        return True
    return bool(environ.get("DISPLAY") or environ.get("WAYLAND_DISPLAY"))


def check_display(platform: str | None = None, environ=None) -> None:
    if not display_available(platform, environ):
        raise NCA3DError("no display: `nca3d view` opens a window, and neither DISPLAY nor WAYLAND_DISPLAY is "
                         "set; run it on a desktop session, or render images offscreen with "
                         "`nca3d render --model M --out preview.png` (add --turntable 36 for an animation)")


def view_tick(scene: Scene, plotter=None, steps: int = 2) -> int:
    """One timer tick of `nca3d view`: run `steps` NCA steps, decode again, update the plotter's
    textures or volume and its status line. Returns the steps done so far."""
    scene.advance(steps)
    scene.refresh()
    if plotter is not None:
        plotter.add_text(f"step {scene.steps_done}   d: damage   r: restart   space: pause", position="lower_left",
                         font_size=9, color="white", name="status")
        plotter.render()
    return scene.steps_done


def view(config: ViewConfig) -> None:
    """Open the interactive window (blocks until it is closed)."""
    check_display()
    _pyvista()
    model = load_showcase_model(config.model, config.device)
    progress = Progress("bar")
    scene = make_scene(model, config.mesh, config.map_size, config.cells, config.volume_res, config.seed, progress)
    scene.advance(config.steps, report=True)
    plotter = new_plotter(config.size, off_screen=False, supersample=1)
    scene.add_to(plotter)
    scene.place_camera(plotter)
    paused = {"on": False}

    def tick(_step=None):
        if not paused["on"]:
            view_tick(scene, plotter, config.speed)

    def damage():
        scene.damage()
        view_tick(scene, plotter, 0)

    def restart():
        scene.reset()
        view_tick(scene, plotter, 0)

    def pause():
        paused["on"] = not paused["on"]

    plotter.add_key_event("d", damage)
    plotter.add_key_event("r", restart)
    plotter.add_key_event("space", pause)
    view_tick(scene, plotter, 0)
    plotter.add_timer_event(max_steps=10 ** 9, duration=config.interval_ms, callback=tick)
    plotter.show(title=f"nca3d view: {config.model}")


# --------------------------------------------------------------------------- CLI glue


def add_render_arguments(parser) -> None:
    parser.add_argument("--model", required=True, help="a .nca3d file or a bundled model name (see: nca3d models)")
    parser.add_argument("--mesh", default="", help="demo mesh (rock, torus, capsule) or a mesh file; mesh models "
                        "default to rock, volume models to a volume render")
    parser.add_argument("--out", required=True, help="OUT.png (a still; numbered OUT.0001.png ... with "
                        "--turntable) or OUT.gif (with --turntable)")
    parser.add_argument("--size", type=int, default=512, help="image size in pixels (default 512)")
    parser.add_argument("--steps", type=int, default=96, help="NCA steps grown from the seed (default 96)")
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    parser.add_argument("--turntable", type=int, default=0, metavar="N", help="N frames turning around the model")
    parser.add_argument("--damage", action="store_true", help="erase a region mid-rollout, let it heal, write the "
                        "panel before | just after | healed and print the error figures (on the model's own "
                        "lattice: --mesh does not apply)")
    parser.add_argument("--heal-steps", dest="heal_steps", type=int, default=0, help="steps after the damage "
                        "(default: as many as --steps)")
    parser.add_argument("--map-size", dest="map_size", type=int, default=RENDER_MAP_SIZE,
                        help=f"baked map size for mesh and 2D models (default {RENDER_MAP_SIZE})")
    parser.add_argument("--cells", type=int, default=0, help="lattice cells over the mesh (default: as nca3d texture)")
    parser.add_argument("--volume-res", dest="volume_res", type=int, default=RENDER_VOLUME_RES,
                        help=f"voxels per side of a volume render (default {RENDER_VOLUME_RES})")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--progress", default="bar", choices=["bar", "json", "none"])


def run_render(args) -> int:
    options = {k: v for k, v in vars(args).items() if k in RenderConfig.__dataclass_fields__}
    record = render(RenderConfig(**options), Progress(args.progress))
    print(json.dumps(record))
    return 0


def add_view_arguments(parser) -> None:
    parser.add_argument("--model", required=True, help="a .nca3d file or a bundled model name")
    parser.add_argument("--mesh", default="", help="demo mesh (rock, torus, capsule) or a mesh file")
    parser.add_argument("--steps", type=int, default=0, help="steps grown before the window opens (default 0)")
    parser.add_argument("--speed", type=int, default=2, help="NCA steps per tick (default 2)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--map-size", dest="map_size", type=int, default=VIEW_MAP_SIZE)
    parser.add_argument("--cells", type=int, default=0)
    parser.add_argument("--volume-res", dest="volume_res", type=int, default=VIEW_VOLUME_RES)
    parser.add_argument("--device", default="auto")


def run_view(args) -> int:
    options = {k: v for k, v in vars(args).items() if k in ViewConfig.__dataclass_fields__}
    view(ViewConfig(**options))
    return 0


def run_models(args) -> int:
    from .models import format_library, library_entries

    entries = library_entries()
    print(json.dumps(entries, indent=2) if args.json else format_library(entries))
    return 0
