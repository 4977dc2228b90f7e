"""Dense-grid decoding: a grown volume state decoded at every voxel centre of a res^3 grid over
its periodic cube, streamed in chunks into preallocated arrays (density and colour).

The separable decoder exploits that the voxels' cells, trilinear weights and local coordinates
factor per axis (3.7x faster than the generic locate + decode, which stays as method="generic").
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import NCA3DError

DEFAULT_CHUNK = 65536  # query points per decoder call (same as nca3d.core.model.DECODE_CHUNK)
COLOR_SPACES = ("linear", "srgb")


def check_volume_model(model, source: str = "the model") -> None:
    """Refuse anything but a volume model with rgb + density outputs."""
    domain = model.config.domain
    if domain != "volume":
        kind = {"2d": "a 2D texture", "mesh": "a mesh texture"}.get(domain, f"a '{domain}'")
        raise NCA3DError(f"{source} is {kind} model; volume export needs a volume model "
                         f"(made with 'nca3d new --domain volume' or 'nca3d train --domain volume')")
    slices = model.channel_slices()
    missing = [name for name in ("rgb", "density") if name not in slices]
    if missing:
        raise NCA3DError(f"{source} has no {' and '.join(missing)} output; volume export needs rgb + density")


def volume_points(start: int, stop: int, res: int, lattice, device=None) -> torch.Tensor:
    """Cell-unit query points (q, 3) = (x, y, z) of the voxel centres with flat indices
    [start, stop) of a C-ordered (X, Y, Z) array of res^3 voxels spanning the whole lattice."""
    index = torch.arange(start, stop, device=device, dtype=torch.int64)
    ijk = torch.stack([index // (res * res), (index // res) % res, index % res], dim=-1)
    scale = torch.tensor([res / n for n in lattice.sizes_xyz], device=device, dtype=torch.float32)
    return (ijk.to(torch.float32) + 0.5) / scale


def srgb_to_linear(values: torch.Tensor) -> torch.Tensor:
    """The sRGB EOTF (values >= 0; above 1 the power law continues)."""
    return torch.where(values <= 0.04045, values / 12.92, ((values + 0.055) / 1.055).pow(2.4))


class _SeparableDecoder:
    """Decodes voxel centres of a res^3 grid over a periodic cube lattice, exploiting that
    their cells, trilinear weights and local coordinates factor per axis.

    Per block of x slices it interpolates the state along x into one (y, z) plane per slice,
    then takes the 4-corner bilinear (y, z) interpolation of each voxel in one embedding_bag
    (a fused weighted gather) with (y, z) corner tables computed once; the local coordinates
    are per-axis tables too. The LPPN and the output activations are the model's own, so the
    values equal the model's decode at the same points up to float rounding (tested). All
    per-block buffers are allocated once and reused.
    """

    def __init__(self, model, state: torch.Tensor, lattice, res: int, chunk: int):
        from ..lattices.base import cartesian_local

        self.model, self.res = model, res
        device = state.device
        sizes = lattice.sizes_xyz  # cells along x, y, z
        self.by_x = state[0].permute(2, 1, 0, 3).contiguous()  # (x, y, z, C): a (y, z) plane per x cell
        channels = self.by_x.shape[-1]
        axes = []
        for n in sizes:
            scale = torch.tensor(res / n, device=device, dtype=torch.float32)
            coord = (torch.arange(res, device=device, dtype=torch.float32) + 0.5) / scale
            cell = torch.floor(coord)
            frac = coord - cell
            low = torch.remainder(cell.long(), n)
            axes.append((low.tolist(), torch.remainder(low + 1, n).tolist(), frac,
                         cartesian_local(frac.unsqueeze(1), lattice.harmonics)))
        (self.x_low, self.x_high, x_frac, self.x_local), (y_low, y_high, y_frac, y_local), \
            (z_low, z_high, z_frac, z_local) = axes
        self.x_frac = x_frac.tolist()
        y_low, y_high, z_low, z_high = (torch.tensor(v, device=device) for v in (y_low, y_high, z_low, z_high))
        plane_cells = sizes[1] * sizes[2]
        per_slice = res * res
        # Blocks: whole slices (at most `chunk` voxels and ~64 MiB of planes), or parts of one slice.
        plane_bytes = plane_cells * channels * 4
        self.slices_per_block = max(1, min(chunk // per_slice, (64 << 20) // plane_bytes)) if per_slice <= chunk else 0
        self.rows_per_block = min(per_slice, chunk)
        block_slices = max(1, self.slices_per_block)
        # (y, z) tables over the res^2 voxels of a slice (z fastest), repeated for a block's slices.
        corners_y = torch.stack([y_low, y_low, y_high, y_high], dim=-1)[:, None, :]
        corners_z = torch.stack([z_low, z_high, z_low, z_high], dim=-1)[None, :, :]
        yz_index = (corners_y * sizes[2] + corners_z).reshape(per_slice, 4)
        offsets = (torch.arange(block_slices, device=device) * plane_cells).view(-1, 1, 1)
        self.index = (yz_index.unsqueeze(0) + offsets).reshape(-1, 4)
        wy = torch.stack([1 - y_frac, 1 - y_frac, y_frac, y_frac], dim=-1)[:, None, :]
        wz = torch.stack([1 - z_frac, z_frac, 1 - z_frac, z_frac], dim=-1)[None, :, :]
        self.weight = (wy * wz).reshape(1, per_slice, 4).expand(block_slices, -1, -1).reshape(-1, 4).contiguous()
        self.yz_local = torch.cat([y_local[:, None, :].expand(res, res, -1),
                                   z_local[None, :, :].expand(res, res, -1)], dim=-1).reshape(per_slice, -1)
        self.local_dim = self.x_local.shape[1] + self.yz_local.shape[1]
        self.planes = torch.empty((block_slices, sizes[1], sizes[2], channels), device=device)
        block_points = block_slices * self.rows_per_block
        self.features = torch.empty((block_points, self.local_dim + channels), device=device)

    def blocks(self) -> Iterator[tuple[int, int, int, int]]:
        """(x0, x1, p0, p1): voxels of slices x0..x1-1 at in-slice positions p0..p1-1, in flat
        (x-major) order, each block holding at most about `chunk` voxels."""
        per_slice = self.res * self.res
        if self.slices_per_block:
            for x0 in range(0, self.res, self.slices_per_block):
                yield x0, min(self.res, x0 + self.slices_per_block), 0, per_slice
        else:
            for x0 in range(self.res):
                for p0 in range(0, per_slice, self.rows_per_block):
                    yield x0, x0 + 1, p0, min(per_slice, p0 + self.rows_per_block)

    def decode(self, x0: int, x1: int, p0: int, p1: int) -> torch.Tensor:
        """Activated outputs (q, K) of the block's voxels, q = (x1 - x0) * (p1 - p0)."""
        slices, count = x1 - x0, p1 - p0
        q = slices * count
        channels = self.by_x.shape[-1]
        for s, x in enumerate(range(x0, x1)):
            torch.lerp(self.by_x[self.x_low[x]], self.by_x[self.x_high[x]], self.x_frac[x], out=self.planes[s])
        planes = self.planes.view(-1, channels)
        if self.slices_per_block:
            index, weight = self.index[:q], self.weight[:q]
        else:
            index, weight = self.index[p0:p1], self.weight[p0:p1]
        features = self.features[:q].view(slices, count, -1)
        lx = self.x_local.shape[1]
        features[:, :, :lx] = self.x_local[x0:x1, None, :]
        features[:, :, lx:self.local_dim] = self.yz_local[p0:p1]
        features.view(q, -1)[:, self.local_dim:] = F.embedding_bag(index, planes, per_sample_weights=weight,
                                                                    mode="sum")
        return self.model.activate(self.model.lppn(self.features[:q]))


