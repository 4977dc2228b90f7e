"""Long-growth stability: `python -m nca3d.bench stability [--models NAME,...]`.

Each model (default: every bundled one) grows once from its seed on its own lattice, clamped at
its state limit as it ships, for 4096 steps (64 with --quick). At 1/16, 1/4, 1/2, 3/4 and all of
the steps the bench reads the state's mean and largest |value|, the share of values at the clamp,
and each channel's mean over the lattice. The drift is how far those channel means move over the
second half (the largest move, in units of the half-way mean |state|): a model whose texture holds
has a stationary state (most bundled models: 0.01-0.2), one that darkens or washes out does not
(amethyst_volume before its re-tune: mean |state| 0.61 / 0.81 / 1.22 at 1024 / 2048 / 4096; drift
~0.5 in eroded_concrete_mesh and ore_volume before theirs).
The quality bench's panels show what a drift does to the look.
"""

from __future__ import annotations

import time

import torch

from ..core.grow import grow
from ..core.nca import make_generator
from ..models import library_models, load_named_model

MARK_FRACTIONS = (1 / 16, 1 / 4, 1 / 2, 3 / 4, 1.0)
CLAMP_SHARE = 0.999  # a value this close to the state limit counts as at the clamp


def state_figures(state: torch.Tensor, limit: float) -> dict:
    """Figures of a state (1, *cells, C): mean and largest |value|, the share at the clamp (0 without
    a limit) and the channel means (C,) over the lattice."""
    flat = state.reshape(-1, state.shape[-1]).float()
    magnitude = flat.abs()
    return {"mean_abs": float(magnitude.mean()), "max_abs": float(magnitude.max()),
            "at_clamp": float((magnitude >= CLAMP_SHARE * limit).float().mean()) if limit > 0 else 0.0,
            "channel_means": flat.mean(0)}


def drift(halfway: dict, end: dict) -> float:
    """The largest move of a channel mean from `halfway` to `end`, in units of the halfway mean |state|."""
    move = (end["channel_means"] - halfway["channel_means"]).abs().max()
    return float(move) / max(halfway["mean_abs"], 1e-12)


def grow_and_measure(model, steps: int, seed: int = 0) -> dict:
    """One growth of `steps` steps on the model's lattice, measured at MARK_FRACTIONS of it."""
    lattice = model.make_lattice()
    state = model.seed(lattice)
    generator = make_generator(seed, model.device)
    limit = float(model.config.state_limit)
    marks = sorted({max(1, round(f * steps)) for f in MARK_FRACTIONS})
    rows, done = [], 0
    start = time.perf_counter()
    for mark in marks:
        state = grow(model, state, lattice, mark - done, generator)
        done = mark
        rows.append({"step": mark, **state_figures(state, limit)})
    seconds = time.perf_counter() - start
    halfway = min(rows, key=lambda row: abs(row["step"] - steps / 2))
    return {"cells": lattice.num_cells, "state_limit": limit, "steps": steps, "seconds": seconds,
            "drift": drift(halfway, rows[-1]),
            "marks": [{k: v for k, v in row.items() if k != "channel_means"} for row in rows]}


def bench_stability(models: list[str], device="cpu", quick: bool = False, progress=None) -> dict:
    """Figures of every named model (bundled names or files; none: the whole library)."""
    names = models or sorted(library_models())
    steps = 64 if quick else 4096
    results = []
    for index, name in enumerate(names):
        if progress is not None:
            progress.update("grow", index / len(names), f"{name}: {steps} steps", force=True)
        model = load_named_model(name, device=device)
        results.append({"model": name, "domain": model.config.domain, **grow_and_measure(model, steps)})
    if progress is not None:
        progress.update("grow", 1.0, f"{len(names)} models")
    return {"steps": steps, "models": results}


def print_stability(results: dict) -> None:
    steps = [mark["step"] for mark in results["models"][0]["marks"]] if results["models"] else []
    head = "".join(f"{f'|s|@{s}':>10}" for s in steps)
    print(f"{'model':24} {'domain':7} {'cells':>7} {'limit':>6}{head} {'max|s|':>7} {'clamped':>8} {'drift':>6}")
    for row in results["models"]:
        means = "".join(f"{mark['mean_abs']:10.3f}" for mark in row["marks"])
        end = row["marks"][-1]
        print(f"{row['model']:24} {row['domain']:7} {row['cells']:7d} {row['state_limit']:6.2f}{means} "
              f"{end['max_abs']:7.2f} {100 * end['at_clamp']:7.2f}% {row['drift']:6.2f}")
    print("|s|: mean |state| after that many steps of one growth, clamped as shipped; max|s| and clamped (share of "
          "values at the state limit) at the end; drift: the largest move of a channel's lattice mean over the "
          "second half, in units of the half-way mean |s| (a stationary state: about 0.2 or less)")
