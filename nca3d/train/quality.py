"""Texture statistics that score how alike two textures are, weight-free: the distance that the
quality benches (nca3d.bench.quality, quality_pbr) and the damage figures of `nca3d render --damage` use.

The Portilla-Simoncelli statistics (the `plenoptic` package) and an orientation histogram
(structure-tensor anisotropy per direction at two octaves, which stripes and streaks change and
the Portilla-Simoncelli vector hardly shows), each statistic's difference in units of its spread
over random crops of the exemplar. Beside a distance, the band it is read in:
- the ceiling: the same distance for a different crop of the exemplar, and
- the floor: the nearer of two degradations of such a crop: blurred, and phase-randomised (the
  same spectrum and colours, no structure).
`score` = (floor - d) / (floor - ceiling): 1 is as good as the exemplar itself, 0 as bad as a
degradation. Measured in the exemplar's own spread, the degradations lie far beyond another crop
(1.4-3.8x on the 15 exemplars of ../shared/data/textures); where the floor is still hardly further than the ceiling, the
band cannot rank anything: the score is None.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import require
from .scale import exemplar_zoom

STATS_SIZE = 128  # images are compared at this size (a power of two for the pyramid)


def resize_square(image: torch.Tensor, size: int) -> torch.Tensor:
    """(..., C, H, W) -> (..., C, size, size), antialiased."""
    images = image.reshape(-1, *image.shape[-3:])
    resized = F.interpolate(images, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return resized.reshape(*image.shape[:-2], size, size)


ORIENTATION_BINS = 12  # directions over 180 degrees
ORIENTATION_WEIGHT = 0.25  # unwhitened distances: of the orientation histogram's beside the Portilla-Simoncelli one
SPREAD_CROPS = 16  # random crops of the exemplar that measure each statistic's natural spread
SPREAD_FLOOR = 0.1  # no statistic's spread counts as less than this fraction of its group's median
MAX_SPREADS = 10.0  # a statistic further off than this many spreads counts as this far
NARROW_BAND = 0.1  # floor - ceiling under this fraction of the floor: the score cannot rank (None)


def orientation_histogram(image: torch.Tensor, bins: int = ORIENTATION_BINS, scales: int = 2) -> torch.Tensor:
    """Directional structure of (3, H, W): at each of `scales` octaves, the structure tensor's
    anisotropy (|λ1 - λ2|, smoothed over 2 px) summed per dominant direction, over the total
    gradient energy. (scales * bins,): near 0 and flat for isotropic texture, one tall bin for stripes."""
    grey = image.float().mean(0)[None, None].nan_to_num(0.0, 0.0, 0.0)  # a blown-up render: no crash (its other statistics are NaN)
    out = []
    for _ in range(scales):
        gx = (grey[..., 1:-1, 2:] - grey[..., 1:-1, :-2]) / 2
        gy = (grey[..., 2:, 1:-1] - grey[..., :-2, 1:-1]) / 2
        tensor = _blur(torch.cat([gx * gx, gy * gy, gx * gy], 1)[0], sigma=2.0)
        jxx, jyy, jxy = tensor
        anisotropy = torch.sqrt((jxx - jyy) ** 2 + 4 * jxy ** 2)
        angle = torch.atan2(2 * jxy, jxx - jyy) / 2 % math.pi  # the dominant gradient direction
        index = (angle / math.pi * bins).long().clamp_max(bins - 1)
        histogram = torch.zeros(bins).index_add_(0, index.flatten(), anisotropy.flatten())
        out.append(histogram / (jxx + jyy).sum().clamp_min(1e-12))
        grey = F.avg_pool2d(grey, 2)
    return torch.cat(out)


class TextureStatistics:
    """Portilla-Simoncelli statistics of RGB images, per channel, and their orientation histogram,
    at STATS_SIZE."""

    def __init__(self, size: int = STATS_SIZE):
        plenoptic = require("plenoptic", "bench", "the texture-statistics distance")
        scales = max(1, min(4, size.bit_length() - 4))  # the coarsest band keeps >= 8 px for 7x7 correlations
        self.model = plenoptic.models.PortillaSimoncelli((size, size), n_scales=scales, n_orientations=4,
                                                         spatial_corr_width=7)
        self.size = size

    @torch.no_grad()
    def __call__(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """(3, H, W) in [0, 1] -> {"ps": (3, S) statistics, "orientation": orientation_histogram}."""
        image = resize_square(image.float().clamp(0, 1), self.size)
        stats = self.model(image[:, None].double()).reshape(3, -1).float()
        # a flat image has undefined higher moments: count them as 0
        return {"ps": torch.nan_to_num(stats), "orientation": orientation_histogram(image)}

    def spread(self, samples: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        """Each statistic's standard deviation over `samples` (crops of one exemplar, >= 2), kept
        above SPREAD_FLOOR x its group's median, so that nearly constant statistics do not swamp the rest."""
        found = [self(sample) for sample in samples]
        spread = {}
        for key in found[0]:
            std = torch.stack([f[key] for f in found]).std(0)
            spread[key] = std.clamp_min(SPREAD_FLOOR * float(std.median()) + 1e-8)
        return spread

    def distance(self, a: torch.Tensor, b: torch.Tensor | None = None, b_stats: dict | None = None,
                 spread: dict | None = None) -> float:
        """How far a's statistics are from b's (or from `b_stats`, computed once for many comparisons).

        With `spread` (of the exemplar's crops): each statistic's difference in units of its
        spread (at most MAX_SPREADS), the root mean square per group (Portilla-Simoncelli,
        orientation), summed; two crops of the exemplar come out a few units apart whatever the
        texture, and a group of few statistics (orientation: stripes) weighs as much as the large one. Without (no exemplar to
        measure the spread on): the relative L2 distance of the Portilla-Simoncelli statistics
        (averaged over channels) plus ORIENTATION_WEIGHT x the L1 distance of the histograms."""
        sa, sb = self(a), (self(b) if b_stats is None else b_stats)
        if spread is not None:
            return sum(float((((sa[k] - sb[k]) / spread[k]).clamp(-MAX_SPREADS, MAX_SPREADS) ** 2).mean().sqrt())
                       for k in sa)
        ps = float(((sa["ps"] - sb["ps"]).norm(dim=1) / sb["ps"].norm(dim=1).clamp_min(1e-8)).mean())
        return ps + ORIENTATION_WEIGHT * float((sa["orientation"] - sb["orientation"]).abs().sum())


