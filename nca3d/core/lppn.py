"""The LPPN decoder: a SIREN fed [local coordinate, interpolated cell state].

The forwards give the same values: `exact`, plain PyTorch (autograd, any device; the reference),
`trained` (autograd on float32 CPU tensors with the compiled sine and a cosine backward), and the
fast ones for CPU inference (`fast` on given rows, `fast_interpolated` on the rows of a
decode, gathered block by block): rows in cache-sized blocks through preallocated buffers, with a
compiled polynomial sine in place (nca3d.sine: about 12x torch.sin's speed here, within 5e-7 of the
exact sine: tested), the blocks shared among torch.get_num_threads() Python threads (core.threads).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..lattices.base import cpu_empty, transpose_into
from ..sine import sine_
from .threads import run_threads, shared_numbers, threads_for

BLOCK_ROWS = 4096  # rows per block of the fast forward: a block's activations (32 wide) stay in L2
HALF_PI = math.pi / 2


class _Sine(torch.autograd.Function):
    """sin of a float32 CPU tensor by nca3d.sine, with the cosine (the sine of x + pi/2) in the backward."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        ctx.save_for_backward(x)
        return sine_(x.contiguous().clone())

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        (x,) = ctx.saved_tensors
        return sine_(x + HALF_PI).mul_(grad)


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
        """(Q, inputs) -> (Q, outputs): on float32 CPU tensors `fast` for inference and `trained`
        with autograd; else `exact`."""
        if x.device.type != "cpu" or x.dtype != torch.float32:
            return self.exact(x)
        return self.trained(x) if torch.is_grad_enabled() else self.fast(x)

    def folded(self) -> list[tuple[Tensor, Tensor]]:
        """Per layer (W^T (in, out), b (out,)), the w0 scale folded into each sine layer's."""
        *hidden, last = self.layers
        pairs = [((layer.weight * self.omega0).t(), layer.bias * self.omega0) for layer in hidden]
        return pairs + [(last.weight.t(), last.bias)]

    def exact(self, x: Tensor) -> Tensor:
        """(Q, inputs) -> (Q, outputs) in plain PyTorch with torch.sin: the reference, differentiable."""
        return self._layers(x, torch.sin)

    def trained(self, x: Tensor) -> Tensor:
        """`exact` with the compiled sine (nca3d.sine) and its cosine in the backward: float32 CPU
        training, whose volume renders decode millions of points (torch's sin and cos were a fifth
        of a volume iteration)."""
        return self._layers(x, _Sine.apply)

    def _layers(self, x: Tensor, sine: Callable[[Tensor], Tensor]) -> Tensor:
        *hidden, (weight, bias) = self.folded()
        for w, b in hidden:
            x = sine(torch.addmm(b, x, w))
        return torch.addmm(bias, x, weight)

    @torch.no_grad()
    def fast(self, x: Tensor, block: int | None = None) -> Tensor:
        """(Q, inputs) float32 CPU -> (Q, outputs), no autograd: `_blocks` with the first layer an
        addmm on the block's rows of x (block: BLOCK_ROWS if None)."""
        (weight, bias), *rest = self.folded()
        out_t = self._blocks(x.shape[0], lambda rows, out: torch.addmm(bias, x[rows], weight, out=out), rest, block)
        return transpose_into(out_t, torch.empty(out_t.shape[::-1], dtype=out_t.dtype))

    @torch.no_grad()
    def first_layer_table(self, cells: Tensor) -> Tensor:
        """Cell states (..., C) -> (..., width): each one's part of the first layer's pre-activation
        with the bias (w0 folded in). The first layer is linear, so weights that sum to 1 interpolate
        these rows into the state part of an interpolated state's pre-activation plus the bias."""
        weight, bias = self.folded()[0]
        flat = cells.reshape(-1, cells.shape[-1])
        table = cpu_empty((flat.shape[0], weight.shape[1])) if flat.device.type == "cpu" else None
        return torch.addmm(bias, flat, weight[weight.shape[0] - flat.shape[1]:], out=table).view(*cells.shape[:-1], -1)

    @torch.no_grad()
    def fast_interpolated(self, source: Tensor, corners: Tensor, weights: Tensor, local: Tensor,
                          tabled: bool = False, block: int | None = None) -> Tensor:
        """The fast forward of the decoder rows [local, sum_k weights[:, k] cells[corners[:, k]]]
        (weights summing to 1), gathered block by block with a fused weighted gather (F.embedding_bag)
        -> feature-major outputs (outputs, Q). corners (Q, K) long and weights (Q, K) contiguous,
        local (Q, D); source: the cells (M, C), or with `tabled` their first_layer_table (M, width),
        whose gather leaves only local's part of the first layer (an addmm onto it). All float32 CPU."""
        (weight, bias), *rest = self.folded()
        dims = local.shape[1]

        def first(rows: slice, out: Tensor) -> Tensor:
            gathered = F.embedding_bag(corners[rows], source, mode="sum", per_sample_weights=weights[rows])
            if tabled:
                return torch.addmm(gathered, local[rows], weight[:dims], out=out)
            return torch.addmm(bias, torch.cat([local[rows], gathered], dim=1), weight, out=out)

        return self._blocks(corners.shape[0], first, rest, block)

    def _blocks(self, count: int, first: Callable[[slice, Tensor], Tensor], rest: list[tuple[Tensor, Tensor]],
                block: int | None) -> Tensor:
        """Feature-major outputs (outputs, count) of `count` rows in blocks of `block` rows (BLOCK_ROWS
        if None), shared among torch.get_num_threads() Python threads: per block first(rows, out)
        writes the first layer's pre-activation (rows, width) into out; the sine in place (nca3d.sine),
        then per later layer (folded `rest`) an addmm into one of two preallocated buffers and the sine."""
        block = block or BLOCK_ROWS
        *hidden, (weight, bias) = rest
        # The narrow last layer (32 -> K) runs feature-major, (K, 32) @ h^T into columns of a (K, Q)
        # output: 3-4x faster in MKL than h @ W^T
        out_t = torch.empty((weight.shape[1], count), dtype=weight.dtype)
        starts = range(0, count, block)
        streams, numbers = threads_for(len(starts)), shared_numbers(len(starts))

        def stream(_: int) -> None:  # the next block free, through the stream's own two buffers
            buffers = [torch.empty((min(block, count), weight.shape[0]), dtype=weight.dtype) for _ in range(2)]
            for start in map(starts.__getitem__, numbers()):
                rows = slice(start, min(count, start + block))
                h = sine_(first(rows, buffers[0][:rows.stop - start]))
                for layer, (w, b) in enumerate(hidden, 1):
                    h = sine_(torch.addmm(b, h, w, out=buffers[layer % 2][:h.shape[0]]))
                torch.addmm(bias.unsqueeze(1), weight.t(), h.t(), out=out_t[:, rows])

        run_threads(stream, streams)
        return out_t

