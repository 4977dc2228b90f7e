import pytest
import torch

from nca3d.model import Model, ModelConfig


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def random_model(domain: str, **config) -> Model:
    """A model with random (non-identity) NCA and LPPN weights."""
    model = Model(ModelConfig(domain=domain, **config))
    with torch.no_grad():
        model.nca.hidden_to_update.weight.normal_(std=0.05)
    return model
