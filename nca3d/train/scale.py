"""Automatic scale: how large the exemplar's features are, and the lattice and zoom that make them
land at the size in cells the NCA grows best.

The feature size is the exemplar's correlation length: the integral, from 0 to its first zero,
of the radially averaged autocorrelation of its colour (autocovariance summed over channels over
the total variance; linear, i.e. zero-padded and divided by the overlap, so a photo that does
not tile is not read as one that does). Unlike the half-width of the autocorrelation, which fine
grain decides alone, the integral weighs each scale by the variance it carries: a pebble
conglomerate's pebbles count as much as their grain does.

The target comes from the bundled library and the runs of issue 19, each converted to cells of
the lattice a render spans (lattice cells x zoom / exemplar px):
- right by eye and score: granite 1.1 cells (grid 64), gravel 1.5 (zoom 3), lava flow 1.1
  (grid 32), stone wall 1.0, flaking rust 0.9, lava cells on the mesh 0.8, ore 0.8, rust 2.9
  (grid 48);
- wrong: eroded concrete on the mesh 0.4 (rings, stripes), wood shingles 0.6 (small scales until
  trained twice as long), a weathered rock at grid 64 (a crack network 5-10x too small; right at
  grid 32).
So features land at about one cell (`TARGET_CELLS`); 0.4-0.6 is too small.

The lattice also bounds how much exemplar one cell holds (`MAX_PX_PER_CELL`): the decoder draws
within-cell detail well to ~13 exemplar px per cell and the cells show as a grid from ~30 (lava
flow, coral and rust with no flags on a 32-cell lattice over 1024 px: 32 px per cell, a faint cell
grid and washed-out colours; rust at grid 48, 21 px per cell, right by eye). So large soft
features on a large exemplar get more cells (features above one cell) rather than bigger cells.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import NamedTuple

import numpy as np
import torch

TARGET_CELLS = 1.0  # the correlation length, in lattice cells, the NCA grows best
MEASURE_SIDE = 1024  # larger exemplars are box-averaged down to about this before measuring
MIN_VIEW_PX = 128  # zoom keeps at least this many exemplar px per lattice view
MAX_ZOOM = 4.0
MAX_PX_PER_CELL = 22.0  # a chosen lattice gives no cell more than this many exemplar px (see above)
DEFAULT_GRID = {"2d": 64, "volume": 64, "mesh": 64}  # 2d / volume: cells per side; mesh: icosphere frequency
MIN_GRID = {"2d": 32, "volume": 16, "mesh": 32}
KEEP_DEFAULT = 0.1  # a lattice within 10% of the default keeps the default
PERIOD_PEAK = 0.4  # a repeat: the autocorrelation peaks this high again (measured: regular 0.46-0.88,
# stochastic <= 0.31 (marble, a concrete height map); most stochastic <= 0.15)
MIN_PERIODS = 4  # zoom keeps at least this many repeats of a regular pattern per view


VIEW_CELLS = {"mesh": 64, "volume": 32}  # at most this many cells across one loss view (see trainer.make_task)
# Zoom below 1 where a view can span fewer cells of the lattice: on the icosphere a view is a window
# on the sphere, so zoom z < 1 narrows it to z x VIEW_CELLS cells over the whole exemplar (features
# 1/z x smaller in cells). 2D views are the whole grid and volume crops are periodic: zoom >= 1 there.
MIN_ZOOM = {"mesh": 0.5}


def view_cells(domain: str, grid: int) -> int:
    """Lattice cells across one loss view: the whole 2D grid; on the icosphere and in a volume at
    most VIEW_CELLS (a volume trains on a periodic crop of that many cells)."""
    return min(VIEW_CELLS.get(domain, grid), grid)


def min_zoom(domain: str) -> float:
    """The smallest zoom a domain takes (MIN_ZOOM; 1 where a view cannot narrow)."""
    return MIN_ZOOM.get(domain, 1.0)


def exemplar_zoom(zoom: float) -> float:
    """A full view spans 1/exemplar_zoom of the exemplar: zoom, or 1 where zoom < 1 narrows the view instead."""
    return max(1.0, zoom)


def view_span(domain: str, grid: int, zoom: float) -> float:
    """Lattice cells across one loss view at `zoom`: view_cells, narrowed by a zoom below 1."""
    return view_cells(domain, grid) * min(1.0, zoom)


def _correlation(image: torch.Tensor) -> tuple[torch.Tensor, int] | None:
    """The normalised linear autocorrelation (2h, 2w) of an image (C, H, W) box-reduced by `factor`
    to about MEASURE_SIDE (index (dy, dx) modulo the size: the shift), and the factor; None for an
    image without variation."""
    pixels = image.detach().to(torch.float64).cpu()
    factor = max(1, round(min(pixels.shape[-2:]) / MEASURE_SIDE))
    if factor > 1:
        pixels = torch.nn.functional.avg_pool2d(pixels[None], factor)[0]
    centred = pixels - pixels.mean(dim=(-2, -1), keepdim=True)
    variance = float((centred ** 2).mean(dim=(-2, -1)).sum())
    if variance < 1e-10:
        return None
    h, w = centred.shape[-2:]
    spectrum = torch.fft.rfft2(centred, s=(2 * h, 2 * w))
    covariance = torch.fft.irfft2(spectrum.abs() ** 2, s=(2 * h, 2 * w)).sum(0)  # (2h, 2w), summed over channels
    overlap = (h - _shifts(2 * h)).clamp(min=1)[:, None] * (w - _shifts(2 * w)).clamp(min=1)[None, :]
    return covariance / overlap / variance, factor


def _shifts(n: int) -> torch.Tensor:
    """The shift each index of a length-n cyclic correlation axis stands for."""
    return torch.minimum(torch.arange(n), n - torch.arange(n)).to(torch.float64)


def _radial(correlation: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """A _correlation's radial mean and radial maximum (over directions) up to half the side."""
    h, w = correlation.shape[0] // 2, correlation.shape[1] // 2
    radius = torch.sqrt(_shifts(2 * h)[:, None] ** 2 + _shifts(2 * w)[None, :] ** 2).round().long()
    reach = min(h, w) // 2
    inside = radius <= reach
    totals = torch.bincount(radius[inside], correlation[inside], minlength=reach + 1)
    counts = torch.bincount(radius[inside], minlength=reach + 1).clamp(min=1)
    largest = torch.full((reach + 1,), -np.inf, dtype=torch.float64).scatter_reduce(
        0, radius[inside], correlation[inside], "amax")
    return (totals / counts).numpy(), largest.numpy()


