"""nca3d.core.dense: the dense-grid decode of 2D and volume states (separable = generic = the model's
decode at the same points, within float rounding), its layout, chunking and refusals. Tiny models."""

from __future__ import annotations

import itertools

import pytest
import torch

from nca3d.core.dense import decode_grid, decode_grid_chunks
from nca3d.core.nca import make_generator
from tests.conftest import random_model


def _grown(domain: str, grid_size, harmonics: int, outputs: str = ""):
    """A random model (seed 0) and its state after 5 steps from the seed (seed 1), with a varied state."""
    torch.manual_seed(0)
    model = random_model(domain, grid_size=grid_size, harmonics=harmonics, **({"outputs": outputs} if outputs else {}))
    with torch.no_grad():
        model.nca.perceive_to_hidden.bias.normal_(std=0.2)
    lattice = model.make_lattice()
    with torch.inference_mode():
        state = model.rollout(model.seed(lattice, batch=2), lattice, 5, make_generator(1))
    return model, lattice, state


CASES = [  # domain, grid size (array order), harmonics, grid shape, axes
    ("2d", [7, 11], 0, (23, 30), None),  # non-square lattice, sizes no multiple of it
    ("2d", [9, 5], 2, (16, 13), None),
    ("2d", [6, 10], 1, (17, 8), (0, 1)),  # rows along x
    ("volume", [5, 7, 9], 2, (11, 6, 13), None),
    ("volume", [6, 4, 5], 0, (9, 10, 7), (0, 1, 2)),  # decode_volume's (x, y, z) order
    ("volume", [4, 6, 5], 1, (8, 7, 9), (1, 0, 2)),
]


@pytest.mark.parametrize("domain, grid_size, harmonics, shape, axes", CASES)
def test_separable_equals_generic_and_the_models_decode(domain, grid_size, harmonics, shape, axes):
    model, lattice, state = _grown(domain, grid_size, harmonics, "pbr" if domain == "2d" else "")
    generic = decode_grid(model, state, lattice, shape, axes=axes, method="generic")
    assert generic.shape == (*shape, model.num_outputs)
    for chunk in (1, 7, 50, 1000, 100_000):  # parts of a slice, whole slices, all at once
        separable = decode_grid(model, state, lattice, shape, axes=axes, chunk=chunk)
        torch.testing.assert_close(separable, generic, rtol=1e-5, atol=1e-6, msg=f"chunk {chunk}")
    # grid point (i_0, ..., i_d-1) sits at cell coordinate (i_k + 0.5) * n / shape[k] on axis axes[k]
    dims = len(shape)
    axes = axes or tuple(range(dims))[::-1]
    generator = torch.Generator().manual_seed(2)
    picks = torch.stack([torch.randint(0, n, (25,), generator=generator) for n in shape], dim=1)
    points = torch.empty(len(picks), dims)
    for k, axis in enumerate(axes):
        points[:, axis] = (picks[:, k] + 0.5) * lattice.sizes_xyz[axis] / shape[k]
    with torch.no_grad():
        reference = model.decode(state[:1], lattice, points)[0]
    torch.testing.assert_close(generic[tuple(picks.T)], reference, rtol=1e-5, atol=1e-6)


def test_an_image_is_rows_of_y_over_one_period():
    """Default axes on a 2D lattice: (rows, cols) = (y, x), as Grid2D.sample_points orders them."""
    model, lattice, state = _grown("2d", [6, 8], 1, "rgb")
    image = decode_grid(model, state, lattice, (18, 24))  # 3 pixels per cell
    with torch.no_grad():
        reference = model.decode(state[:1], lattice, lattice.sample_points(3.0))[0].reshape(18, 24, -1)
    torch.testing.assert_close(image, reference, rtol=1e-5, atol=1e-6)
    assert decode_grid(model, state, lattice, 5).shape == (5, 5, 3)  # an int: that many along each axis


def test_chunks_cover_the_grid_in_order_within_the_chunk_size(monkeypatch):
    model, lattice, state = _grown("2d", [5, 7], 0)
    seen = []
    real = model.lppn.forward
    monkeypatch.setattr(model.lppn, "forward", lambda x: seen.append(x.shape[0]) or real(x))
    for method in ("separable", "generic"):
        seen.clear()
        spans = [(start, stop) for start, stop, _ in decode_grid_chunks(model, state, lattice, (9, 40), chunk=64,
                                                                         method=method)]
        assert spans[0][0] == 0 and spans[-1][1] == 360
        assert all(a[1] == b[0] for a, b in itertools.pairwise(spans))
        assert max(seen) <= 64 and sum(seen) == 360, method


def test_grad_mode_stays_the_callers():
    model, lattice, state = _grown("2d", [5, 5], 0)
    chunks = decode_grid_chunks(model, state, lattice, 8)
    assert torch.is_grad_enabled()
    next(chunks)
    assert torch.is_grad_enabled() and not torch.is_inference_mode_enabled()


def test_refusals():
    model, lattice, state = _grown("2d", [5, 5], 0)
    with pytest.raises(ValueError, match="method"):
        decode_grid_chunks(model, state, lattice, 8, method="fast")
    with pytest.raises(ValueError, match="2 sizes"):
        decode_grid_chunks(model, state, lattice, (8, 8, 8))
    with pytest.raises(ValueError, match="axes"):
        decode_grid_chunks(model, state, lattice, (8, 8), axes=(0, 0))
    mesh_model = random_model("mesh", icosphere_frequency=2)
    with pytest.raises(TypeError, match="square or cube"):
        decode_grid_chunks(mesh_model, None, mesh_model.make_lattice(), 8)
    volume = random_model("volume", grid_size=[4, 4, 4])
    with pytest.raises(ValueError, match="cannot run"):
        decode_grid_chunks(volume, state, lattice, 8)
