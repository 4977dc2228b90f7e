"""The LPPN decoder: a SIREN fed [local coordinate, interpolated cell state].

Two forwards give the same values: `exact`, plain PyTorch (autograd, any device; the reference),
and `fast`, for CPU inference: rows in cache-sized blocks through preallocated buffers, with
numpy's SIMD float32 sine (about 4x torch.sin's speed here, within 1e-7 of it: tested), the blocks
shared among torch.get_num_threads() Python threads (core.threads).
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import torch
from torch import Tensor, nn

from .threads import run_threads, threads_for

BLOCK_ROWS = 4096  # rows per block of the fast forward: a block's activations (32 wide) stay in L2


class SIREN(nn.Module):
    """sin(w0 (W1 x + b1)) -> sin(w0 (W2 . + b2)) -> ... -> linear W_last -> K outputs.

    Init: first layer U(+-1/in); later layers U(+-sqrt(6/in)/w0) (weights and biases).
    """

    def __init__(self, inputs: int, outputs: int, width: int = 32, hidden_layers: int = 3, omega0: float = 10.0):
        super().__init__()
        self.omega0 = float(omega0)
        sizes = [inputs] + [width] * hidden_layers + [outputs]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in itertools.pairwise(sizes))
        with torch.no_grad():
            for index, layer in enumerate(self.layers):
                bound = 1.0 / layer.in_features if index == 0 else math.sqrt(6.0 / layer.in_features) / self.omega0
                layer.weight.uniform_(-bound, bound)
                layer.bias.uniform_(-bound, bound)

    def forward(self, x: Tensor) -> Tensor:
        """(Q, inputs) -> (Q, outputs): `fast` for float32 CPU inference, else `exact`."""
        if torch.is_grad_enabled() or x.device.type != "cpu" or x.dtype != torch.float32:
            return self.exact(x)
        return self.fast(x)

    def folded(self) -> list[tuple[Tensor, Tensor]]:
        """Per layer (W^T (in, out), b (out,)), the w0 scale folded into each sine layer's."""
        *hidden, last = self.layers
        pairs = [((layer.weight * self.omega0).t(), layer.bias * self.omega0) for layer in hidden]
        return pairs + [(last.weight.t(), last.bias)]

    def exact(self, x: Tensor) -> Tensor:
        """(Q, inputs) -> (Q, outputs) in plain PyTorch with torch.sin: the reference, differentiable."""
        *hidden, (weight, bias) = self.folded()
        for w, b in hidden:
            x = torch.addmm(b, x, w).sin_()
        return torch.addmm(bias, x, weight)

    @torch.no_grad()
    def fast(self, x: Tensor, block: int | None = None) -> Tensor:
        """(Q, inputs) float32 CPU -> (Q, outputs), no autograd: blocks of `block` rows, each layer an
        addmm into a preallocated buffer and numpy's sine in place on it (block: BLOCK_ROWS if None),
        the blocks shared among torch.get_num_threads() Python threads."""
        block = block or BLOCK_ROWS
        *hidden, (weight, bias) = self.folded()
        # The narrow last layer (32 -> K) runs feature-major, (K, 32) @ h^T into columns of a (K, Q)
        # output transposed once at the end: 3-4x faster in MKL than h @ W^T
        out_t = torch.empty((weight.shape[1], x.shape[0]), dtype=x.dtype)
        starts = range(0, x.shape[0], block)
        streams = threads_for(len(starts))

        def stream(index: int) -> None:  # every streams-th block, through its own buffers
            buffers = [torch.empty((min(block, x.shape[0]), w.shape[1]), dtype=x.dtype) for w, _ in hidden]
            for start in starts[index::streams]:
                h = x[start:start + block]
                for (w, b), buffer in zip(hidden, buffers):
                    h = torch.addmm(b, h, w, out=buffer[:h.shape[0]])
                    values = h.numpy()
                    np.sin(values, out=values)
                torch.addmm(bias.unsqueeze(1), weight.t(), h.t(), out=out_t[:, start:start + h.shape[0]])

        run_threads(stream, streams)
        return out_t.t().contiguous()
