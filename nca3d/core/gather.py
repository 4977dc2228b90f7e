"""The decoder's weighted gather with a scatter backward.

`weighted_gather(source, index, weights)` is F.embedding_bag's weighted sum, sum_k weights[q, k]
source[index[q, k]], whose gradient for `source` is scattered straight into its rows. Autograd
through embedding_bag sorts every index first (its dense backward): on a volume training
iteration (2.75M ray samples, 8 corners each) that sort and its pass were a quarter of the
iteration; the scatter is one compiled loop (nca3d.jit) or, without numba or off float32 CPU
tensors, a torch index_add_ (the reference the tests compare with).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..jit import compiled


def _scatter_weighted(grad_source, index, weights, grad):
    """grad_source[index[q, k]] += weights[q, k] * grad[q] for every point q and corner k (compiled
    by nca3d.jit). grad_source (M, C), index (Q, K), weights (Q, K), grad (Q, C)."""
    for q in range(index.shape[0]):
        for k in range(index.shape[1]):
            row, w = index[q, k], weights[q, k]
            for c in range(grad.shape[1]):
                grad_source[row, c] += w * grad[q, c]


def scatter_weighted(grad: Tensor, index: Tensor, weights: Tensor, rows: int) -> Tensor:
    """The gradient (rows, C) of weighted_gather's source from the gradient of its output (Q, C)."""
    grad_source = torch.zeros((rows, grad.shape[1]), dtype=grad.dtype, device=grad.device)
    kernel = compiled(_scatter_weighted)
    if kernel is not None and grad.device.type == "cpu" and grad.dtype == weights.dtype == torch.float32:
        kernel(grad_source.numpy(), index.contiguous().numpy(), weights.contiguous().numpy(), grad.contiguous().numpy())
        return grad_source
    spread = grad.unsqueeze(1) * weights.to(grad.dtype).unsqueeze(2)  # (Q, K, C)
    return grad_source.index_add_(0, index.reshape(-1), spread.reshape(-1, grad.shape[1]))


class _WeightedGather(torch.autograd.Function):
    @staticmethod
    def forward(ctx, source: Tensor, index: Tensor, weights: Tensor) -> Tensor:
        ctx.save_for_backward(index, weights)
        ctx.rows = source.shape[0]
        return F.embedding_bag(index, source, mode="sum", per_sample_weights=weights)

    @staticmethod
    def backward(ctx, grad: Tensor):
        index, weights = ctx.saved_tensors
        return scatter_weighted(grad, index, weights, ctx.rows), None, None


def weighted_gather(source: Tensor, index: Tensor, weights: Tensor) -> Tensor:
    """sum_k weights[q, k] source[index[q, k]] -> (Q, C), for source (M, C), index (Q, K) long and
    weights (Q, K). With a gradient for `source` only: the scatter backward; otherwise (weights
    that need one, or none needed) F.embedding_bag itself."""
    if source.requires_grad and not weights.requires_grad and torch.is_grad_enabled():
        return _WeightedGather.apply(source, index, weights)
    return F.embedding_bag(index, source, mode="sum", per_sample_weights=weights)