def band_score(ceiling: float, floor: float, distance: float) -> float | None:
    """(floor - distance) / (floor - ceiling), or None when the band is too narrow to rank."""
    if floor - ceiling < NARROW_BAND * floor:
        return None
    return (floor - distance) / (floor - ceiling)


def _blur(image: torch.Tensor, sigma: float) -> torch.Tensor:
    radius = int(3 * sigma)
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-x ** 2 / (2 * sigma ** 2))
    kernel = kernel / kernel.sum()
    padded = F.pad(image[None], (radius,) * 4, mode="reflect")
    channels = image.shape[0]
    out = F.conv2d(padded, kernel.view(1, 1, 1, -1).expand(channels, 1, 1, -1), groups=channels)
    return F.conv2d(out, kernel.view(1, 1, -1, 1).expand(channels, 1, -1, 1), groups=channels)[0]


def phase_randomised(image: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """(K, H, W) with its Fourier amplitudes kept and one random phase field for all channels
    (so the colours keep their correlations): the same spectrum, no structure; clamped to [0, 1]."""
    generator = torch.Generator().manual_seed(seed)
    noise = torch.rand(image.shape[-2:], generator=generator)
    phase = torch.angle(torch.fft.fft2(noise))  # the phases of real noise: a Hermitian field
    spectrum = torch.fft.fft2(image.float())
    randomised = torch.polar(spectrum.abs(), phase.expand_as(spectrum.real).contiguous())
    randomised[..., 0, 0] = spectrum[..., 0, 0]  # the mean colour
    return torch.fft.ifft2(randomised).real.clamp(0, 1)


def degradations(image: torch.Tensor, size: int) -> list[torch.Tensor]:
    """The floor's candidates for (K, H, W): brought to `size`, then blurred (sigma size/32) and
    phase-randomised."""
    image = resize_square(image, size)
    return [_blur(image, sigma=size / 32), phase_randomised(image)]


def _same(a: torch.Tensor, b: torch.Tensor, tolerance: float = 1 / 255) -> bool:
    return bool((a - b).abs().mean() < tolerance)


def is_tiled(exemplar: torch.Tensor) -> bool:
    """True when (3, H, W) is a 2 x 2 repeat of one tile: its halves hold no independent content."""
    _, h, w = exemplar.shape
    return _same(exemplar[:, : h // 2], exemplar[:, h - h // 2:]) and _same(exemplar[:, :, : w // 2], exemplar[:, :, w - w // 2:])


def reference_scores(exemplar: torch.Tensor, stats: TextureStatistics, zoom: float = 1.0) -> dict:
    """Reference crop (top-left quarter) and its statistics, and reference_band's ceiling (another
    quarter) and floor (degraded quarters) distances.

    A model trained with ``zoom`` z spans 1/z of the exemplar, so its crops are measured within
    the exemplar's top-left 1/z (its ``region``, also the panel's first image).

    The ceiling and the floor are means over the other three quarters, leaving out any that
    repeats the reference (an exemplar periodic along the diagonal, tiles A B / B A, like 03 lava
    flow). A 2 x 2 tiled exemplar's quarters are all the same pixels, so it is measured within one
    period instead: quarters of the tile (quarter-extent crops of the exemplar), compared with
    the model's quarter-extent crops. `scale` is the model crop scale to score (2: half extent,
    4: quarter extent); `tiled` says which case applied."""
    crops = reference_crops(exemplar, zoom)
    reference, others = crops["reference"], crops["others"]
    band = reference_band(stats(reference), stats.spread(crops["spread"]), others,
                          degraded=[degradations(c, stats.size) for c in others], stats=stats)
    return {"reference": reference, **band, "tiled": crops["tiled"], "scale": crops["scale"],
            "region": crops["region"]}


def reference_band(reference_stats: dict, spread: dict, others: list, degraded: list[list],
                   stats: TextureStatistics) -> dict:
    """A reference's statistics and the ceiling and floor distances (in the exemplar's `spread`) to them: the
    mean over `others` (other crops of the exemplar) and, for the floor, the nearer over
    degradation kinds of the mean over `degraded` (per other crop, one image per kind, as from
    degradations()): a model as far as either degradation scores 0."""
    ceiling = float(np.mean([stats.distance(c, b_stats=reference_stats, spread=spread) for c in others]))
    per_kind = np.array([[stats.distance(d, b_stats=reference_stats, spread=spread) for d in kinds]
                         for kinds in degraded])
    means = per_kind.mean(axis=0)
    return {"stats": reference_stats, "ceiling": ceiling, "floor": float(means.min()), "floor_blur": float(means[0]),
            "floor_phase": float(means[1]), "spread": spread}


def orientation_distance(images: torch.Tensor, reference: torch.Tensor) -> float:
    """Mean L1 distance of the orientation histograms of images (B, 3, H, W) from a `reference`
    histogram: ~0.35 between crops of one isotropic exemplar, 1-3 for stripes."""
    return float(np.mean([float((orientation_histogram(image) - reference).abs().sum()) for image in images.float()]))


def zoomed_region(exemplar: torch.Tensor, zoom: float) -> torch.Tensor:
    """What one full view of a model trained at `zoom` spans of an exemplar (C, H, W): its top-left
    1/zoom (all of it below zoom 1, where the views narrow instead: train.scale.exemplar_zoom)."""
    zoom = exemplar_zoom(zoom)
    h, w = exemplar.shape[-2:]
    return exemplar[:, : max(2, int(h / zoom)), : max(2, int(w / zoom))]


def reference_crops(exemplar: torch.Tensor, zoom: float = 1.0) -> dict:
    """The crops reference_scores measures, of (K, H, W) with any K: the region, the reference
    quarter, the other quarters (those not repeating it), SPREAD_CROPS random quarter-size crops
    (fixed seed) that measure the statistics' spread, whether it is tiled and the model crop
    scale to score."""
    _, h, w = exemplar.shape
    tiled = is_tiled(exemplar)
    if tiled:
        exemplar = exemplar[:, : h // 2, : w // 2]
        _, h, w = exemplar.shape
    exemplar = zoomed_region(exemplar, zoom)
    _, h, w = exemplar.shape
    reference = exemplar[:, : h // 2, : w // 2]
    candidates = (exemplar[:, h - h // 2:, w - w // 2:], exemplar[:, : h // 2, w - w // 2:], exemplar[:, h - h // 2:, : w // 2])
    others = [c for c in candidates if not _same(c, reference)] or list(candidates)
    generator = torch.Generator().manual_seed(0)
    corners = torch.stack([torch.randint(0, h - h // 2 + 1, (SPREAD_CROPS,), generator=generator),
                           torch.randint(0, w - w // 2 + 1, (SPREAD_CROPS,), generator=generator)], 1).tolist()
    spread = [exemplar[:, y: y + h // 2, x: x + w // 2] for y, x in corners]
    return {"reference": reference, "others": others, "spread": spread, "tiled": tiled, "scale": 4 if tiled else 2,
            "region": exemplar}