def decode_volume(model, state: torch.Tensor, lattice, res: int, *, density_factor: float = 1.0,
                  color_space: str = "linear", chunk: int = DEFAULT_CHUNK, out=None, progress=None,
                  label: str = "", method: str = "separable") -> tuple[np.ndarray, np.ndarray]:
    """Decode state[0] at the centres of a res^3 grid over the whole lattice.

    Returns float32 C-contiguous arrays density (X, Y, Z) (times `density_factor`) and color
    (X, Y, Z, 3), index (i, j, k) = voxel (x, y, z). Each chunk of about `chunk` points is
    decoded and copied into the arrays before the next one starts, so decoder memory is one
    chunk's worth; `out` = (density, color) reuses preallocated arrays. method: "separable"
    (fast, see _SeparableDecoder) or "generic" (the model's locate + decode_located).
    """
    if color_space not in COLOR_SPACES:
        raise NCA3DError(f"unknown colour space '{color_space}'; use {' or '.join(COLOR_SPACES)}")
    if method not in ("separable", "generic"):
        raise ValueError("method must be 'separable' or 'generic'")
    model.check_lattice(lattice)
    chunk = max(1, int(chunk))
    shape = (res, res, res)
    if out is None:
        density, color = np.empty(shape, np.float32), np.empty(shape + (3,), np.float32)
    else:
        density, color = out
        if density.shape != shape or color.shape != shape + (3,) or density.dtype != np.float32 \
                or color.dtype != np.float32 or not (density.flags.c_contiguous and color.flags.c_contiguous):
            raise ValueError("out arrays must be C-contiguous float32 (res, res, res) and (res, res, res, 3)")
    density_flat = torch.from_numpy(density.reshape(-1))
    color_flat = torch.from_numpy(color.reshape(-1, 3))
    slices = model.channel_slices()
    d_slice, c_slice = slices["density"], slices["rgb"]
    one = state[:1]
    device = one.device
    total = res ** 3
    with torch.inference_mode():
        if method == "separable":
            decoder = _SeparableDecoder(model, one, lattice, res, chunk)
            per_slice = res * res
            ranges = ((x0 * per_slice + p0, (x1 - 1) * per_slice + p1, (x0, x1, p0, p1))
                      for x0, x1, p0, p1 in decoder.blocks())
        else:
            ranges = ((start, min(total, start + chunk), None) for start in range(0, total, chunk))
        for start, stop, block in ranges:
            if block is not None:
                values = decoder.decode(*block)
            else:
                located = lattice.locate(volume_points(start, stop, res, lattice, device))
                values = model.decode_located(one, located)[0]  # (q, K)
                del located
            dens = values[:, d_slice].reshape(-1)
            if density_factor != 1.0:
                dens = dens * density_factor
            rgb = values[:, c_slice]
            if color_space == "linear":
                rgb = srgb_to_linear(rgb)
            density_flat[start:stop].copy_(dens)
            color_flat[start:stop].copy_(rgb)
            del values, dens, rgb
            if progress is not None:
                progress.update("decode", stop / total, f"{label}{stop:,}/{total:,} voxels")
    return density, color