def _first_zero(profile: np.ndarray) -> int:
    negative = np.nonzero(profile <= 0)[0]
    return int(negative[0]) if len(negative) else len(profile)


class ScaleMeasures(NamedTuple):
    """What scale_measures finds in an image, in px (None: not found)."""

    length: float | None  # the correlation length
    period: float | None  # a regular pattern's repeat distance in its best direction
    repeats: tuple[float | None, float | None] = (None, None)  # ... along its rows and along its columns


def scale_measures(image: torch.Tensor) -> ScaleMeasures:
    """The correlation length, period and axis repeats in px of an image (C, H, W), from one autocorrelation.

    The correlation length is the integral of the radially averaged, normalised autocorrelation up
    to its first zero (at most a quarter of the side); None for an image without variation. The
    period is the repeat distance of a regular pattern: where the autocorrelation, in the best
    direction, peaks again at least PERIOD_PEAK beyond 1.5x its first zero (tiles, bricks, knit),
    measured up to half the side; None for a stochastic texture. The repeats are those along the
    rows and the columns (_axis_repeat), each None where the pattern does not repeat along that
    axis (a stochastic texture, a pattern in perspective)."""
    found = _correlation(image)
    if found is None:
        return ScaleMeasures(None, None)
    correlation, factor = found
    mean, largest = _radial(correlation)
    quarter = mean[: len(mean) // 2 + 1]
    length = float(quarter[:_first_zero(quarter)].sum()) * factor
    start = int(np.ceil(1.5 * max(_first_zero(mean), 1)))
    if start >= len(largest):
        return ScaleMeasures(length, None)
    peak = start + int(np.argmax(largest[start:]))
    h, w = correlation.shape[0] // 2, correlation.shape[1] // 2
    repeats = (_axis_repeat(correlation[0, : w // 2 + 2].numpy()),  # along the rows, then the columns
               _axis_repeat(correlation[: h // 2 + 2, 0].numpy()))
    return ScaleMeasures(length, float(peak * factor) if largest[peak] >= PERIOD_PEAK else None,
                         tuple(None if r is None else r * factor for r in repeats))


def correlation_length(image: torch.Tensor) -> float | None:
    """The correlation length in px of an image (C, H, W) (see scale_measures)."""
    return scale_measures(image)[0]


def period(image: torch.Tensor) -> float | None:
    """The repeat distance in px of a regular pattern in an image (C, H, W) (see scale_measures)."""
    return scale_measures(image)[1]


REPEAT_DIP = 0.5  # a repeat's peak stands out: the autocorrelation falls to this share of it on the way


def _axis_repeat(profile: np.ndarray) -> float | None:
    """The repeat distance along one axis of an autocorrelation (`profile`: shifts 0, 1, ...): its
    first local maximum of at least PERIOD_PEAK that it fell to REPEAT_DIP of on the way (the highest
    within a quarter of it), refined by the farthest multiple k of it that peaks as high (its shift
    over k, the peak placed to a fraction of a px by a parabola); None for no repeat."""
    lowest = np.minimum.accumulate(profile)
    peaks = [i for i in range(1, len(profile) - 1) if profile[i] >= PERIOD_PEAK
             and lowest[i] <= REPEAT_DIP * profile[i] and profile[i] >= profile[i - 1] and profile[i] >= profile[i + 1]]
    if not peaks:
        return None

    def highest_near(shift: float) -> int | None:
        near = [i for i in peaks if abs(i - shift) <= peaks[0] / 4]
        return max(near, key=lambda i: profile[i]) if near else None

    repeat = highest_near(peaks[0])
    at, multiple = repeat, 1
    for k in range(2, int(len(profile) / repeat) + 1):
        found = highest_near(k * repeat)
        if found is not None:
            at, multiple = found, k
    before, peak, after = profile[at - 1: at + 2]
    curvature = before - 2 * peak + after
    offset = 0.5 * (before - after) / curvature if curvature < 0 else 0.0
    return (at + offset) / multiple


def axis_repeats(image: torch.Tensor) -> tuple[float | None, float | None]:
    """(across, down) repeat distances in px of a regular pattern in an image (C, H, W) (see scale_measures)."""
    return scale_measures(image).repeats


TORUS_RANGE = 0.1  # fit_torus moves a chosen zoom at most this share (KEEP_DEFAULT's "the same scale")


def torus_strain(view_px: float, repeats) -> float:
    """How far a view `view_px` exemplar px wide is from holding whole repeats (`repeats`: px, or
    None, per axis): the largest |view - n repeats| / view over the axes, n >= 1 the nearest count."""
    return max((abs(view_px - max(1, round(view_px / r)) * r) / view_px for r in repeats if r), default=0.0)


def fit_torus(zoom: float, side_px: int, repeats, max_zoom: float) -> float:
    """A 2D lattice is a torus, so a regular pattern grows on it without a seam only with whole
    repeats across a view (side_px / zoom exemplar px): the zoom within TORUS_RANGE of `zoom`
    (1 .. max_zoom, in steps of 0.01) with the least torus_strain, the nearest to `zoom` of equals."""
    if not any(repeats):
        return zoom
    low, high = max(1.0, zoom / (1 + TORUS_RANGE)), max(1.0, min(max_zoom, zoom * (1 + TORUS_RANGE)))
    candidates = np.round(np.arange(np.ceil(low * 100) / 100, high + 1e-9, 0.01), 2).tolist() or [zoom]
    return min(candidates, key=lambda z: (round(torus_strain(side_px / z, repeats), 3), abs(z - zoom)))


FINE_DETAIL_PX = 5  # train.trainer.feature_upsample_for: detail under this many px of the finest loss crops


def fine_detail(image: torch.Tensor, texel: float) -> float | None:
    """The share of an image's (C, H, W) variance in detail under FINE_DETAIL_PX px once resized to
    `texel` image px per px (the finest loss crops' resolution, antialiased as their targets are):
    the image less its FINE_DETAIL_PX box blur; None for an image without variation."""
    h, w = image.shape[-2:]
    size = (max(FINE_DETAIL_PX, round(h / texel)), max(FINE_DETAIL_PX, round(w / texel)))
    pixels = torch.nn.functional.interpolate(image[None].detach().float().cpu(), size=size, mode="bilinear",
                                             antialias=texel > 1, align_corners=False)
    centred = pixels - pixels.mean(dim=(-2, -1), keepdim=True)
    variance = float((centred ** 2).mean())
    if variance < 1e-10:
        return None
    pad = FINE_DETAIL_PX // 2
    blurred = torch.nn.functional.avg_pool2d(torch.nn.functional.pad(centred, (pad,) * 4, mode="reflect"),
                                             FINE_DETAIL_PX, stride=1)
    return float(((centred - blurred) ** 2).mean()) / variance


@dataclass
class ScaleChoice:
    """The lattice and zoom of a run, and why: recorded in the model header."""

    grid: int
    zoom: float
    feature_px: float | None  # the exemplar's correlation length (None: no variation to measure)
    feature_cells: float | None  # ... in cells of the lattice a loss view spans, at this grid and zoom
    chosen: list  # which of "grid", "zoom" were chosen here (the others were given)
    period_px: float | None = None  # a regular pattern's repeat (train.scale.period), which caps the zoom
    fine_detail: float | None = None  # the share of the variance in detail the finest loss crops see (fine_detail)
    repeats_px: tuple | None = None  # a regular pattern's repeats along rows, columns (axis_repeats): a 2D zoom
    # fits them to the torus (fit_torus)
    view_repeats: tuple | None = None  # how many of them one full view spans

    def as_dict(self) -> dict:
        record = asdict(self)
        record["feature_px"] = None if self.feature_px is None else round(self.feature_px, 2)
        record["feature_cells"] = None if self.feature_cells is None else round(self.feature_cells, 2)
        record["period_px"] = None if self.period_px is None else round(self.period_px, 1)
        record["fine_detail"] = None if self.fine_detail is None else round(self.fine_detail, 3)
        for key in ("repeats_px", "view_repeats"):
            record[key] = None if not record[key] else [None if r is None else round(r, 2) for r in record[key]]
        return record

    def message(self) -> str:
        given = [name for name in ("grid", "zoom") if name not in self.chosen]
        lattice = f"grid {self.grid}, zoom {self.zoom:g}"
        if self.feature_px is None:
            return f"scale: {lattice} (the exemplar has no variation to measure)"
        how = "chosen" if not given else ("as given" if not self.chosen else f"{' and '.join(given)} as given")
        repeat = f", repeats every {self.period_px:.0f} px" if self.period_px else ""
        if self.view_repeats and any(self.view_repeats):
            repeat += " (a view holds " + " x ".join(
                f"{n:.2f} {axis}" for n, axis in zip(self.view_repeats, ("across", "down")) if n) + ")"
        return (f"scale: features {self.feature_px:.1f} px (correlation length){repeat} -> {lattice} ({how}): "
                f"{self.feature_cells:.2f} cells each (the NCA grows ~{TARGET_CELLS:g}); "
                f"--grid / --zoom override")


def choose_scale(domain: str, feature_px: float | None, side_px: int, grid: int = 0, zoom: float = 0.0,
                 period_px: float | None = None, repeats_px=(None, None)) -> ScaleChoice:
    """The lattice (grid: 2d/volume cells per side, mesh icosphere frequency) and zoom that put a
    feature of `feature_px` (in a `side_px` exemplar) at TARGET_CELLS cells; grid or zoom > 0 are
    kept as given and the other is chosen for them.

    Small features: the default lattice, and zoom (at most MAX_ZOOM, keeping MIN_VIEW_PX of the
    exemplar per view and, for a regular pattern repeating every `period_px`, MIN_PERIODS repeats).
    Features over a cell on the default lattice: on the icosphere a zoom below 1 (at least MIN_ZOOM),
    its views narrowed to fewer cells; elsewhere zoom 1 and a smaller lattice:
    at least MIN_GRID, a multiple of 8, yet large enough that no cell spans more than
    MAX_PX_PER_CELL exemplar px. A chosen 2D zoom above 1 then fits the pattern's `repeats_px`
    (along rows, columns; axis_repeats) to the torus (fit_torus)."""
    chosen = [name for name, value in (("grid", grid), ("zoom", zoom)) if not value]
    default = DEFAULT_GRID[domain]
    if feature_px is None:
        grid, zoom = grid or default, zoom or 1.0
        return ScaleChoice(grid, zoom, None, None, chosen, period_px)
    wanted = TARGET_CELLS * side_px / feature_px  # cells a view of the whole exemplar should span
    max_zoom = max(1.0, min(MAX_ZOOM, side_px / MIN_VIEW_PX, side_px / (MIN_PERIODS * (period_px or 0) or 1)))
    if not grid:
        span = wanted / zoom if zoom else wanted  # cells wanted across one view (1/zoom of the exemplar)
        if span >= view_cells(domain, default) * (1 - KEEP_DEFAULT) or (domain in MIN_ZOOM and not zoom):
            grid = default
        else:
            finest = side_px / (MAX_PX_PER_CELL * (zoom or 1))  # fewer cells would hold too much exemplar each
            grid = max(MIN_GRID[domain], min(default, max(8 * round(span / 8), 8 * int(np.ceil(finest / 8)))))
    if not zoom:
        zoom = wanted / view_cells(domain, grid)
        if 1 - KEEP_DEFAULT < zoom < 1 + KEEP_DEFAULT:
            zoom = 1.0
        else:
            narrowest = max(min_zoom(domain), side_px / (MAX_PX_PER_CELL * view_cells(domain, grid)))
            zoom = max(min(np.ceil(narrowest * 100) / 100, 1.0), round(min(zoom, max_zoom), 2))
        if domain == "2d" and zoom > 1:  # a view is the whole torus (at zoom 1 the whole exemplar, made to tile)
            zoom = fit_torus(zoom, side_px, repeats_px, max_zoom)
    cells = feature_px * view_span(domain, grid, zoom) * exemplar_zoom(zoom) / side_px
    held = tuple(side_px / exemplar_zoom(zoom) / r if r else None for r in repeats_px) if domain == "2d" else None
    return ScaleChoice(grid, zoom, feature_px, cells, chosen, period_px,
                       repeats_px=tuple(repeats_px) if any(repeats_px) else None,
                       view_repeats=held if held and any(held) else None)
