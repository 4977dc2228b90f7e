import pytest
import torch

from nca3d.model import Model, ModelConfig
from nca3d.render.raycast import available_backends

requires_raycaster = pytest.mark.skipif(
    not available_backends(), reason="neither open3d nor embreex imports: pip install 'nca3d[mesh]' "
    "(and apt-get install libusb-1.0-0) or pip install embreex")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def random_model(domain: str, **config) -> Model:
    """A model with random (non-identity) NCA and LPPN weights."""
    model = Model(ModelConfig(domain=domain, **config))
    with torch.no_grad():
        model.nca.hidden_to_update.weight.normal_(std=0.05)
    return model
