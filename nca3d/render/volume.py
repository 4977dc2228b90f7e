"""Emission-absorption ray marching of a volume model inside the cube [-1, 1]^3.

The lattice fills the cube; world point p maps to cell coordinate (p + 1) / 2 * n (x first) and
the texture wraps. Density is an extinction coefficient per world unit (the cube is 2 wide).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from ..core.model import Model
from ..lattices import Grid3D

HALF_DIAGONAL = math.sqrt(3.0)


def pixel_grid(size: int, device=None) -> Tensor:
    """Pixel centres of a size x size image in [0, 1]^2, image order (y rows, x fastest): (size^2, 2)."""
    t = (torch.arange(size, device=device, dtype=torch.float32) + 0.5) / size
    y, x = torch.meshgrid(t, t, indexing="ij")
    return torch.stack([x.reshape(-1), y.reshape(-1)], dim=-1)


def camera_frame(direction: Tensor) -> tuple[Tensor, Tensor]:
    """Right and up unit vectors orthogonal to a unit view direction (3,)."""
    helper = torch.tensor([0.0, 0.0, 1.0], device=direction.device)
    if direction[2].abs() > 0.9:
        helper = torch.tensor([1.0, 0.0, 0.0], device=direction.device)
    right = torch.linalg.cross(direction, helper)
    right = right / right.norm()
    return right, torch.linalg.cross(right, direction)


def orthographic_rays(film: Tensor, generator: torch.Generator | None = None,
                      direction: Tensor | None = None, extent: float = HALF_DIAGONAL,
                      back: float = 2 * HALF_DIAGONAL) -> tuple[Tensor, Tensor]:
    """Rays for film coordinates (Q, 2) in [-1, 1] (y down) of a view along `direction` (3,).

    The film's half-width is `extent` world units (the default spans the cube's bounding
    sphere, so the whole cube is seen) and it sits `back` world units behind the origin along
    the view (outside the cube by default). A random direction is drawn when none is given.
    Returns origins (Q, 3) and the shared unit direction (3,).
    """
    if direction is None:
        direction = torch.randn(3, generator=generator, device=film.device)
    direction = direction.to(film.device, torch.float32)
    direction = direction / direction.norm()
    right, up = camera_frame(direction)
    origins = (film[:, :1] * right - film[:, 1:] * up) * extent - direction * back
    return origins, direction


def cube_span(origins: Tensor, direction: Tensor) -> tuple[Tensor, Tensor]:
    """Entry and exit distances (Q,) of rays through [-1, 1]^3 (exit <= entry when missed)."""
    safe = torch.where(direction.abs() < 1e-9, torch.full_like(direction, 1e-9), direction)
    t0 = (-1.0 - origins) / safe
    t1 = (1.0 - origins) / safe
    near = torch.minimum(t0, t1).amax(-1).clamp_min(0.0)
    far = torch.maximum(t0, t1).amin(-1)
    return near, far


def march_rays(model: Model, state: Tensor, lattice: Grid3D, origins: Tensor, direction: Tensor,
               samples: int, background: Tensor, depth: float | None = None, density_scale: float = 1.0) -> Tensor:
    """Composite colour (B, Q, 3) of rays (origins (Q, 3), direction (3,)) over `background` (3,).

    depth None: each ray is clipped to the cube [-1, 1]^3. depth d: each ray runs d world units
    from its origin through the periodic texture (no clipping), so every pixel sees the same
    optical depth. The decoded density is multiplied by `density_scale`.
    """
    if depth is None:
        near, far = cube_span(origins, direction)
    else:
        near = torch.zeros(origins.shape[0], device=origins.device)
        far = torch.full_like(near, float(depth))
    length = (far - near).clamp_min(0.0)  # (Q,)
    t = near[:, None] + length[:, None] * (torch.arange(samples, device=origins.device) + 0.5) / samples
    points = origins[:, None, :] + t[..., None] * direction  # (Q, S, 3)
    cells = (points.reshape(-1, 3) + 1.0) * 0.5 * torch.tensor(lattice.sizes_xyz, device=points.device)
    decoded = model.decode(state, lattice, cells)  # (B, Q*S, 4)
    slices = model.channel_slices()
    batch, rays = state.shape[0], origins.shape[0]
    colour = decoded[..., slices["rgb"]].reshape(batch, rays, samples, 3)
    density = decoded[..., slices["density"]].reshape(batch, rays, samples)
    step = (length / samples)[None, :, None]
    alpha = 1.0 - torch.exp(-density * (step * density_scale))
    transmittance = torch.cumprod(torch.cat([torch.ones_like(alpha[..., :1]), 1.0 - alpha + 1e-10], -1), -1)
    weights = alpha * transmittance[..., :-1]
    return (weights[..., None] * colour).sum(2) + transmittance[..., -1:] * background


@torch.no_grad()
def render_volume_image(model: Model, state: Tensor, lattice: Grid3D, size: int = 256, samples: int = 128,
                        background=(1.0, 1.0, 1.0), direction=(-0.6, -0.45, -0.66),
                        density_scale: float = 1.0) -> np.ndarray:
    """An image (size, size, 3) of state[0] from a 3/4 view (rows chunked to bound memory), the
    density multiplied by `density_scale`."""
    film = pixel_grid(size, state.device) * 2 - 1
    background = torch.as_tensor(background, dtype=torch.float32, device=state.device)
    view = torch.as_tensor(direction, dtype=torch.float32)
    rows = []
    chunk = max(1, 65536 // samples)
    for start in range(0, len(film), chunk):
        origins, d = orthographic_rays(film[start:start + chunk], direction=view)
        rows.append(march_rays(model, state[:1], lattice, origins, d, samples, background,
                               density_scale=density_scale)[0])
    return torch.cat(rows).reshape(size, size, 3).clamp(0, 1).cpu().numpy()
