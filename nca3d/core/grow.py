"""Growing and damaging a state: run a model's NCA steps on a lattice (no autograd, reporting progress),
and erase a ball of cells back to the seed state."""

from __future__ import annotations

import torch

DAMAGE_RADIUS = 0.2  # of an erased ball: a fraction of the lattice's extent
STATE_MARGIN = 1.5  # a model's state limit over the largest |state| its training lattice shows


def grow(model, state: torch.Tensor, lattice, steps: int, generator, progress=None, label: str = "") -> torch.Tensor:
    """Run `steps` NCA steps (no autograd), reporting stage 'grow'."""
    def report(index, _state):
        if progress is not None:
            progress.update("grow", index / steps, f"{label}step {index}/{steps}")

    if progress is not None:
        progress.update("grow", 0.0 if steps else 1.0, f"{label}step 0/{steps}")
    with torch.inference_mode():
        return model.rollout(state, lattice, steps, generator, report if steps else None)


def cell_positions(lattice) -> torch.Tensor:
    """Cell positions (N, d) in the lattice's own units (grid cells x first, or mesh vertices)."""
    if lattice.kind == "mesh":
        return lattice.vertices.float()
    axes = [torch.arange(n, dtype=torch.float32) for n in lattice.cell_shape]
    grid = torch.meshgrid(*axes, indexing="ij")  # array order (..., y, x)
    return torch.stack([g.reshape(-1) for g in grid[::-1]], dim=-1)  # (N, d) with x first


def erase_ball(state: torch.Tensor, lattice, centre, radius: float) -> torch.Tensor:
    """Reset cells within `radius` of `centre` (lattice units) to the seed state (zeros).
    Returns the mask (N,) bool of the erased cells; `state` (B, *cells, C) is changed in place."""
    positions = cell_positions(lattice).to(state.device)
    mask = (positions - torch.as_tensor(centre, dtype=torch.float32, device=state.device)).norm(dim=-1) <= radius
    with torch.inference_mode():  # rollouts return inference tensors
        state.view(state.shape[0], -1, state.shape[-1])[:, mask] = 0.0
    return mask


class LargestState:
    """A rollout callback keeping the largest |state| of every step it sees; states past float
    range (a growth that blows up) do not count, so such a model still gets a finite limit."""

    def __init__(self, device):
        self.value = torch.zeros((), device=device)

    def __call__(self, _index, state: torch.Tensor) -> None:
        torch.maximum(self.value, state.abs().nan_to_num(0.0, 0.0, 0.0).amax(), out=self.value)

    def limit(self, margin: float = STATE_MARGIN) -> float:
        """The state limit these steps give: `margin` x the largest |state| (0: none seen)."""
        largest = float(self.value)
        return round(margin * largest, 3) if largest > 0 else 0.0


def state_limit(model, lattice, steps: int = 2048, seeds: int = 2, margin: float = STATE_MARGIN) -> float:
    """The state limit for `model` (ModelConfig.state_limit): `margin` x the largest |state| over
    every step of `seeds` growths of `steps` steps on `lattice` (its training lattice), unclamped
    (LargestState)."""
    from .nca import make_generator

    largest = LargestState(model.device)
    with model.nca.limited(0.0), torch.inference_mode():
        for seed in range(seeds):
            model.rollout(model.seed(lattice), lattice, steps, make_generator(seed, model.device), largest)
    return largest.limit(margin)
