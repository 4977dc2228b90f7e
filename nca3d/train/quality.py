"""Quality, shown not claimed: `python -m nca3d.bench quality --data DIR`.

For each exemplar it trains a model for a fixed budget (or takes one from --models), grows it
from the seed, and writes exemplar | after 256 | 1024 | 2048 steps side by side (2048 shows
whether the texture holds long after training's rollouts and the 1024-step selection). It scores
every result with a weight-free texture distance against a crop of the exemplar: the
Portilla-Simoncelli statistics (the `plenoptic` package) and an orientation histogram
(structure-tensor anisotropy per direction at two octaves, which stripes and streaks change and
the Portilla-Simoncelli vector hardly shows), each statistic's difference in units of its spread
over random crops of the exemplar. Beside it:
- the ceiling: the same distance for a different crop of the exemplar, and
- the floor: the nearer of two degradations of such a crop: blurred, and phase-randomised (the
  same spectrum and colours, no structure).
`score` = (floor - d) / (floor - ceiling): 1 is as good as the exemplar itself, 0 as bad as a
degradation. Measured in the exemplar's own spread, the degradations lie far beyond another crop
(2-40x on the bundled exemplars); where the floor is still hardly further than the ceiling, the
band cannot rank anything: the score is None and the bench says so.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import NCA3DError, require
from ..io.images import read_exemplar, write_png
from ..io.model_file import load_model
from ..nca import make_generator
from ..progress import Progress
from .losses import crop_count
from .trainer import TrainConfig, Trainer, make_task

STATS_SIZE = 128  # images are compared at this size (a power of two for the pyramid)
STEPS = (256, 1024, 2048)


def _resize(image: torch.Tensor, size: int) -> torch.Tensor:
    """(3, H, W) -> (3, size, size), antialiased."""
    return F.interpolate(image[None], size=(size, size), mode="bilinear", antialias=True, align_corners=False)[0]


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
    grey = image.float().mean(0)[None, None]
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
        image = _resize(image.float().clamp(0, 1), self.size)
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
        orientation), summed; two
        crops of the exemplar come out about 2 apart whatever the texture, and a group of few
        statistics (orientation: stripes) weighs as much as the large one. Without (no exemplar to
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
    image = _resize(image, size)
    return [_blur(image, sigma=size / 32), phase_randomised(image)]


def _same(a: torch.Tensor, b: torch.Tensor, tolerance: float = 1 / 255) -> bool:
    return bool((a - b).abs().mean() < tolerance)


def is_tiled(exemplar: torch.Tensor) -> bool:
    """True when (3, H, W) is a 2 x 2 repeat of one tile: its halves hold no independent content."""
    _, h, w = exemplar.shape
    return _same(exemplar[:, : h // 2], exemplar[:, h - h // 2:]) and _same(exemplar[:, :, : w // 2], exemplar[:, :, w - w // 2:])


def reference_scores(exemplar: torch.Tensor, stats: TextureStatistics, zoom: float = 1.0) -> dict:
    """Reference crop (top-left quarter), ceiling (another quarter) and floor (blurred) distances.

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
    """Ceiling and floor distances (in the exemplar's `spread`) to a reference's statistics: the
    mean over `others` (other crops of the exemplar) and, for the floor, the nearer over
    degradation kinds of the mean over `degraded` (per other crop, one image per kind, as from
    degradations()): a model as far as either degradation scores 0."""
    ceiling = float(np.mean([stats.distance(c, b_stats=reference_stats, spread=spread) for c in others]))
    per_kind = np.array([[stats.distance(d, b_stats=reference_stats, spread=spread) for d in kinds]
                         for kinds in degraded])
    means = per_kind.mean(axis=0)
    return {"ceiling": ceiling, "floor": float(means.min()), "floor_blur": float(means[0]),
            "floor_phase": float(means[1]), "spread": spread}


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
    exemplar = exemplar[:, : max(2, int(h / zoom)), : max(2, int(w / zoom))]
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


@torch.no_grad()
def grow(model, size: int, scale: int, seed: int = 0, batch: int = 4):
    """Grow `batch` textures from the seed; after each of STEPS yield (steps, state, crops, scored):
    the task's crops (each (batch, K, size, size); crops[0] the full views) rendered at `size`
    px, and the crops of 1/scale extent, all channels, as a list of (K, size, size)."""
    config = model.provenance.get("config") or {}
    domain = model.config.domain
    grid = config.get("grid") or (model.config.icosphere_frequency if domain == "mesh" else model.config.grid_size[0])
    task = make_task(domain, grid, model.config.harmonics, size, config.get("ray_samples", 48), model.device)
    generator = make_generator(seed, model.device)
    state = model.seed(task.lattice, batch)
    first = sum(crop_count(s) for s in task.scales if s < scale)  # index of the first crop of that scale
    done = 0
    for steps in STEPS:
        state = model.rollout(state, task.lattice, steps - done, generator)
        done = steps
        crops = task.render(model, state, make_generator(seed + steps, model.device))
        yield steps, state, crops, [c[i] for c in crops[first:first + scale] for i in range(batch)]


