"""nca3d.core.gather: the weighted gather's values and gradients are embedding_bag's."""

import pytest
import torch
import torch.nn.functional as F

from nca3d.core import gather
from nca3d.core.gather import weighted_gather


def _case(dtype, rows=50, points=400, corners=8, channels=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    source = torch.randn(rows, channels, generator=g, dtype=dtype)
    index = torch.randint(0, rows, (points, corners), generator=g)
    weights = torch.rand(points, corners, generator=g, dtype=dtype)
    grad = torch.randn(points, channels, generator=g, dtype=dtype)
    return source, index, weights, grad


def _reference(source, index, weights, grad):
    source = source.clone().requires_grad_()
    out = F.embedding_bag(index, source, mode="sum", per_sample_weights=weights)
    out.backward(grad)
    return out.detach(), source.grad


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("numba", [True, False])
def test_values_and_source_gradient_are_embedding_bags(monkeypatch, dtype, numba):
    """float32 takes the compiled scatter (where numba imports), float64 and numba-less runs the
    torch index_add_; repeated indices (50 rows, 3200 picks) accumulate."""
    if not numba:
        monkeypatch.setattr(gather, "compiled", lambda function: None)
    source, index, weights, grad = _case(dtype)
    want_out, want_grad = _reference(source, index, weights, grad)
    leaf = source.clone().requires_grad_()
    out = weighted_gather(leaf, index, weights)
    out.backward(grad)
    tolerance = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(out.detach(), want_out, **tolerance)
    torch.testing.assert_close(leaf.grad, want_grad, **tolerance)


def test_gradcheck_in_float64():
    source, index, weights, _ = _case(torch.float64, rows=6, points=10, corners=3, channels=2)
    assert torch.autograd.gradcheck(lambda s: weighted_gather(s, index, weights), (source.requires_grad_(),))


def test_weights_that_need_a_gradient_get_embedding_bags():
    source, index, weights, grad = _case(torch.float64, rows=8, points=20, corners=4, channels=3)
    leaf, w = source.clone().requires_grad_(), weights.clone().requires_grad_()
    weighted_gather(leaf, index, w).backward(grad)
    want_source, want_w = source.clone().requires_grad_(), weights.clone().requires_grad_()
    F.embedding_bag(index, want_source, mode="sum", per_sample_weights=want_w).backward(grad)
    torch.testing.assert_close(w.grad, want_w.grad)
    torch.testing.assert_close(leaf.grad, want_source.grad)
