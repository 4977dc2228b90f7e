"""The CUDA paths against the CPU reference. Skipped where torch sees no GPU (as in CI).

Run them on a machine with one: `python -m pytest -q tests/test_cuda.py`. With every cell firing
(fire rate 1) a rollout is the same arithmetic on both devices, so states and decodes must agree
to float32 rounding; stochastic runs can only be compared by their statistics, since CUDA's and
the CPU's random streams differ.
"""

import copy

import numpy as np
import pytest
import torch
from PIL import Image

from nca3d.cli import main
from nca3d.core import nca as nca_module
from nca3d.core.nca import make_generator
from nca3d.io.model_file import load_model
from nca3d.lattices import Grid2D, Grid3D, SurfacePoints, icosphere
from nca3d.progress import Progress
from nca3d.train.trainer import Trainer
from tests.conftest import random_model, requires_raycaster
from tests.train.test_trainer import tiny_config

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


def lattice_and_query(model, device):
    """A small lattice of the model's kind and 4096 decode points on it."""
    g = torch.Generator().manual_seed(3)
    if model.config.domain == "2d":
        lattice, query = Grid2D((24, 20), model.config.harmonics), torch.rand(4096, 2, generator=g) * 24
    elif model.config.domain == "volume":
        lattice, query = Grid3D((12, 10, 8), model.config.harmonics), torch.rand(4096, 3, generator=g) * 12
    else:
        lattice = model.make_lattice(mesh=icosphere(6))
        faces = int(lattice.faces.shape[0])
        bary = torch.rand(4096, 3, generator=g)
        query = SurfacePoints(torch.randint(0, faces, (4096,), generator=g), bary / bary.sum(1, keepdim=True))
    return lattice.to(device), query


@pytest.mark.parametrize("gpu_block_cells", [None, 64], ids=["one block", "blocks of 64 cells"])
@pytest.mark.parametrize("domain", ["2d", "volume", "mesh"])
def test_rollout_and_decode_match_the_cpu(domain, gpu_block_cells, monkeypatch):
    if gpu_block_cells:  # the blocks a lattice over GPU_BLOCK_CELLS is stepped in
        monkeypatch.setattr(nca_module, "GPU_BLOCK_CELLS", gpu_block_cells)
    cpu_model = random_model(domain)
    cpu_model.nca.fire_rate = 1.0  # every cell fires: no random mask, the same arithmetic on both devices
    cuda_model = copy.deepcopy(cpu_model).to("cuda")
    results = []
    for model in (cpu_model, cuda_model):
        lattice, query = lattice_and_query(model, model.device)
        with torch.no_grad():
            state = model.seed(lattice, 2)
            state = model.rollout(state, lattice, 24)
            decoded = model.decode(state, lattice, query)
        results.append((state.cpu(), decoded.cpu()))
    (cpu_state, cpu_decoded), (cuda_state, cuda_decoded) = results
    assert cpu_state.abs().max() > 1e-3  # the rollout did something
    torch.testing.assert_close(cuda_state, cpu_state, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(cuda_decoded, cpu_decoded, rtol=1e-4, atol=1e-4)


def test_stochastic_rollouts_on_cuda_are_reproducible_and_fire_at_the_set_rate():
    model = random_model("2d").to("cuda")
    lattice = model.make_lattice()
    with torch.no_grad():
        runs = [model.rollout(model.seed(lattice, 2), lattice, 16, make_generator(5, "cuda")) for _ in range(2)]
        assert torch.equal(runs[0], runs[1])
        fired = (model.nca.step(runs[0], lattice, make_generator(6, "cuda")) != runs[0]).any(-1).float().mean()
    assert 0.45 < float(fired) < 0.55  # fire rate 0.5


@pytest.mark.parametrize("domain", ["2d", "volume", pytest.param("mesh", marks=requires_raycaster)])
def test_a_run_trained_on_cuda_loads_and_resumes_on_the_cpu(tmp_path, monkeypatch, domain):
    monkeypatch.setenv("NCA3D_CACHE", str(tmp_path / "cache"))
    overrides = {"grid": 12} if domain == "mesh" else {}
    trainer = Trainer(tiny_config(tmp_path, domain, device="cuda", **overrides), Progress("none"))
    files = trainer.run()
    assert trainer.pool.device.type == "cuda"
    assert np.mean(trainer.losses[-5:]) < np.mean(trainer.losses[:5])
    model = load_model(files[0])  # a model file carries no device: it loads on the CPU
    assert model.device.type == "cpu"
    with torch.no_grad():
        lattice = model.make_lattice()
        assert torch.isfinite(model.rollout(model.seed(lattice), lattice, 8)).all()
    resumed = Trainer(tiny_config(tmp_path, domain, device="cpu", iters=24, **overrides), Progress("none"))
    resumed.run(resume=True)
    assert resumed.iteration == 24 and resumed.losses[:20] == trainer.losses


def test_volume_command_on_cuda_writes_what_the_cpu_writes(tmp_path):
    from nca3d.commands.volume import main as volume_main

    means = {}
    for device in ("cpu", "cuda"):
        out = tmp_path / device
        assert volume_main(["--out", str(out), "--res", "48", "--steps", "48", "--device", device,
                            "--progress", "none"]) == 0
        assert (out / "volume.vdb").stat().st_size > 0
        with np.load(out / "volume.npz") as arrays:
            density = arrays["density"]
        assert np.isfinite(density).all()
        means[device] = float(density.mean())
    assert means["cpu"] > 0
    assert abs(means["cuda"] - means["cpu"]) < 0.15 * means["cpu"]  # another random stream, the same material


def test_maps_command_on_cuda(tmp_path):
    assert main(["maps", "--model", "granite_2d", "--out", str(tmp_path), "--size", "128", "--steps", "32",
                 "--device", "cuda"]) == 0
    albedo = np.asarray(Image.open(next(tmp_path.glob("*albedo.png"))), dtype=np.float32)
    assert albedo.shape[:2] == (128, 128) and albedo.std() > 2.0
