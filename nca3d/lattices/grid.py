"""Periodic square (2D) and cube (3D) lattices.

Cells sit at integer positions. A state is (B, H, W, C) or (B, D, H, W, C); query points are
(x, y[, z]) in cell units with x along the last cell axis, and wrap around (textures tile).
"""

from __future__ import annotations

import itertools
import math
from typing import Iterator

import numpy as np
import torch
from torch import Tensor

from ..jit import compiled
from ..sine import sine_
from .base import (
    Lattice,
    Located,
    cartesian_local,
    cpu_empty,
    rows_per_block,
    transpose_into,
)


def _taps(x: Tensor, dim: int) -> tuple[Tensor, Tensor, Tensor]:
    """The (previous, centre, next) neighbours along `dim` of a padded tensor ('valid' extent)."""
    n = x.shape[dim] - 2
    return x.narrow(dim, 0, n), x.narrow(dim, 1, n), x.narrow(dim, 2, n)


# The filters below write into `out` (a view of the perception) where given, else a fresh tensor,
# and work in place after that: each pass over a cache-sized block is what the perception costs.
# They never run under autograd (_PeriodicFilters' backward is the adjoint).
def _smooth(x: Tensor, dim: int, out: Tensor | None = None) -> Tensor:
    """[1, 2, 1] along dim."""
    prev, centre, nxt = _taps(x, dim)
    return torch.add(prev, nxt, out=out).add_(centre, alpha=2.0)


def _half_smooth(x: Tensor, dim: int) -> Tensor:
    """[1/2, 1, 1/2] along dim."""
    prev, centre, nxt = _taps(x, dim)
    return torch.lerp(prev, nxt, 0.5).add_(centre)


def _diff(x: Tensor, dim: int, out: Tensor | None = None) -> Tensor:
    """[-1, 0, 1] along dim."""
    prev, _, nxt = _taps(x, dim)
    return torch.sub(nxt, prev, out=out)


def _centre(x: Tensor, dim: int) -> Tensor:
    return _taps(x, dim)[1]


def _pair(x: Tensor, dim: int) -> Tensor:
    """[1, 0, 1] along dim."""
    prev, _, nxt = _taps(x, dim)
    return prev + nxt