@torch.no_grad()
def evaluate_model(model, exemplar: torch.Tensor, stats: TextureStatistics, out_png: Path, seed: int = 0,
                   batch: int = 4) -> dict:
    """Grow `batch` textures from the seed; after each of STEPS score all their crops of the
    reference's extent (4 x 2 half-extent crops by default: the mean distance of 8 samples; one
    sample's score varies by about 0.15 on lava flow) and write the panel (the first texture's
    full view)."""
    config = model.provenance.get("config") or {}
    scores = reference_scores(exemplar, stats, zoom=config.get("zoom", 1.0))
    reference = stats(scores["reference"])
    panels = [_resize(scores["region"], stats.size)]
    results = {}
    for steps, state, crops, scored in grow(model, stats.size, scores["scale"], seed, batch):
        full, scored = crops[0][0, :3], [c[:3] for c in scored]
        if model.provenance.get("grey"):
            full, *scored = (c.mean(0, keepdim=True).expand(3, -1, -1) for c in [full, *scored])
        distance = float(np.mean([stats.distance(c.clamp(0, 1), b_stats=reference, spread=scores["spread"])
                                  for c in scored]))
        results[f"distance_{steps}"] = distance
        results[f"score_{steps}"] = band_score(scores["ceiling"], scores["floor"], distance)
        results[f"overflow_{steps}"] = float((state - state.clamp(-1, 1)).abs().mean())
        panels.append(full.clamp(0, 1).cpu())
    write_png(out_png, torch.cat(panels, dim=2).permute(1, 2, 0).numpy())
    results.update({key: scores[key] for key in ("ceiling", "floor", "floor_blur", "floor_phase")},
                   tiled_exemplar=scores["tiled"], panel=str(out_png))
    return results


def bench_quality(data: str, exemplars: list[str], out: str, domain: str = "2d", minutes: float = 30.0,
                  models: str | None = None, device="cpu", progress: Progress | None = None) -> dict:
    """Train (or load) and evaluate one model per exemplar; returns the figures and writes them as JSON."""
    progress = progress or Progress("bar")
    stats = TextureStatistics()
    out_dir = Path(out)
    if not Path(data).is_dir():
        raise NCA3DError(f"data folder '{data}' not found; pass --data, a folder of exemplar images")
    out_dir.mkdir(parents=True, exist_ok=True)
    files = sorted(p for p in Path(data).iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    chosen = [p for p in files if not exemplars or any(key in p.stem for key in exemplars)]
    if not chosen:
        raise NCA3DError(f"no exemplar in '{data}' matches {exemplars}; check --data and --exemplars")
    rows = []
    for path in chosen:
        name = f"{path.stem}_{domain}"
        model_path = Path(models) / f"{name}.nca3d" if models else out_dir / f"{name}.nca3d"
        start = time.monotonic()
        if not model_path.exists():
            config = TrainConfig(exemplar=str(path), out=str(model_path), domain=domain, minutes=minutes,
                                 device=str(device))
            Trainer(config, progress).run(resume=True)
        model = load_model(model_path, device)
        pixels, _ = read_exemplar(path)
        exemplar = torch.from_numpy(pixels).permute(2, 0, 1)
        row = {"exemplar": path.name, "domain": domain, "model": str(model_path),
               "iterations": model.provenance.get("iterations"), "train_minutes": model.provenance.get("minutes"),
               **evaluate_model(model, exemplar, stats, out_dir / f"{name}.quality.png")}
        row["seconds"] = time.monotonic() - start
        rows.append(row)
    results = {"domain": domain, "stats_size": stats.size, "rows": rows}
    (out_dir / f"quality_{domain}.json").write_text(json.dumps(results, indent=2))
    return results


def score_text(score: float | None, width: int) -> str:
    """A score for a table: 2 decimals, or 'n/a' where the band cannot rank."""
    return f"{score:{width}.2f}" if score is not None else f"{'n/a':>{width}s}"


def print_quality(results: dict) -> None:
    print(f"{'exemplar':36s} {'iters':>6s} {'ceiling':>8s} {'floor':>8s} "
          + " ".join(f"{f'd@{n}':>7s}" for n in STEPS) + " " + " ".join(f"{f'score@{n}':>10s}" for n in STEPS))
    for row in results["rows"]:
        print(f"{row['exemplar']:36s} {row['iterations'] or 0:6d} {row['ceiling']:8.3f} {row['floor']:8.3f} "
              + " ".join(f"{row[f'distance_{n}']:7.3f}" for n in STEPS) + " "
              + " ".join(score_text(row[f"score_{n}"], 10) for n in STEPS))
    print("score = (floor - d) / (floor - ceiling): 1 = as close as another crop of the exemplar, 0 = as far as the "
          "nearer of a blur and a phase-randomised crop; d: Portilla-Simoncelli and orientation statistics (stripes, "
          "streaks) in units of their spread over crops of the exemplar.")
    for row in results["rows"]:
        if row.get("tiled_exemplar"):
            print(f"note: {row['exemplar']} is a 2x2 tiling of one image: it is scored within one period "
                  f"(quarter-extent crops).")
        if row["score_1024"] is None:
            print(f"note: {row['exemplar']}: its degraded crops (floor {row['floor']:.3f}) are hardly further from "
                  f"the reference than another crop (ceiling {row['ceiling']:.3f}): the band cannot rank a model; "
                  f"judge it by the panel.")
