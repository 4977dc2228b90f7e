import pytest
import torch

from nca3d.core.model import ModelConfig
from nca3d.core.nca import make_generator
from nca3d.device import resolve_device
from nca3d.errors import NCA3DError
from nca3d.lattices import SurfacePoints
from tests.conftest import random_model


def _grown(model, lattice, steps=4):
    with torch.no_grad():
        return model.rollout(torch.randn(2, *lattice.cell_shape, 16) * 0.3, lattice, steps, make_generator(0))


@pytest.mark.parametrize("domain", ["2d", "volume"])
def test_chunked_decode_equals_unchunked_on_grids(domain):
    model = random_model(domain, grid_size=[6] * (2 if domain == "2d" else 3))
    lattice = model.make_lattice()
    state = _grown(model, lattice)
    points = lattice.sample_points(2.5)
    with torch.no_grad():
        whole = model.decode(state, lattice, points, chunk=10 ** 9)
        chunked = model.decode(state, lattice, points, chunk=37)
    assert whole.shape == (2, len(points), model.num_outputs)
    assert torch.allclose(whole, chunked, atol=1e-6)


def test_chunked_decode_equals_unchunked_on_meshes():
    model = random_model("mesh", icosphere_frequency=3)
    lattice = model.make_lattice()
    state = _grown(model, lattice)
    g = torch.Generator().manual_seed(0)
    bary = torch.rand(999, 3, generator=g)
    query = SurfacePoints(torch.randint(0, lattice.faces.shape[0], (999,), generator=g), bary / bary.sum(1, keepdim=True))
    with torch.no_grad():
        assert torch.allclose(model.decode(state, lattice, query, chunk=10 ** 9), model.decode(state, lattice, query, chunk=64), atol=1e-6)


def test_output_channels_and_activations():
    model = random_model("volume", grid_size=[4, 4, 4])
    assert [c.name for c in model.outputs] == ["rgb", "density"]
    assert model.channel_slices() == {"rgb": slice(0, 3), "density": slice(3, 4)}
    raw = torch.tensor([[-1.0, 0.5, 2.0, -30.0]])
    out = model.activate(raw)
    assert torch.allclose(out[:, :3], torch.tensor([[0.0, 0.5, 2.0]]))
    assert 0 < out[0, 3] < 1e-6
    pbr = random_model("2d")
    assert [(c.name, c.colour_space) for c in pbr.outputs] == [
        ("albedo", "srgb"), ("height", "non-color"), ("roughness", "non-color"), ("ao", "non-color"), ("normal", "non-color")]
    assert torch.allclose(pbr.activate(torch.zeros(1, 9)), torch.full((1, 9), 0.5))


def test_config_validation():
    with pytest.raises(ValueError, match="use rgba"):
        ModelConfig(domain="volume", outputs="pbr")
    with pytest.raises(ValueError, match="unknown domain"):
        ModelConfig(domain="4d")
    assert ModelConfig(domain="mesh").outputs == "rgb"
    assert ModelConfig(domain="volume").grid_size == [64, 64, 64]


def test_a_2d_model_refuses_a_3d_lattice():
    model = random_model("2d", grid_size=[4, 4])
    volume = random_model("volume", grid_size=[4, 4, 4]).make_lattice()
    with pytest.raises(ValueError, match="cannot run"):
        model.rollout(torch.zeros(1, 4, 4, 4, 16), volume, 1)


def test_device_choice():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(NCA3DError, match="unknown device"):
        resolve_device("tpu:banana")
    if not torch.cuda.is_available():
        with pytest.raises(NCA3DError, match="CUDA is not available"):
            resolve_device("cuda")


@pytest.mark.parametrize("domain", ["2d", "volume"])
def test_activation_in_place_without_autograd_equals_the_differentiable_one(domain):
    model = random_model(domain)
    raw = torch.randn(50, model.num_outputs) * 5
    expected = model.activate(raw.clone().requires_grad_(True)).detach()
    with torch.inference_mode():
        assert (model.activate(raw.clone()) - expected).abs().max() < 1e-6  # vectorised softplus rounds apart
        feature_major = model.activate(raw.t().contiguous(), dim=0)  # the fast decode's (K, Q) outputs
        assert (feature_major.t() - expected).abs().max() < 1e-6
