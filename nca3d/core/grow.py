"""Growing: run a model's NCA steps on a lattice, with no autograd, reporting progress."""

from __future__ import annotations

import torch


def grow(model, state: torch.Tensor, lattice, steps: int, generator, progress=None, label: str = "") -> torch.Tensor:
    """Run `steps` NCA steps (no autograd), reporting stage 'grow'."""
    def report(index, _state):
        if progress is not None:
            progress.update("grow", index / steps, f"{label}step {index}/{steps}")

    if progress is not None:
        progress.update("grow", 0.0 if steps else 1.0, f"{label}step 0/{steps}")
    with torch.inference_mode():
        return model.rollout(state, lattice, steps, generator, report if steps else None)
