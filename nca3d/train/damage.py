"""Damage and healing, measured: grow, erase a ball of cells (reset to the all-zero seed state)
mid-rollout, keep running, and compare the damaged region with the same region of an undamaged
rollout that draws the same random updates (see damage_experiment), by the texture statistics of
train.quality. Makes the panel before damage | just after | healed of `nca3d render --damage`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from ..core.dense import decode_grid
from ..core.grow import DAMAGE_RADIUS, erase_ball
from ..errors import NCA3DError
from ..progress import Progress


def colour_slice(model) -> slice:
    """The model's colour output: albedo (PBR) or rgb."""
    slices = model.channel_slices()
    return slices["albedo"] if "albedo" in slices else slices["rgb"]


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

    def view(self, state) -> np.ndarray:
        """(n, n, 3) the whole grid, row 0 at the top (high y): core.dense's grid decode."""
        image = decode_grid(self.model, state, self.lattice, self.pixels)[..., self.colour]
        return image.flip(0).float().clamp(0, 1).cpu().numpy()


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
        from ..render.raycast import RayCaster

        self.caster = RayCaster(self.lattice.vertices.cpu().numpy(), self.lattice.faces.cpu().numpy())
        self.centre, self.other = [0.0, 0.0, 1.0], [0.0, 0.0, -1.0]
        self.radius = 2.0 * radius
        self.view_half = min(2.2 * self.radius, 1.2)

    def _picture(self, state, where, half, n):
        from ..lattices.mesh import SurfacePoints

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
    Portilla-Simoncelli statistics distances, train.quality.TextureStatistics, of the
    colour of the square inscribed in the erased region; 2D: the grid; volume: an
    emission-absorption slab through the ball; mesh: a gnomonic view of the cap):
      error_damaged: just after the damage vs the same region before it;
      error_healed: after healing vs the same region of the undamaged rollout;
      error_intact: the undamaged rollout's region vs another region of it (the natural variation
        of the texture; healed ~ intact means fully healed);
      recovery: (damaged - healed) / (damaged - intact), 1 = fully healed, <= 0 = no healing.
    radius: of the erased ball, as a fraction of the grid side (mesh: of the sphere's diameter).
    """
    from ..core.grow import grow
    from ..core.nca import make_generator
    from .quality import TextureStatistics

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
