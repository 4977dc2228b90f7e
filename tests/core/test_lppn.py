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
