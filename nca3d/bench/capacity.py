"""Decoder capacity, no NCA: `python -m nca3d.bench capacity --exemplars 06 --grids 48,128`.

Fits free cell states and the LPPN to each exemplar with the training loss (the trainer's lattice,
zoom, loss and crop scales; --scales adds finer crops), with no NCA in between: the best this
decoder draws at that lattice, whatever an NCA learns. Each fit is scored as `bench quality`
scores a grown model, and its panel shows the exemplar's view | the fitted full view | its finest
loss crop. Where the fit itself lacks a detail, no training of the NCA can grow it: the limit is the
decoder at that many exemplar px per cell, or the loss (finer --scales tell which).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from ..core.nca import make_generator
from ..errors import NCA3DError
from ..io.images import read_exemplar, write_png
from ..progress import Progress
from ..train.quality import (
    TextureStatistics,
    band_score,
    reference_scores,
    resize_square,
)
from ..train.trainer import TrainConfig, Trainer, make_task
from .quality import rendered_views, score_text, supersample_for, view_distance

FIT_BATCH = 2  # free states fitted side by side
STATE_LR = 3e-3  # Adam's rate for the free states; the decoder's is TrainConfig.lr
STATE_INIT = 0.2  # the free states start as this x standard normal noise


def fit_free_states(trainer: Trainer, iterations: int, progress: Progress | None = None,
                    label: str = "") -> tuple[torch.Tensor, list[float]]:
    """Fit free states (FIT_BATCH, *cells, C) and trainer.model's decoder with trainer's loss and
    task for `iterations` Adam steps -> (the states, detached; the texture loss per step)."""
    model, task = trainer.model, trainer.task
    generator = make_generator(trainer.config.seed, trainer.device)
    shape = (FIT_BATCH, *task.lattice.cell_shape, model.config.channels)
    state = (torch.randn(shape, generator=generator, device=trainer.device) * STATE_INIT).requires_grad_()
    optimizer = torch.optim.Adam([{"params": [state], "lr": STATE_LR},
                                  {"params": model.lppn.parameters(), "lr": trainer.config.lr}])
    losses = []
    for iteration in range(iterations):
        loss = trainer.loss_fn.score(task.render(model, state, generator), generator=generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
        if progress is not None:
            progress.update("fit", (iteration + 1) / iterations, f"{label}it {iteration + 1} loss {losses[-1]:.4f}")
    return state.detach(), losses


@torch.no_grad()
def score_fit(trainer: Trainer, state: torch.Tensor, exemplar: torch.Tensor, stats: TextureStatistics,
              out_png: Path) -> dict:
    """Score fitted states as bench quality scores a grown model; write exemplar view | full view |
    finest loss crop (upsampled) as a panel."""
    model, config = trainer.model, trainer.config
    scores = reference_scores(exemplar, stats, zoom=config.zoom)
    supersample = supersample_for("2d", scores["region"].shape[-1], scores["scale"], stats.size)
    task = make_task("2d", config.grid, config.harmonics, stats.size * supersample, config.ray_samples, trainer.device)
    crops, scored = rendered_views(model, task, state, scores["scale"], make_generator(config.seed + 1, trainer.device),
                                   stats.size)
    full, distance = view_distance(model, stats, scores, crops[0][0], scored)
    finest = trainer.task.render(model, state, make_generator(config.seed + 2, trainer.device))[-1][0, :3]
    finest = F.interpolate(finest[None], size=full.shape[-2:], mode="nearest")[0]
    panel = [resize_square(scores["region"], stats.size), full.clamp(0, 1).cpu(), finest.clamp(0, 1).cpu()]
    write_png(out_png, torch.cat(panel, dim=2).permute(1, 2, 0).numpy())
    return {"distance": distance, "score": band_score(scores["ceiling"], scores["floor"], distance),
            "ceiling": scores["ceiling"], "floor": scores["floor"], "panel": str(out_png)}


def bench_capacity(data: str, exemplars: list[str], out: str, grids: list[int] | None = None,
                   scales: list[int] | None = None, iterations: int = 400, features: str = "effnet",
                   device="cpu", progress: Progress | None = None, target_sampling: str = "area") -> dict:
    """One free-state fit per exemplar and grid (0: the trainer's automatic choice), with the loss's
    targets shrunk by `target_sampling` (TrainConfig); returns the figures and writes them as JSON
    beside the panels."""
    progress = progress or Progress("bar")
    if not Path(data).is_dir():
        raise NCA3DError(f"data folder '{data}' not found; pass --data, a folder of exemplar images")
    files = sorted(p for p in Path(data).iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    chosen = [p for p in files if not exemplars or any(key in p.stem for key in exemplars)]
    if not chosen:
        raise NCA3DError(f"no exemplar in '{data}' matches {exemplars or 'any name'}; check --data and --exemplars")
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    stats, rows = TextureStatistics(), []
    for path in chosen:
        pixels, _ = read_exemplar(path)
        exemplar = torch.from_numpy(pixels).permute(2, 0, 1)
        for grid in grids or [0]:
            options = dict(scales=list(scales)) if scales else {}
            config = TrainConfig(exemplar=str(path), out=str(out_dir / f"{path.stem}.nca3d"), domain="2d", grid=grid,
                                 features=features, device=str(device), target_sampling=target_sampling, **options)
            start = time.monotonic()
            trainer = Trainer(config, Progress("none"))
            state, losses = fit_free_states(trainer, iterations, progress, f"{path.stem} grid {config.grid}: ")
            row = {"exemplar": path.name, "grid": config.grid, "zoom": config.zoom, "scales": list(config.scales),
                   "target_sampling": target_sampling,
                   "px_per_cell": exemplar.shape[-1] / (config.zoom * config.grid), "iterations": iterations,
                   "final_loss": sum(losses[-20:]) / len(losses[-20:]),
                   **score_fit(trainer, state, exemplar, stats,
                               out_dir / f"{path.stem}_grid{config.grid}_s{max(config.scales)}_{target_sampling}"
                                         f".capacity.png")}
            row["seconds"] = time.monotonic() - start
            rows.append(row)
    results = {"stats_size": stats.size, "rows": rows}
    (out_dir / "capacity.json").write_text(json.dumps(results, indent=2))
    return results


def print_capacity(results: dict) -> None:
    print(f"{'exemplar':36s} {'grid':>5s} {'zoom':>5s} {'px/cell':>8s} {'scales':>10s} {'targets':>7s} {'iters':>6s} "
          f"{'loss':>7s} {'d':>7s} {'score':>6s}")
    for row in results["rows"]:
        print(f"{row['exemplar']:36s} {row['grid']:5d} {row['zoom']:5.2f} {row['px_per_cell']:8.1f} "
              f"{','.join(map(str, row['scales'])):>10s} {row['target_sampling']:>7s} {row['iterations']:6d} "
              f"{row['final_loss']:7.3f} "
              f"{row['distance']:7.3f} {score_text(row['score'], 6)}")
    print("free cell states and the decoder fitted with the training loss, no NCA: the best the decoder draws at "
          "that lattice. score as in bench quality; panels: exemplar | fitted full view | finest loss crop.")
