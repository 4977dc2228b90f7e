import importlib

import pytest
import torch

from nca3d.core.model import Model, ModelConfig
from nca3d.render.raycast import available_backends

requires_raycaster = pytest.mark.skipif(
    not available_backends(), reason="neither embreex nor open3d imports: pip install embreex (x86-64) or "
    "pip install 'nca3d[open3d]'")


def optional_import(module: str, reason: str, module_level: bool = False):
    """Import an optional package or skip. Any failure to import skips, not only a missing module:
    open3d-cpu without the system library libusb raises a plain ImportError, another package an
    OSError (pytest.importorskip lets those through as collection errors)."""
    try:
        return importlib.import_module(module)
    except Exception as exc:  # noqa: BLE001
        detail = " ".join(str(exc).split())[:160]
        pytest.skip(f"{reason} ({type(exc).__name__}: {detail})", allow_module_level=module_level)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def random_model(domain: str, **config) -> Model:
    """A model with random (non-identity) NCA and LPPN weights."""
    model = Model(ModelConfig(domain=domain, **config))
    with torch.no_grad():
        model.nca.hidden_to_update.weight.normal_(std=0.05)
    return model


@pytest.fixture(scope="module")
def stats():
    from nca3d.train.quality import TextureStatistics

    optional_import("plenoptic", "the damage figures need plenoptic (pip install 'nca3d[bench]')")
    return TextureStatistics()