class _PeriodicFilters(torch.autograd.Function):
    """A grid's perception, state (B, *n, C) -> (B, *n, P*C), computed slab by slab of
    `_padded_slabs`; its backward applies the filters' transpose (`GridLattice._adjoint`) to the
    gradient slab by slab. Autograd through the filters instead records every slice and sum, and
    its backward allocates and fills a zero tensor per slice."""

    @staticmethod
    def forward(ctx, state: Tensor, lattice: "GridLattice", max_cells: int | None) -> Tensor:
        ctx.lattice, ctx.max_cells = lattice, max_cells
        perception = state.new_empty((*state.shape[:-1], lattice.perception_size * state.shape[-1]))
        for rows, slab in lattice._padded_slabs(state, max_cells):
            lattice._filters(slab, perception[:, rows])
        return perception

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None]:
        lattice = ctx.lattice
        state_grad = grad.new_empty((*grad.shape[:-1], grad.shape[-1] // lattice.perception_size))
        for rows, slab in lattice._padded_slabs(grad, ctx.max_cells):
            lattice._adjoint(slab, state_grad[:, rows])
        return state_grad, None, None


FUSED_MULTIPLY_ADD = frozenset({"contract"})  # numba fastmath for the stencil loop


def _fired_stencil(cell_rows, fired_rows, at, cells, neighbours, weights, adjoint):
    """fired_rows[f, p*C + c] += sum_k weights[p, k] cell_rows[row_k, c], row_k the k-th neighbour
    (wrapped) of fired flat cell at[f] = b * cells + cell; with `adjoint`, its transpose into
    cell_rows (compiled by nca3d.jit; the caller zeroes what is written). cell_rows (B * cells, C),
    fired_rows (F, P*C), at (F,), neighbours (cells, K) flat cells, weights (P, K)."""
    channels = cell_rows.shape[1]
    for f in range(at.shape[0]):
        first = at[f] - at[f] % cells  # the batch element's first row
        cell = at[f] - first
        for k in range(neighbours.shape[1]):
            row = first + neighbours[cell, k]
            for p in range(weights.shape[0]):
                w = weights[p, k]
                if w != 0:
                    for c in range(channels):
                        if adjoint:
                            cell_rows[row, c] += w * fired_rows[f, p * channels + c]
                        else:
                            fired_rows[f, p * channels + c] += w * cell_rows[row, c]


class _FiredPerception(torch.autograd.Function):
    """A grid's perception of the fired cells only, state (B, *n, C) -> (F, P*C), as a stencil of
    3^d neighbours (GridLattice.stencil) in one compiled loop; its backward is the loop's transpose.
    float32 CPU tensors with numba only (GridLattice.perceive_rows)."""

    @staticmethod
    def forward(ctx, state: Tensor, rows: Tensor, lattice: GridLattice) -> Tensor:
        neighbours, weights = lattice.stencil()
        flat = state.detach().reshape(-1, state.shape[-1]).contiguous()
        out = state.new_zeros((rows.shape[0], weights.shape[0] * flat.shape[1]))
        compiled(_fired_stencil, FUSED_MULTIPLY_ADD)(flat.numpy(), out.numpy(), rows.contiguous().numpy(),
                                                     lattice.num_cells, neighbours, weights, False)
        ctx.save_for_backward(rows)
        ctx.lattice, ctx.shape = lattice, state.shape
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None]:
        (rows,) = ctx.saved_tensors
        neighbours, weights = ctx.lattice.stencil()
        state_grad = torch.zeros(ctx.shape, dtype=grad.dtype)
        compiled(_fired_stencil, FUSED_MULTIPLY_ADD)(state_grad.view(-1, ctx.shape[-1]).numpy(),
                                                     grad.contiguous().numpy(), rows.contiguous().numpy(),
                                                     ctx.lattice.num_cells, neighbours, weights, True)
        return state_grad, None, None


class GridLattice(Lattice):
    """Shared n-linear location for periodic grids; subclasses define the perception filters."""

    def __init__(self, cell_shape: tuple[int, ...], harmonics: int = 0):
        if any(int(n) < 3 for n in cell_shape):
            raise ValueError(f"grid sizes must be >= 3 cells, got {tuple(cell_shape)}")
        if harmonics < 0:
            raise ValueError("harmonics must be >= 0")
        self.cell_shape = tuple(int(n) for n in cell_shape)
        self.harmonics = int(harmonics)
        dims = len(self.cell_shape)
        self.local_dim = dims if harmonics == 0 else 2 * harmonics * dims
        # Strides of the flattened cell index for axes in query order (x, y[, z]).
        strides_arraywise = [1] * dims
        for axis in range(dims - 2, -1, -1):
            strides_arraywise[axis] = strides_arraywise[axis + 1] * self.cell_shape[axis + 1]
        self._strides_xyz = strides_arraywise[::-1]
        self._stencil: tuple[np.ndarray, np.ndarray] | None = None  # built on first use (stencil)

    def to(self, device) -> "GridLattice":
        return self

    @property
    def sizes_xyz(self) -> tuple[int, ...]:
        """Number of cells along x, y[, z]."""
        return self.cell_shape[::-1]

    def perceive(self, state: Tensor, max_cells: int | None = None) -> Tensor:
        if state.requires_grad:
            # Training: the backward is the filters' own adjoint (_PeriodicFilters), not autograd
            # through every slice and sum of the filters
            return _PeriodicFilters.apply(state, self, max_cells)
        return super().perceive(state, max_cells)

    def perceive_rows(self, state: Tensor, rows: Tensor, max_cells: int | None = None) -> Tensor:
        """Lattice.perceive_rows; on float32 CPU states with numba, only the rows asked for, in one
        compiled stencil loop each way (_FiredPerception): a training step's perception of its fired
        cells (half of them), forward + backward on one thread 1.7x faster than the whole perception
        and the gather of its rows for 4 x 64^2 cells (3.1 -> 1.8 ms), 1.4x for 2 x 24^3."""
        if (state.device.type == "cpu" and state.dtype == torch.float32 and rows.dtype == torch.long
                and compiled(_fired_stencil, FUSED_MULTIPLY_ADD) is not None):
            return _FiredPerception.apply(state, rows, self)
        return super().perceive_rows(state, rows, max_cells)

    def stencil(self) -> tuple[np.ndarray, np.ndarray]:
        """The perception as a stencil: neighbours (cells, 3^d) int32, the flat cell of each cell's
        neighbour at offset k (wrapped; k runs over itertools.product((-1, 0, 1), repeat=d) in array
        axis order), and weights (P, 3^d) float32, filter p's weight of neighbour k, read off the
        lattice's own filters (_filters) applied to a unit impulse at each offset."""
        if self._stencil is None:
            dims = len(self.cell_shape)
            offsets = np.array(list(itertools.product((-1, 0, 1), repeat=dims)))
            coords = np.stack(np.unravel_index(np.arange(self.num_cells), self.cell_shape), axis=1)  # (cells, d)
            wrapped = (coords[:, None, :] + offsets[None]) % np.array(self.cell_shape)
            neighbours = np.ravel_multi_index(tuple(np.moveaxis(wrapped, -1, 0)), self.cell_shape)
            probe = type(self)((3,) * dims)  # a 3^d torus: each offset is a distinct cell
            impulses = torch.zeros((len(offsets), *probe.cell_shape, 1))
            for k, offset in enumerate(offsets):
                impulses[(k, *(offset + 1))] = 1.0
            centre = probe.perceive(impulses)[(slice(None), *(1,) * dims)]  # (3^d, P): filter p at the centre
            self._stencil = (np.ascontiguousarray(neighbours, dtype=np.int32),
                             np.ascontiguousarray(centre.t().numpy(), dtype=np.float32))
        return self._stencil

    def perceive_blocks(self, state: Tensor, max_cells: int | None) -> Iterator[tuple[slice, Tensor]]:
        if state.requires_grad:
            perception = self.perceive(state, max_cells)
            for rows in self._row_blocks(state.shape[0], max_cells):
                yield rows, perception[:, rows]
            return
        for rows, slab in self._padded_slabs(state, max_cells):
            yield rows, self._filters(slab, slab.new_empty(self._block_shape(slab, self.perception_size)))

    def _padded_slabs(self, state: Tensor, max_cells: int | None) -> Iterator[tuple[slice, Tensor]]:
        """(rows, slab): consecutive slices of the first cell axis of state (B, *cells, K), each
        with a one-cell wrapped halo on every cell axis: (B, rows + 2, *(n + 2), K)."""
        rows = self.cell_shape[0]
        # Flat cell indices of one padded cross-section (the later axes wrapped by one cell each side)
        plane = torch.zeros((), dtype=torch.long, device=state.device)
        for size, stride in zip(self.cell_shape[1:], self._strides_xyz[-2::-1]):
            plane = plane.unsqueeze(-1) + (torch.arange(-1, size + 1, device=state.device) % size) * stride
        flat = state.flatten(1, -2)  # (B, cells, K)
        for block in self._row_blocks(state.shape[0], max_cells):
            # The slab with its wrapped halo, gathered at once: padding per slab keeps it in cache
            halo_rows = torch.arange(block.start - 1, block.stop + 1, device=state.device) % rows * (self.num_cells // rows)
            index = halo_rows.view(-1, *[1] * plane.dim()) + plane  # (rows + 2, *padded cross-section)
            yield block, flat.index_select(1, index.reshape(-1)).view(state.shape[0], *index.shape, -1)

    def _row_blocks(self, batch: int, max_cells: int | None) -> Iterator[slice]:
        """Consecutive slices of the first cell axis, each about `max_cells` cells at most."""
        rows = self.cell_shape[0]
        step = rows_per_block(rows, batch * (self.num_cells // rows), max_cells)
        for start in range(0, rows, step):
            yield slice(start, min(rows, start + step))

    @staticmethod
    def _block_shape(padded: Tensor, filters: int) -> tuple[int, ...]:
        """(B, *n, P*C) of a padded slab (B, *(n + 2), C)."""
        return (padded.shape[0], *[size - 2 for size in padded.shape[1:-1]], filters * padded.shape[-1])

    def _filters(self, padded: Tensor, out: Tensor) -> Tensor:
        """Padded (B, *(n + 2), C) -> perception written into out (B, *n, P*C), filter-major."""
        raise NotImplementedError

    def _adjoint(self, padded: Tensor, out: Tensor) -> Tensor:
        """The transpose of `_filters`: padded perception gradients (B, *(n + 2), P*C) -> the state's
        gradient written into out (B, *n, C). Each filter is even or odd, so its transpose is itself
        or its negative."""
        raise NotImplementedError

    def locate(self, points: Tensor) -> Located:
        """Points (Q, d) in cell units (x first, any real value, wrapped) -> Located. float32 CPU
        points without autograd go through one compiled loop (nca3d.jit: 3-4x the torch passes
        of `_locate_rows`, the reference, which the others take)."""
        kernel = None
        if points.device.type == "cpu" and points.dtype == torch.float32 and not points.requires_grad:
            kernel = compiled(_locate_points)
        if kernel is not None:
            count, dims = points.shape
            local = self.harmonics * 2 * dims or dims
            located = Located(corners=cpu_empty((count, 1 << dims), np.int32),
                              weights=cpu_empty((count, 1 << dims)), local=cpu_empty((count, local)))
            kernel(points.contiguous().numpy(), np.array(self.sizes_xyz), np.array(self._strides_xyz),
                   self.harmonics, located.corners.numpy(), located.weights.numpy(), located.local.numpy())
            if self.harmonics:
                sine_(located.local)
            return located
        rows = transpose_into(points, points.new_empty(points.shape[::-1]))  # (d, Q): one row per axis
        cell = torch.floor(rows)
        return self._locate_rows(cell, rows.sub_(cell))

    def locate_cells(self, cell: Tensor, frac: Tensor) -> Located:
        """Explicit primitive: lower corner cell (Q, d) long and position inside it frac (Q, d) in [0, 1]."""
        return self._locate_rows(cell.t(), frac.t())

    def _locate_rows(self, cell: Tensor, frac: Tensor) -> Located:
        """Located from the lower corner cells (d, Q) (integer values, any dtype) and the positions
        inside them frac (d, Q) in [0, 1], one row per axis (x first).

        Corner k of the 2^d is the k-th of itertools.product((0, 1), repeat=d) (x first): per axis,
        the low or high cell index (wrapped) and weight 1 - frac or frac as a (2, Q) pair, combined
        by broadcasting into (2, ..., 2, Q) arrays (Q innermost: one pass per axis) and transposed
        into rows once; corners int32. local is a (Q, D) view of per-axis rows where harmonics is 0."""
        dims, count = frac.shape
        index = weight = None
        for axis, (size, stride) in enumerate(zip(self.sizes_xyz, self._strides_xyz)):
            pair = torch.empty((2, count), dtype=cell.dtype, device=cell.device)
            high = torch.add(torch.remainder(cell[axis], size, out=pair[0]), 1, out=pair[1])
            high.masked_fill_(high == size, 0)
            pair = pair.int().mul_(stride)
            weights = frac[axis].expand(2, count).clone()
            weights[0].neg_().add_(1.0)
            shape = [1] * axis + [2] + [1] * (dims - 1 - axis) + [count]
            index = pair.view(shape) if index is None else index + pair.view(shape)
            weight = weights.view(shape) if weight is None else weight * weights.view(shape)
        corners = 1 << dims
        return Located(corners=transpose_into(index.view(corners, count), index.new_empty((count, corners))),
                       weights=transpose_into(weight.view(corners, count), weight.new_empty((count, corners))),
                       local=cartesian_local(frac.t(), self.harmonics))

    def sample_points(self, scale: float, device=None) -> Tensor:
        """Pixel/voxel centres of an output `scale` times the lattice resolution: (prod(n*scale), d).

        Ordered like a C-contiguous array of shape (*cell_shape * scale), so a decode reshapes
        straight to an image (H, W) or volume (D, H, W).
        """
        axes = [(torch.arange(round(n * scale), device=device, dtype=torch.float32) + 0.5) / scale
                for n in self.cell_shape]
        mesh = torch.meshgrid(*axes, indexing="ij")
        return torch.stack([m.reshape(-1) for m in mesh[::-1]], dim=-1)


def _locate_points(points, sizes, strides, harmonics, corners, weights, local):
    """GridLattice._locate_rows for float32 points (Q, d) as one loop (compiled by nca3d.jit), into
    corners (Q, 2^d) int32, weights (Q, 2^d) and local (Q, D) float32: the same float32 arithmetic.
    With harmonics, local holds the angles whose sines it takes (cos x as sin(x + pi/2))."""
    count, dims = points.shape
    one, two = np.float32(1.0), np.float32(2.0)
    for q in range(count):
        corners[q, 0], weights[q, 0] = 0, one
        for axis in range(dims):
            position = points[q, axis]
            cell = np.floor(position)
            frac = position - cell
            below = int(cell)
            if below < 0 or below >= sizes[axis]:  # wrap only off the period (an integer division)
                below %= sizes[axis]
            above = below + 1 if below + 1 < sizes[axis] else 0
            low, high = below * strides[axis], above * strides[axis]
            # double the corners so far (the earlier axes' bits): each with this axis low, then high;
            # from the last down, as corner e moves to 2e and 2e + 1
            for e in range((1 << axis) - 1, -1, -1):
                index, weight = corners[q, e], weights[q, e]
                corners[q, 2 * e + 1], weights[q, 2 * e + 1] = index + high, weight * frac
                corners[q, 2 * e], weights[q, 2 * e] = index + low, weight * (one - frac)
            u = frac * two - one
            if harmonics == 0:
                local[q, axis] = u
            for k in range(harmonics):  # the angles; the caller takes their sines in one pass
                angle = u * (np.float32(k + 1) * np.float32(math.pi))
                local[q, axis * 2 * harmonics + k] = angle
                local[q, axis * 2 * harmonics + harmonics + k] = angle + np.float32(math.pi / 2)


class Grid2D(GridLattice):
    """Periodic squares. Perception: identity, Sobel-x, Sobel-y, Laplacian (P = 4)."""

    kind = "grid2d"
    perception_size = 4

    def __init__(self, size: int | tuple[int, int] = 128, harmonics: int = 0):
        shape = (size, size) if isinstance(size, int) else tuple(size)
        if len(shape) != 2:
            raise ValueError(f"Grid2D needs 2 sizes (H, W), got {shape}")
        super().__init__(shape, harmonics)

    def _filters(self, padded: Tensor, out: Tensor) -> Tensor:
        y, x = 1, 2
        identity, sobel_x, sobel_y, laplacian = out.chunk(4, dim=-1)
        identity.copy_(_centre(_centre(padded, y), x))
        smooth_y = _smooth(padded, y)
        _diff(smooth_y, x, out=sobel_x)
        _smooth(_diff(padded, y), x, out=sobel_y)
        _smooth(smooth_y, x, out=laplacian).add_(identity, alpha=-16.0)
        return out

    def _adjoint(self, padded: Tensor, out: Tensor) -> Tensor:
        y, x = 1, 2
        g_identity, g_sobel_x, g_sobel_y, g_laplacian = padded.chunk(4, dim=-1)
        # centre(g0 - 16 g3) + smooth_x(smooth_y(g3) - diff_y(g2)) - diff_x(smooth_y(g1)): the odd
        # Sobels negated
        even_x = _smooth(g_laplacian, y).sub_(_diff(g_sobel_y, y))
        _smooth(even_x, x, out=out).sub_(_diff(_smooth(g_sobel_x, y), x))
        return out.add_(_centre(_centre(g_identity, y), x)).add_(_centre(_centre(g_laplacian, y), x), alpha=-16.0)


class Grid3D(GridLattice):
    """Periodic cubes. Perception: identity, Sobel x/y/z (/2), 27-point Laplacian (/8) (P = 5)."""

    kind = "grid3d"
    perception_size = 5

    def __init__(self, size: int | tuple[int, int, int] = 64, harmonics: int = 0):
        shape = (size, size, size) if isinstance(size, int) else tuple(size)
        if len(shape) != 3:
            raise ValueError(f"Grid3D needs 3 sizes (D, H, W), got {shape}")
        super().__init__(shape, harmonics)

    def _filters(self, padded: Tensor, out: Tensor) -> Tensor:
        z, y, x = 1, 2, 3
        identity, sobel_x, sobel_y, sobel_z, laplacian = out.chunk(5, dim=-1)
        identity.copy_(_centre(_centre(_centre(padded, z), y), x))
        # The Sobel filters' 1/2 rides on one half-weight [1/2, 1, 1/2] smoothing each
        half_z = _half_smooth(padded, z)
        half_zy = _smooth(half_z, y)  # [1,2,1]_y [1/2,1,1/2]_z
        _diff(half_zy, x, out=sobel_x)
        _smooth(_diff(half_z, y), x, out=sobel_y)
        _smooth(_half_smooth(_diff(padded, z), y), x, out=sobel_z)
        # 27-point Laplacian (corners 2, edges 3, faces 6, centre -88) / 8, written separably as
        # (1.5 [1,2,1]^3 + 0.5 [1,0,1]^3 - 100 delta) / 8.
        (_smooth(half_zy, x, out=laplacian).mul_(0.375).add_(_pair(_pair(_pair(padded, z), y), x), alpha=0.0625)
         .add_(identity, alpha=-12.5))
        return out

    def _adjoint(self, padded: Tensor, out: Tensor) -> Tensor:
        z, y, x = 1, 2, 3
        g_identity, g_sobel_x, g_sobel_y, g_sobel_z, g_laplacian = padded.chunk(5, dim=-1)
        # Everything smoothed along x at the end, the odd Sobels negated
        even_x = (_smooth(_half_smooth(g_laplacian, z), y).mul_(0.375)
                  .sub_(_diff(_half_smooth(g_sobel_y, z), y)).sub_(_half_smooth(_diff(g_sobel_z, z), y)))
        _smooth(even_x, x, out=out).sub_(_diff(_smooth(_half_smooth(g_sobel_x, z), y), x))
        out.add_(_pair(_pair(_pair(g_laplacian, z), y), x), alpha=0.0625)
        return (out.add_(_centre(_centre(_centre(g_identity, z), y), x))
                .add_(_centre(_centre(_centre(g_laplacian, z), y), x), alpha=-12.5))
