"""The cell update: s <- s + fire * MLP(perception), with fire ~ Bernoulli(p) per cell and step."""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import Tensor, nn

from ..lattices.base import Lattice
from .threads import StepThreads

BLOCK_CELLS = 8192  # cells per update block: keeps the MLP hidden layer in cache (measured best for 64^3)
# On a GPU, blocks only bound memory (each costs kernel launches): a 64^3 volume and every training
# batch fit in one, and a 512^3 lattice (--lattice) needs 128 of about 0.6 GB of activations each.
GPU_BLOCK_CELLS = 1 << 20


class NCA(nn.Module):
    """Perception (fixed filters of the lattice) -> Linear(P*C, H) + ReLU -> Linear(H, C, no bias);
    with a state limit, each step's states are clamped to [-limit, limit].

    The first layer is Xavier-normal (gain 0.2); the last is zero, so a new model is the identity.
    """

    def __init__(self, channels: int = 16, hidden: int = 128, perception: int = 4, fire_rate: float = 0.5,
                 state_limit: float = 0.0):
        super().__init__()
        self.channels, self.hidden, self.perception, self.fire_rate = channels, hidden, perception, fire_rate
        self.state_limit = float(state_limit)  # > 0: states are clamped to [-limit, limit] after each step
        self.perceive_to_hidden = nn.Linear(perception * channels, hidden)
        self.hidden_to_update = nn.Linear(hidden, channels, bias=False)
        nn.init.xavier_normal_(self.perceive_to_hidden.weight, gain=0.2)
        # The bias keeps PyTorch's default U(+-1/sqrt(fan_in)) init: from the all-zero seed the
        # hidden layer is relu(bias), so a zero bias would leave every NCA gradient at zero.
        nn.init.zeros_(self.hidden_to_update.weight)
        self.step_threads = StepThreads()  # CPU inference rollouts' thread count, chosen by timing steps

    @contextmanager
    def limited(self, limit: float):
        """Inside the block states are clamped at `limit` (0: unclamped; the block may change it
        again); after it the limit is what it was before."""
        before, self.state_limit = self.state_limit, float(limit)
        try:
            yield
        finally:
            self.state_limit = before

    def update(self, perception: Tensor) -> Tensor:
        """(..., P*C) -> (..., C) residual update."""
        hidden = self.perceive_to_hidden(perception).relu_()
        return self.hidden_to_update(hidden)

    def step(self, state: Tensor, lattice: Lattice, generator: torch.Generator | None = None) -> Tensor:
        """One asynchronous step. state: (B, *cells, C) -> same shape."""
        if lattice.perception_size != self.perception:
            raise ValueError(
                f"this NCA perceives {self.perception} filters but the {lattice.kind} lattice gives "
                f"{lattice.perception_size}"
            )
        fire = torch.rand(state.shape[:-1], generator=generator, device=state.device) < self.fire_rate
        if state.device.type != "cpu":
            new_state = self._update_all(state, lattice, fire)
        else:
            new_state = self._update_fired(state, lattice, fire)
        if self.state_limit <= 0:
            return new_state
        if torch.is_grad_enabled():
            return new_state.clamp(-self.state_limit, self.state_limit)
        return new_state.clamp_(-self.state_limit, self.state_limit)

    def _update_all(self, state: Tensor, lattice: Lattice, fire: Tensor) -> Tensor:
        """Every cell through the MLP, the update masked by `fire` (B, *cells) bool: differentiable.
        A GPU gains nothing from cache-sized blocks or from skipping idle cells, and pays a kernel
        launch per block and a host sync per boolean mask: big blocks there."""
        blocks = []
        block_cells = BLOCK_CELLS if state.device.type == "cpu" else GPU_BLOCK_CELLS
        for rows, perception in lattice.perceive_blocks(state, block_cells):
            old, fires = state[:, rows], fire[:, rows]
            blocks.append(old + fires.unsqueeze(-1).to(old.dtype) * self.update(perception))
        return blocks[0] if len(blocks) == 1 else torch.cat(blocks, dim=1)

    def _update_fired(self, state: Tensor, lattice: Lattice, fire: Tensor) -> Tensor:
        """CPU: only the cells that fire (B, *cells) go through the MLP. Their perception rows are
        gathered and their updates added to the state by flat index (index_select / index_add: an
        order of magnitude faster here than boolean masks, and half the MLP's work of masking every
        cell's update). Inference runs block by block on torch's own threads: on a quiet 2-core
        machine 2x faster than core.threads' streams for 2D and mesh steps (6.1 / 4.7 against
        12.1 / 9.8 ms) and 1.1x for 64^3. Training (grad enabled) takes the perception of the fired
        cells only (Lattice.perceive_rows) and runs the MLP on cache-sized pieces of them; the
        state's update is then out of place. Against the masked update, a rollout's forward + backward ran 1.5-2.2x
        faster in fp32 on one thread; in bf16 on 2 threads a mesh iteration 2.4-2.7x, a 2D one the same."""
        batch, channels = state.shape[0], state.shape[-1]
        if torch.is_grad_enabled():
            at = fire.reshape(-1).nonzero().squeeze(1)  # fired rows of the flat (B * cells, C) state
            fired = lattice.perceive_rows(state, at, BLOCK_CELLS)
            update = torch.cat([self.update(rows) for rows in fired.split(BLOCK_CELLS)])
            return state.reshape(-1, channels).index_add(0, at, update.to(state.dtype)).view(state.shape)
        new_state = state.clone()
        cells = fire[0].numel()
        per_row = cells // fire.shape[1]  # cells per index of the first cell axis
        for rows, perception in lattice.perceive_blocks(state, BLOCK_CELLS):
            fired = fire[:, rows].reshape(batch, -1).nonzero()  # (F, 2): batch element, cell of the block
            block_cells = (rows.stop - rows.start) * per_row
            update = self.update(perception.reshape(batch * block_cells, -1)
                                 .index_select(0, fired[:, 0] * block_cells + fired[:, 1]))
            at = fired[:, 0] * cells + rows.start * per_row + fired[:, 1]  # rows of the flat state
            new_state.view(-1, channels).index_add_(0, at, update)
        return new_state

    def rollout(self, state: Tensor, lattice: Lattice, steps: int, generator: torch.Generator | None = None,
                callback=None, checkpoint_segment: int = 0) -> Tensor:
        """Run `steps` steps. callback(step_index, state) is called after each step when given.
        CPU inference picks its thread count step window by step window (core.threads.StepThreads).

        checkpoint_segment k > 0 (with autograd on): gradient checkpointing, keeping only every
        k-th state and recomputing the others in backward, so memory no longer grows with the
        rollout length. Each segment draws its fire masks from its own generator seeded from
        `generator`, so the recomputation replays exactly the same updates.
        """
        if checkpoint_segment > 0 and torch.is_grad_enabled():
            from torch.utils.checkpoint import checkpoint

            done = 0
            while done < steps:
                count = min(checkpoint_segment, steps - done)
                seed = int(torch.randint(0, 2 ** 62, (1,), generator=generator, device=state.device))
                state = checkpoint(self._segment, state, lattice, count, seed, use_reentrant=False)
                done += count
                if callback is not None:
                    callback(done, state)
            return state
        threads = self.step_threads
        threads.begin(active=state.device.type == "cpu" and not torch.is_grad_enabled(), work=tuple(state.shape))
        try:
            for index in range(steps):
                with threads.step():
                    state = self.step(state, lattice, generator)
                if callback is not None:
                    callback(index + 1, state)
        finally:
            threads.end()
        return state

    def _segment(self, state: Tensor, lattice: Lattice, steps: int, seed: int) -> Tensor:
        generator = make_generator(seed, state.device)
        for _ in range(steps):
            state = self.step(state, lattice, generator)
        return state


def make_generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A seeded generator on `device`: rollouts under the same seed are reproducible."""
    generator = torch.Generator(device=device)
    generator.manual_seed(int(seed))
    return generator
