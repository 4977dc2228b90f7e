import math

import pytest
import torch

from nca3d.core import lppn
from nca3d.core.lppn import SIREN
from tests.conftest import random_model


@pytest.mark.parametrize("domain,outputs,expected", [("2d", "pbr", 3017), ("mesh", "rgb", 2851), ("volume", "rgba", 2884)])
def test_lppn_parameter_counts_match_the_spec(domain, outputs, expected):
    assert random_model(domain, outputs=outputs).lppn_params == expected


def test_siren_init_bounds():
    siren = SIREN(19, 3, width=32, omega0=10.0)
    first, *rest = siren.layers
    assert first.weight.abs().max() <= 1 / 19
    assert first.weight.abs().max() > 0.8 / 19
    for layer in rest:
        bound = math.sqrt(6 / layer.in_features) / 10.0
        assert layer.weight.abs().max() <= bound and layer.weight.abs().max() > 0.8 * bound


def test_siren_forward_is_the_textbook_formula():
    siren = SIREN(5, 2, width=8, omega0=10.0)
    x = torch.randn(7, 5)
    h = x
    for layer in siren.layers[:-1]:
        h = torch.sin(10.0 * (h @ layer.weight.t() + layer.bias))
    expected = h @ siren.layers[-1].weight.t() + siren.layers[-1].bias
    assert torch.allclose(siren(x), expected, atol=1e-5)


def test_fast_forward_equals_the_exact_one_over_blocks_and_large_arguments():
    """Several blocks and a partial last one, pre-activations far outside [-pi, pi]; the fast
    forward (nca3d.sine) stays within float rounding of the exact one (torch.sin)."""
    torch.manual_seed(0)
    siren = SIREN(5, 3, width=16, omega0=30.0)
    x = torch.randn(50, 5) * 20
    with torch.no_grad():
        exact, fast = siren.exact(x), siren.fast(x, block=7)
    assert fast.shape == exact.shape == (50, 3)
    assert (fast - exact).abs().max() < 1e-5


def test_forward_is_fast_in_inference_and_trained_with_autograd():
    torch.manual_seed(1)
    siren = SIREN(4, 2, width=8)
    x = torch.randn(9, 4)
    with torch.inference_mode():
        assert torch.equal(siren(x), siren.fast(x))
    trained = siren(x)
    assert trained.requires_grad and torch.equal(trained, siren.trained(x))
    wide = siren.double()
    assert torch.equal(wide(x.double()), wide.exact(x.double()))  # other dtypes: exact


def test_trained_forward_and_gradients_are_the_exact_ones():
    """The compiled sine and its cosine backward: values and every gradient (weights, biases and
    the input's) within float32 rounding of torch.sin's autograd, pre-activations far beyond pi."""
    torch.manual_seed(3)
    siren = SIREN(5, 3, width=16, omega0=30.0)
    x = (torch.randn(200, 5) * 3).requires_grad_()
    grad = torch.randn(200, 3)
    results = []
    for forward in (siren.exact, siren.trained):
        siren.zero_grad()
        x.grad = None
        out = forward(x)
        out.backward(grad)
        results.append([out.detach(), x.grad.clone(), *(p.grad.clone() for p in siren.parameters())])
    for exact, trained in zip(*results):
        scale = exact.abs().max()
        assert (trained - exact).abs().max() <= 2e-5 * scale


SMALL = {"2d": {"grid_size": [12, 10]}, "mesh": {"icosphere_frequency": 3}, "volume": {"grid_size": [6, 5, 7]}}


def _decode_case(domain: str, points: int = 1500, batch: int = 2):
    """A random model on a small lattice of its domain, a batch of random states and query points."""
    torch.manual_seed(2)
    model = random_model(domain, **SMALL[domain])
    lattice = model.make_lattice()
    state = torch.randn(batch, *lattice.cell_shape, model.config.channels)
    if domain == "mesh":
        from nca3d.lattices import SurfacePoints

        bary = torch.rand(points, 3)
        query = SurfacePoints(torch.randint(0, lattice.faces.shape[0], (points,)), bary / bary.sum(1, keepdim=True))
    else:
        query = (torch.rand(points, len(lattice.cell_shape)) - 0.3) * 40  # negative and beyond one period
    return model, lattice, state, query


def _exact_decode(model, state, lattice, query):
    model.lppn.trained = model.lppn.exact  # the autograd path with torch.sin: the reference
    try:
        with torch.enable_grad():  # autograd: the plain path (plain gather, SIREN.exact)
            return model.decode(state, lattice, query).detach()
    finally:
        del model.lppn.trained


@pytest.mark.parametrize("tabled", [True, False])
@pytest.mark.parametrize("domain", ["2d", "mesh", "volume"])
def test_inference_decode_is_within_a_tiny_fraction_of_one_level_of_the_exact_decode(domain, tabled, monkeypatch):
    """Fast decodes (gathering the cells, or first-layer tables) of 2 states at 1500 points: over
    several chunks, blocks and a partial last block, and through decode_located and decode_chunks,
    against the exact decode. The bound the fast path keeps is 1/255; it keeps 1e-5."""
    from nca3d.core import model as model_module

    model, lattice, state, query = _decode_case(domain)
    monkeypatch.setattr(lppn, "BLOCK_ROWS", 300)
    monkeypatch.setattr(model_module, "TABLE_POINTS_PER_CELL", 0 if tabled else math.inf)
    exact = _exact_decode(model, state, lattice, query)
    with torch.inference_mode():
        fast = [model.decode(state, lattice, query, chunk=1400),
                torch.cat([part for _, part in model.decode_chunks(state, lattice, query, chunk=1400)], dim=1),
                model.decode_located(state, lattice.locate(query))]
    for values in fast:
        assert values.shape == exact.shape == (2, 1500, model.num_outputs)
        assert (values - exact).abs().max() < 1e-5


@pytest.mark.parametrize("wrong", ["bias", "local", "corner"])
def test_the_decode_comparison_catches_a_wrong_fast_path(wrong, monkeypatch):
    """The comparison above fails for a fast path with a plausible slip: the table without its
    bias, local coordinates of the wrong sign, a gather that takes a neighbour's corner."""
    from nca3d.core import model as model_module

    model, lattice, state, query = _decode_case("2d")
    monkeypatch.setattr(model_module, "TABLE_POINTS_PER_CELL", 0)
    exact = _exact_decode(model, state, lattice, query)
    table, fast_interpolated = SIREN.first_layer_table, SIREN.fast_interpolated
    if wrong == "bias":
        monkeypatch.setattr(SIREN, "first_layer_table", lambda self, cells: table(self, cells) - self.folded()[0][1])
    else:
        def slipped(self, source, corners, weights, local, *args):
            if wrong == "local":
                return fast_interpolated(self, source, corners, weights, -local, *args)
            return fast_interpolated(self, source, corners.roll(1, dims=1), weights, local, *args)

        monkeypatch.setattr(SIREN, "fast_interpolated", slipped)
    with torch.inference_mode():
        assert (model.decode(state, lattice, query) - exact).abs().max() > 1 / 255
