import math

import pytest
import torch

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
    forward (numpy's sine) stays within float rounding of the exact one (torch.sin)."""
    torch.manual_seed(0)
    siren = SIREN(5, 3, width=16, omega0=30.0)
    x = torch.randn(50, 5) * 20
    with torch.no_grad():
        exact, fast = siren.exact(x), siren.fast(x, block=7)
    assert fast.shape == exact.shape == (50, 3)
    assert (fast - exact).abs().max() < 1e-5


def test_forward_is_fast_in_inference_and_exact_with_autograd():
    torch.manual_seed(1)
    siren = SIREN(4, 2, width=8)
    x = torch.randn(9, 4)
    with torch.inference_mode():
        assert torch.equal(siren(x), siren.fast(x))
    trained = siren(x)
    assert trained.requires_grad and torch.equal(trained, siren.exact(x))


@pytest.mark.parametrize("domain", ["2d", "mesh", "volume"])
def test_inference_decode_is_within_a_tiny_fraction_of_one_level_of_the_exact_decode(domain, monkeypatch):
    """Decoded outputs (2000 points, several fast blocks) against the same decode through the exact
    SIREN: the bound the fast path keeps is 1/255; it keeps 1e-5."""
    from nca3d.core import lppn

    torch.manual_seed(2)
    model = random_model(domain)
    lattice = model.make_lattice()
    state = torch.randn(1, *lattice.cell_shape, model.config.channels)
    if domain == "mesh":
        from nca3d.lattices import SurfacePoints

        bary = torch.rand(2000, 3)
        query = SurfacePoints(torch.randint(0, lattice.faces.shape[0], (2000,)), bary / bary.sum(1, keepdim=True))
    else:
        query = torch.rand(2000, len(lattice.cell_shape)) * 40
    monkeypatch.setattr(lppn, "BLOCK_ROWS", 300)
    with torch.inference_mode():
        fast = model.decode(state, lattice, query)
        monkeypatch.setattr(SIREN, "fast", lambda self, x: self.exact(x))
        exact = model.decode(state, lattice, query)
    assert (fast - exact).abs().max() < 1e-5
