"""The damage experiment: healing shown on a model built to heal; mechanics on a random one."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nca3d.core.model import Model, ModelConfig
from nca3d.train import damage
from tests.conftest import random_model
from tests.render.test_scenes import GRIDS, SMALL


def relaxing_model(domain: str, target: float = 0.6, rate: float = 0.5, **config) -> Model:
    """A model that heals by construction: every cell relaxes to a fixed state t (update = -rate (s - t),
    built from the identity perception with relu(s - t) and relu(t - s) hidden units), and the
    random LPPN decodes t as a fine periodic pattern."""
    channels = 6
    model = Model(ModelConfig(domain=domain, channels=channels, hidden=2 * channels, **config))
    goal = torch.linspace(-target, target, channels)
    with torch.no_grad():
        first, last = model.nca.perceive_to_hidden, model.nca.hidden_to_update
        first.weight.zero_()
        last.weight.zero_()
        for c in range(channels):  # the identity filter comes first in every lattice's perception
            first.weight[2 * c, c], first.bias[2 * c] = 1.0, -goal[c]
            first.weight[2 * c + 1, c], first.bias[2 * c + 1] = -1.0, goal[c]
            last.weight[c, 2 * c], last.weight[c, 2 * c + 1] = -rate, rate
    return model.eval()


@pytest.mark.parametrize("domain", ["2d", "volume", "mesh"])
def test_damage_heals_on_a_healing_model(domain, stats):
    outputs = {"2d": "rgb", "volume": "rgba", "mesh": "rgb"}[domain]
    model = relaxing_model(domain, outputs=outputs, **GRIDS[domain])
    result = damage.damage_experiment(model, steps=40, heal_steps=40, pixels=48, stats=stats)
    f = result.figures
    assert f["erased_cells"] > 0 and 0 < f["erased_fraction"] < 0.5
    assert f["error_damaged"] > 0.05
    assert f["error_healed"] < 0.2 * f["error_damaged"]
    assert f["recovery"] > 0.8
    assert result.panel.shape == (48, 3 * 48 + 4, 3)


def test_damage_mechanics_on_a_random_model(tmp_path, stats, monkeypatch):
    """A random model need not heal; the experiment still erases, measures and draws."""
    model = random_model("2d", outputs="pbr", **SMALL, **GRIDS["2d"]).eval()
    erased_states = []
    real = damage.erase_ball

    def spy(state, lattice, centre, radius):
        mask = real(state, lattice, centre, radius)
        erased_states.append((state.reshape(-1, state.shape[-1])[mask].clone(), mask))
        return mask

    monkeypatch.setattr(damage, "erase_ball", spy)
    result = damage.damage_experiment(model, steps=12, heal_steps=12, pixels=40, stats=stats)
    (values, mask), = erased_states
    assert mask.any() and float(values.abs().max()) == 0.0  # the region really is the seed state
    assert int(mask.sum()) == result.figures["erased_cells"]
    for key in ("error_damaged", "error_healed", "error_intact"):
        assert np.isfinite(result.figures[key]) and result.figures[key] >= 0
    panel = result.panel
    assert panel.shape == (40, 124, 3) and panel.dtype == np.uint8
    before, after = panel[:, :40].astype(int), panel[:, 42:82].astype(int)
    assert np.abs(before[16:24, 16:24] - after[16:24, 16:24]).mean() > 1.0  # the hole shows
    assert np.abs(before[34:, 30:] - after[34:, 30:]).mean() < 1e-9  # far from it nothing changed (yet)
