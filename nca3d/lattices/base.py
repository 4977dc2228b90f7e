"""What every lattice provides: perception of neighbours and location of query points.

States are channels-last: (B, *cells, C), with `cells` the lattice's array shape.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch
from torch import Tensor

from ..jit import compiled


@dataclass
class Located:
    """Where query points fall in a lattice.

    corners: (Q, K) integer (int32 from grids: it halves what the decode's gathers move, else long),
             indices into the flattened cells of the primitive's corner cells.
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

    def perceive(self, state: Tensor, max_cells: int | None = None) -> Tensor:
        """(B, *cells, C) -> (B, *cells, P*C), filter-major, in one tensor (computed in blocks of
        about `max_cells` cells where the lattice blocks its work)."""
        blocks = [block for _, block in self.perceive_blocks(state, max_cells)]
        return blocks[0] if len(blocks) == 1 else torch.cat(blocks, dim=1)

    def perceive_rows(self, state: Tensor, rows: Tensor, max_cells: int | None = None) -> Tensor:
        """The perception of some cells only: state (B, *cells, C), rows (F,) long indices of the flat
        (B * cells) cells -> (F, P*C), differentiable for the state. Here the whole perception's
        rows (the reference); grids compute only the rows asked for."""
        perception = self.perceive(state, max_cells)
        return perception.reshape(-1, perception.shape[-1]).index_select(0, rows)

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


def cpu_empty(shape: tuple[int, ...], dtype=np.float32) -> Tensor:
    """An uninitialised CPU tensor on numpy's memory: numpy asks the kernel for transparent huge
    pages on large arrays (madvise), so first writes to a large one fault ~20x fewer times (a 37 MiB
    decode output: 3 ms instead of 12 here)."""
    return torch.from_numpy(np.empty(shape, dtype))


def transpose_into(source: Tensor, out: Tensor) -> Tensor:
    """out (b, a) = source (a, b) transposed; returns out. On the CPU numpy copies it (3x faster
    there than torch's strided copy)."""
    if out.device.type == "cpu" and not (source.requires_grad or out.requires_grad):
        np.copyto(out.numpy(), source.numpy().T)
    else:
        out.copy_(source.t())
    return out


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


# Per sorted barycentric (max, middle, min): (scale, shift) onto [0, 1] and the mode of its law there.
_TRIANGLE_LAWS = ((1.5, -0.5, 0.25), (2.0, 0.0, 2.0 / 3.0), (3.0, 0.0, 0.0))


def triangle_local(bary: Tensor) -> Tensor:
    """C0 local coordinate inside a triangle from barycentrics (Q, 3) -> (Q, 3) in [-1, 1] (a view
    of per-column rows (3, Q)).

    Sorting (a = max, c = min, b = 1 - a - c) makes the tuple identical on both sides of a
    shared edge. Each sorted value is then flattened through the CDF of its law under uniform
    sampling: a ~ Tri(1/3, 1, mode 1/2), b ~ Tri(0, 1/2, mode 1/3), c ~ Tri(0, 1/3, mode 0).
    On [0, 1] with mode m, 2 CDF(x) - 1 = 2 min(x, m)^2 / m + 1 - 2m - 2 (1 - max(x, m))^2 / (1 - m)
    (the first term 0 where m = 0): on the three rows at once, in place (Q innermost: rows of (Q, 3)
    columns cost several times more per op). float32 CPU barycentrics without autograd take
    `_triangle_local_points` (one compiled loop) where numba imports.
    """
    if bary.device.type == "cpu" and bary.dtype == torch.float32 and not bary.requires_grad:
        kernel = compiled(_triangle_local_points)
        if kernel is not None:  # one compiled loop (nca3d.jit), the same float32 arithmetic
            out = cpu_empty(tuple(bary.shape))
            kernel(bary.contiguous().numpy(), np.array(_TRIANGLE_LAWS, np.float32), out.numpy())
            return out
    b0, b1, b2 = bary.unbind(-1)
    rows = bary.new_empty((3, bary.shape[0]))
    torch.maximum(torch.maximum(b0, b1), b2, out=rows[0])
    torch.minimum(torch.minimum(b0, b1), b2, out=rows[2])
    torch.add(rows[0], rows[2], out=rows[1]).neg_().add_(1.0)
    scale, shift, mode = (torch.tensor(law, dtype=bary.dtype, device=bary.device).view(3, 1)
                          for law in zip(*_TRIANGLE_LAWS))
    rows.mul_(scale).add_(shift).clamp_(0.0, 1.0)
    low = torch.minimum(rows, mode).square_().mul_(torch.where(mode > 0, 2.0 / mode, 0.0)).add_(1.0 - 2.0 * mode)
    return low.sub_(torch.maximum(rows, mode).neg_().add_(1.0).square_().mul_(2.0 / (1.0 - mode))).t()


def _triangle_local_points(bary, laws, out):
    """triangle_local of float32 barycentrics (Q, 3) into out (Q, 3) as one loop (compiled by
    nca3d.jit): per point the sorted values, each through its law's flattening, in the torch
    passes' float32 order. laws: _TRIANGLE_LAWS (3, 3) float32 rows (scale, shift, mode)."""
    zero, one, two = np.float32(0.0), np.float32(1.0), np.float32(2.0)
    for q in range(bary.shape[0]):
        b0, b1, b2 = bary[q, 0], bary[q, 1], bary[q, 2]
        high, low = max(max(b0, b1), b2), min(min(b0, b1), b2)
        sorted_values = (high, -(high + low) + one, low)
        for k in range(3):
            scale, shift, mode = laws[k, 0], laws[k, 1], laws[k, 2]
            x = min(max(sorted_values[k] * scale + shift, zero), one)
            below = min(x, mode)
            rising = below * below * (two / mode if mode > zero else zero) + (one - two * mode)
            above = -max(x, mode) + one
            out[q, k] = rising - above * above * (two / (one - mode))
