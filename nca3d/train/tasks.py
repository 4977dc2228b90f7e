"""Supervision tasks: each owns a lattice and renders a model's state as loss crops.

`render` returns the crops in TextureLoss's layout: for each scale s (default 1, 2, 4), crop_count(s) crops each
of (B, K, patch, patch), covering 1/s of the lattice's extent and rendered directly at patch
resolution through the LPPN, so finer scales see finer decoded detail at flat memory.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from ..core.dense import decode_grid
from ..core.model import Model
from ..lattices import Grid2D, Grid3D
from ..render.volume import march_rays, orthographic_rays, pixel_grid
from .losses import crop_count

DEFAULT_SCALES = (1, 2, 4)  # the full view, 2 half-size crops, 4 quarter-size crops
CHECKPOINT_VIEWS = True  # VolumeTask.render recomputes each view's march in the backward


def samples_per_px(scales, supersample: int) -> dict[int, int]:
    """Decoder samples a px side per crop scale: up to `supersample`, and no finer than the finest
    crops' px (max(scales) / s at scale s), so each px of a coarser crop averages the field over
    its area, as the exemplar's area-sampled targets do, where one sample would alias."""
    return {s: max(1, min(int(supersample), max(scales) // s)) for s in scales}


def pooled_crops(values: Tensor, sides: list[int], patch: int) -> list[Tensor]:
    """Decoded samples (B, sum of (patch * n)^2, K), crop after crop with n = sides[i] samples a px
    side in image order -> the crops (B, K, patch, patch), each px the mean of its n x n samples."""
    batch, p = values.shape[0], patch
    crops = [part.reshape(batch, p, n, p, n, -1).mean(dim=(2, 4)) if n > 1 else part.reshape(batch, p, p, -1)
             for part, n in zip(values.split([(p * n) ** 2 for n in sides], dim=1), sides)]
    return [crop.permute(0, 3, 1, 2) for crop in crops]


class Texture2DTask:
    """Flat periodic textures: crops of the Grid2D torus, rendered at patch resolution (each px
    the mean of samples_per_px's n x n decoder samples; supersample 1: one at its centre)."""

    def __init__(self, grid: int, harmonics: int, patch: int, scales=DEFAULT_SCALES, supersample: int = 1):
        if supersample < 1:
            raise ValueError(f"supersample must be >= 1, got {supersample}")
        self.lattice = Grid2D(grid, harmonics)
        self.patch, self.scales = patch, tuple(scales)
        self.rays_per_px = samples_per_px(self.scales, supersample)

    def render(self, model: Model, state: Tensor, generator: torch.Generator) -> list[Tensor]:
        extent = float(self.lattice.cell_shape[1])
        points, sides = [], []
        for scale in self.scales:
            side = self.rays_per_px[scale]
            unit = pixel_grid(self.patch * side, state.device)
            for _ in range(crop_count(scale)):
                origin = torch.rand(2, generator=generator, device=state.device) * extent
                points.append(origin + unit * (extent / scale))
                sides.append(side)
        values = model.decode(state, self.lattice, torch.cat(points))  # (B, samples, K)
        return pooled_crops(values, sides, self.patch)

    def preview(self, model: Model, state: Tensor, scale: float = 4.0) -> np.ndarray:
        """The whole tile of state[0] at `scale` x lattice resolution: (H, W, K) float (core.dense's grid decode)."""
        shape = tuple(round(n * scale) for n in self.lattice.cell_shape)
        return decode_grid(model, state, self.lattice, shape).cpu().numpy()


class VolumeTask:
    """Solid textures: orthographic emission-absorption renders through the periodic volume.

    A full view is one lattice period wide (the cube's width, 2 world units) from a random
    direction; rays are not clipped to the cube (the texture wraps), so every pixel is texture
    over the same optical depth and the exemplar maps onto one period.

    crop > 0 trains a `grid`-cell lattice on a periodic crop of `crop` cells a side (the NCA is
    local, so it grows the same texture on the whole lattice): views span the crop, while rays
    cross `grid` cells and the density is per unit of the whole lattice's cube, as in its renders.
    """

    def __init__(self, grid: int, harmonics: int, patch: int, scales=DEFAULT_SCALES, samples: int = 48,
                 background=(1.0, 1.0, 1.0), crop: int = 0):
        cells = crop or grid
        self.lattice = Grid3D(cells, harmonics)
        self.depth = 2.0 * grid / cells  # world units of the crop's cube
        self.density_scale = cells / grid  # the whole lattice's units per crop unit
        self.patch, self.scales, self.samples = patch, tuple(scales), samples
        self.background = torch.tensor(background, dtype=torch.float32)

    def _views(self, generator, device) -> list[tuple[Tensor, Tensor]]:
        """Rays (origins, directions) of each crop, for a random direction per crop."""
        unit = pixel_grid(self.patch, device) * 2.0 - 1.0  # film coordinates in [-1, 1]
        views = []
        for scale in self.scales:
            for _ in range(crop_count(scale)):
                centre = (torch.rand(2, generator=generator, device=device) * 2 - 1) * (1 - 1 / scale)
                film = centre + unit / scale
                views.append(orthographic_rays(film, generator, extent=1.0, back=self.depth / 2))
        return views

    def render(self, model: Model, state: Tensor, generator: torch.Generator) -> list[Tensor]:
        """The crops (B, 3, patch, patch). With autograd each view's march is checkpointed: its ray
        samples' decoder activations (about 1 KB a sample; 2.75M samples an iteration at patch 64,
        batch 2) are recomputed in the backward a view at a time instead of all kept, for a second
        forward of the march: amethyst's training (24^3, patch 64) peaked over 12 GB, 6.6 with it."""
        crops = []
        for origins, directions in self._views(generator, state.device):
            if torch.is_grad_enabled() and CHECKPOINT_VIEWS:
                rgb = checkpoint(self._march, model, state, origins, directions, use_reentrant=False)
            else:
                rgb = self._march(model, state, origins, directions)
            crops.append(rgb.reshape(state.shape[0], self.patch, self.patch, 3).permute(0, 3, 1, 2))
        return crops

    def _march(self, model: Model, state: Tensor, origins: Tensor, directions: Tensor) -> Tensor:
        """One view's colours (B, p*p, 3)."""
        return march_rays(model, state, self.lattice, origins, directions, self.samples,
                          self.background.to(state.device), depth=self.depth, density_scale=self.density_scale)

    @torch.no_grad()
    def preview(self, model: Model, state: Tensor, size: int = 128) -> np.ndarray:
        from ..render.volume import render_volume_image

        return render_volume_image(model, state[:1], self.lattice, size=size, samples=96,
                                   background=self.background, density_scale=self.density_scale)
