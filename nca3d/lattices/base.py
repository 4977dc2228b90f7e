"""What every lattice provides: perception of neighbours and location of query points.

States are channels-last: (B, *cells, C), with `cells` the lattice's array shape.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator

import torch
from torch import Tensor


@dataclass
class Located:
    """Where query points fall in a lattice.

    corners: (Q, K) long, indices into the flattened cells of the primitive's corner cells.
    weights: (Q, K) interpolation weights (bilinear, trilinear or barycentric), >= 0, sum 1.
    local:   (Q, D) local coordinate of the point inside its primitive, each value in [-1, 1].
    """

    corners: Tensor
    weights: Tensor
    local: Tensor


class Lattice:
    """A lattice of cells. Subclasses set `kind`, `perception_size`, `local_dim`, `cell_shape`."""

    kind: str
    perception_size: int
    local_dim: int
    cell_shape: tuple[int, ...]

    @property
    def num_cells(self) -> int:
        return math.prod(self.cell_shape)

    def seed(self, batch: int, channels: int, device=None, dtype=torch.float32) -> Tensor:
        """The seed state, all zeros: (batch, *cell_shape, channels)."""
        return torch.zeros((batch, *self.cell_shape, channels), device=device, dtype=dtype)

    def perceive(self, state: Tensor) -> Tensor:
        """(B, *cells, C) -> (B, *cells, P*C), blocks ordered filter-major."""
        return torch.cat([block for _, block in self.perceive_blocks(state, max_cells=None)], dim=1)

    def perceive_blocks(self, state: Tensor, max_cells: int | None) -> Iterator[tuple[slice, Tensor]]:
        """Yield (rows, perception) for consecutive slices of the first cell axis.

        Each block covers at most about `max_cells` cells (all batch elements counted) so the
        update MLP runs on cache-sized pieces; None means one block.
        """
        raise NotImplementedError

    def locate(self, query) -> Located:
        raise NotImplementedError

    def to(self, device) -> "Lattice":
        raise NotImplementedError


def rows_per_block(num_rows: int, cells_per_row: int, max_cells: int | None) -> int:
    """How many rows of the first cell axis fit in a block of `max_cells` cells (at least 1)."""
    if max_cells is None:
        return num_rows
    return max(1, min(num_rows, max_cells // max(cells_per_row, 1)))


def cartesian_local(frac: Tensor, harmonics: int) -> Tensor:
    """Local coordinate inside a square or cube from the fractional position (Q, d) in [0, 1].

    harmonics == 0: u = 2*frac - 1 (the paper's cartesian coordinate; not continuous across
    cell faces). harmonics == N: [sin(k*pi*u), cos(k*pi*u)] for k = 1..N per axis, which
    takes equal values at u = -1 and u = +1 and so makes decoding C0 across cell faces.
    Returns (Q, d) or (Q, 2*N*d).
    """
    u = frac * 2.0 - 1.0
    if harmonics == 0:
        return u
    k = torch.arange(1, harmonics + 1, device=u.device, dtype=u.dtype) * math.pi
    angles = u.unsqueeze(-1) * k  # (Q, d, N)
    return torch.cat([angles.sin(), angles.cos()], dim=-1).flatten(1)


def _triangular_cdf(x: Tensor, mode: float) -> Tensor:
    """CDF of the triangular law on [0, 1] with the given mode, at x (clamped to [0, 1])."""
    x = x.clamp(0.0, 1.0)
    rising = x * x / mode if mode > 0 else torch.zeros_like(x)
    falling = 1.0 - (1.0 - x) ** 2 / (1.0 - mode)
    return torch.where(x <= mode, rising, falling)


def triangle_local(bary: Tensor) -> Tensor:
    """C0 local coordinate inside a triangle from barycentrics (Q, 3) -> (Q, 3) in [-1, 1].

    Sorting (a = max, c = min, b = 1 - a - c) makes the tuple identical on both sides of a
    shared edge. Each sorted value is then flattened through the CDF of its law under uniform
    sampling: a ~ Tri(1/3, 1, mode 1/2), b ~ Tri(0, 1/2, mode 1/3), c ~ Tri(0, 1/3, mode 0).
    """
    ordered = bary.sort(dim=-1, descending=True).values
    a, c = ordered[:, 0], ordered[:, 2]
    b = 1.0 - a - c
    fa = _triangular_cdf((a - 1.0 / 3.0) * 1.5, 0.25)
    fb = _triangular_cdf(b * 2.0, 2.0 / 3.0)
    fc = _triangular_cdf(c * 3.0, 0.0)
    return torch.stack([fa, fb, fc], dim=-1) * 2.0 - 1.0
