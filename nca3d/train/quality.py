"""Quality, shown not claimed: `python -m nca3d.bench quality --data DIR`.

For each exemplar it trains a model for a fixed budget (or takes one from --models), grows it
from the seed, and writes exemplar | after 256 | 1024 | 2048 steps side by side (2048 shows
whether the texture holds long after training's rollouts and the 1024-step selection). It scores
every result with a weight-free texture-statistics distance (Portilla-Simoncelli statistics,
from the `plenoptic` package) against a crop of the exemplar, next to
- the ceiling: the same distance for a different crop of the exemplar, and
- the floor: the same distance for a blurred crop of the exemplar.
`score` = (floor - d) / (floor - ceiling): 1 is as good as the exemplar itself, 0 as bad as a blur.
"""

from __future__ import annotations

import json
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


class TextureStatistics:
    """Portilla-Simoncelli statistics of RGB images, per channel, at STATS_SIZE."""

    def __init__(self, size: int = STATS_SIZE):
        plenoptic = require("plenoptic", "bench", "the texture-statistics distance")
        scales = max(1, min(4, size.bit_length() - 4))  # the coarsest band keeps >= 8 px for 7x7 correlations
        self.model = plenoptic.models.PortillaSimoncelli((size, size), n_scales=scales, n_orientations=4,
                                                         spatial_corr_width=7)
        self.size = size

    @torch.no_grad()
    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        """(3, H, W) in [0, 1] -> statistics (3, S)."""
        image = _resize(image.float().clamp(0, 1), self.size)
        stats = self.model(image[:, None].double()).reshape(3, -1).float()
        return torch.nan_to_num(stats)  # a flat image has undefined higher moments: count them as 0

    def distance(self, a: torch.Tensor, b: torch.Tensor | None = None, b_stats: torch.Tensor | None = None) -> float:
        """Relative L2 distance of the statistics of a to those of b (or to b's statistics
        `b_stats`, computed once for many comparisons), averaged over channels."""
        sa, sb = self(a), (self(b) if b_stats is None else b_stats)
        return float(((sa - sb).norm(dim=1) / sb.norm(dim=1).clamp_min(1e-8)).mean())


def _blur(image: torch.Tensor, sigma: float) -> torch.Tensor:
    radius = int(3 * sigma)
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-x ** 2 / (2 * sigma ** 2))
    kernel = kernel / kernel.sum()
    padded = F.pad(image[None], (radius,) * 4, mode="reflect")
    channels = image.shape[0]
    out = F.conv2d(padded, kernel.view(1, 1, 1, -1).expand(channels, 1, 1, -1), groups=channels)
    return F.conv2d(out, kernel.view(1, 1, -1, 1).expand(channels, 1, -1, 1), groups=channels)[0]


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
    ceiling = float(np.mean([stats.distance(c, reference) for c in others]))
    floor = float(np.mean([stats.distance(_blur(_resize(c, stats.size), sigma=stats.size / 32), reference)
                           for c in others]))
    return {"reference": reference, "ceiling": ceiling, "floor": floor, "tiled": crops["tiled"],
            "scale": crops["scale"], "region": crops["region"]}


def reference_crops(exemplar: torch.Tensor, zoom: float = 1.0) -> dict:
    """The crops reference_scores measures, of (K, H, W) with any K: the region, the reference
    quarter, the other quarters (those not repeating it), whether it is tiled and the model crop
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
    return {"reference": reference, "others": others, "tiled": tiled, "scale": 4 if tiled else 2, "region": exemplar}


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
    panels = [_resize(scores["region"], stats.size)]
    results = {}
    for steps, state, crops, scored in grow(model, stats.size, scores["scale"], seed, batch):
        full, scored = crops[0][0, :3], [c[:3] for c in scored]
        if model.provenance.get("grey"):
            full, *scored = (c.mean(0, keepdim=True).expand(3, -1, -1) for c in [full, *scored])
        distance = float(np.mean([stats.distance(c.clamp(0, 1), scores["reference"]) for c in scored]))
        results[f"distance_{steps}"] = distance
        results[f"score_{steps}"] = (scores["floor"] - distance) / max(scores["floor"] - scores["ceiling"], 1e-8)
        results[f"overflow_{steps}"] = float((state - state.clamp(-1, 1)).abs().mean())
        panels.append(full.clamp(0, 1).cpu())
    write_png(out_png, torch.cat(panels, dim=2).permute(1, 2, 0).numpy())
    results.update(ceiling=scores["ceiling"], floor=scores["floor"], tiled_exemplar=scores["tiled"],
                   panel=str(out_png))
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


def print_quality(results: dict) -> None:
    print(f"{'exemplar':36s} {'iters':>6s} {'ceiling':>8s} {'floor':>8s} "
          + " ".join(f"{f'd@{n}':>7s}" for n in STEPS) + " " + " ".join(f"{f'score@{n}':>10s}" for n in STEPS))
    for row in results["rows"]:
        print(f"{row['exemplar']:36s} {row['iterations'] or 0:6d} {row['ceiling']:8.3f} {row['floor']:8.3f} "
              + " ".join(f"{row[f'distance_{n}']:7.3f}" for n in STEPS) + " "
              + " ".join(f"{row[f'score_{n}']:10.2f}" for n in STEPS))
    print("score = (floor - d) / (floor - ceiling): 1 = as close as another crop of the exemplar, 0 = a blur.")
    for row in results["rows"]:
        if row.get("tiled_exemplar"):
            print(f"note: {row['exemplar']} is a 2x2 tiling of one image: it is scored within one period "
                  f"(quarter-extent crops).")
