import pytest
import torch

from nca3d.core.nca import NCA, make_generator
from nca3d.lattices import Grid2D, Grid3D, MeshLattice, icosphere
from tests.conftest import random_model

LATTICES = {"2d": lambda: Grid2D(12), "volume": lambda: Grid3D(6), "mesh": lambda: MeshLattice(*icosphere(3))}


@pytest.mark.parametrize("domain,expected", [("2d", 10368), ("mesh", 12416), ("volume", 12416)])
def test_nca_parameter_counts_match_the_spec(domain, expected):
    assert random_model(domain).nca_params == expected


def test_new_nca_is_the_identity():
    nca = NCA(16, 128, 4)
    lattice = Grid2D(8)
    state = torch.randn(2, 8, 8, 16)
    assert torch.equal(nca.rollout(state, lattice, 5, make_generator(0)), state)
    assert nca.hidden_to_update.weight.abs().sum() == 0
    std = nca.perceive_to_hidden.weight.std().item()
    assert 0.2 * (2 / (64 + 128)) ** 0.5 * 0.8 < std < 0.2 * (2 / (64 + 128)) ** 0.5 * 1.2  # Xavier, gain 0.2


@pytest.mark.parametrize("domain", list(LATTICES))
def test_rollout_is_reproducible_under_a_seed(domain):
    model = random_model(domain)
    lattice = LATTICES[domain]()
    seed = torch.randn(2, *lattice.cell_shape, 16) * 0.1
    with torch.no_grad():
        a = model.rollout(seed, lattice, 6, make_generator(7))
        b = model.rollout(seed, lattice, 6, make_generator(7))
        c = model.rollout(seed, lattice, 6, make_generator(8))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert not torch.equal(a, seed)


@pytest.mark.parametrize("domain", list(LATTICES))
def test_inference_and_training_steps_agree(domain):
    model = random_model(domain)
    lattice = LATTICES[domain]()
    seed = torch.randn(2, *lattice.cell_shape, 16) * 0.1
    trained = model.rollout(seed, lattice, 3, make_generator(1))
    assert trained.requires_grad
    with torch.inference_mode():
        inferred = model.rollout(seed, lattice, 3, make_generator(1))
    assert torch.allclose(trained, inferred, atol=1e-5)


@pytest.mark.parametrize("domain", list(LATTICES))
def test_training_step_updates_only_fired_cells_like_the_masked_update(domain):
    """On the CPU a differentiable step sends only the fired cells through the MLP: its states and
    gradients must be those of the reference, every cell's update masked by the same fire draw."""
    model = random_model(domain)
    lattice = LATTICES[domain]()
    seed = torch.randn(2, *lattice.cell_shape, 16, generator=torch.Generator().manual_seed(2)) * 0.1
    fire = torch.rand(seed.shape[:-1], generator=torch.Generator().manual_seed(5)) < 0.5
    results = []
    for update in (model.nca._update_fired, model.nca._update_all):
        state = seed.clone().requires_grad_()
        out = update(update(state, lattice, fire), lattice, ~fire)
        out.square().sum().backward()
        results.append((out.detach(), state.grad, *[p.grad.clone() for p in model.nca.parameters()]))
        model.nca.zero_grad()
    for got, want in zip(*results):
        assert torch.allclose(got, want, rtol=1e-4, atol=1e-6)
    assert results[0][0].sub(seed).abs().amax(-1).gt(0).float().mean() > 0.9  # both draws changed the cells


def test_fire_rate_is_about_one_half():
    model = random_model("2d")
    lattice = Grid2D(32)
    state = torch.randn(1, 32, 32, 16)
    with torch.no_grad():
        changed = (model.nca.step(state, lattice, make_generator(0)) != state).any(-1).float().mean().item()
    assert 0.45 < changed < 0.55


def test_wrong_lattice_is_refused():
    model = random_model("2d")
    with pytest.raises(ValueError, match="perceives 4"):
        model.nca.step(torch.zeros(1, 6, 6, 6, 16), Grid3D(6))


def test_gradients_flow_through_a_rollout():
    model = random_model("volume")
    lattice = Grid3D(5)
    out = model.rollout(torch.randn(1, 5, 5, 5, 16) * 0.1, lattice, 3, make_generator(0))
    out.square().mean().backward()
    assert model.nca.perceive_to_hidden.weight.grad.abs().sum() > 0


def test_gradient_checkpointing_replays_the_same_rollout(monkeypatch):
    import torch.utils.checkpoint as checkpointing

    model = random_model("2d")
    lattice = Grid2D(8)
    seed_state = torch.randn(2, 8, 8, 16) * 0.1

    def grads():
        model.zero_grad()
        out = model.rollout(seed_state, lattice, 10, make_generator(3), checkpoint_segment=4)
        out.square().mean().backward()
        return out.detach(), [p.grad.clone() for p in model.nca.parameters()]

    checkpointed, checkpointed_grads = grads()
    monkeypatch.setattr(checkpointing, "checkpoint", lambda fn, *args, **kwargs: fn(*args))
    direct, direct_grads = grads()
    assert torch.equal(checkpointed, direct)
    for a, b in zip(checkpointed_grads, direct_grads):
        assert torch.allclose(a, b, atol=1e-6) and a.abs().sum() > 0


@pytest.mark.parametrize("domain", list(LATTICES))
def test_a_state_limit_clamps_every_step_and_is_saved(domain, tmp_path):
    from nca3d.io.model_file import load_model, save_model

    model = random_model(domain)
    with torch.no_grad():
        model.nca.hidden_to_update.weight.normal_(std=2.0)  # an NCA that runs away
    lattice = LATTICES[domain]()
    seed = torch.randn(1, *lattice.cell_shape, 16) * 0.1
    with torch.no_grad():
        free = model.rollout(seed, lattice, 8, make_generator(3))
        model.set_state_limit(1.25)
        limited = model.rollout(seed, lattice, 8, make_generator(3))
    assert free.abs().max() > 2 and limited.abs().max() <= 1.25
    save_model(model, tmp_path / "m.nca3d")
    loaded = load_model(tmp_path / "m.nca3d")
    assert loaded.config.state_limit == 1.25 and loaded.nca.state_limit == 1.25
    with torch.no_grad():
        assert torch.equal(loaded.rollout(seed, lattice, 8, make_generator(3)), limited)


def test_state_limit_is_the_margin_over_the_largest_state_of_any_step():
    from nca3d.core.grow import STATE_MARGIN, state_limit

    model = random_model("2d", grid_size=[12, 12])
    lattice = model.make_lattice()
    largest = []
    with torch.no_grad():
        for seed in range(2):
            model.rollout(model.seed(lattice), lattice, 40, make_generator(seed),
                          lambda _i, s: largest.append(float(s.abs().max())))
    model.set_state_limit(0.01)  # measured unclamped, and the model's own limit is left as it was
    assert state_limit(model, lattice, steps=40) == pytest.approx(STATE_MARGIN * max(largest), rel=1e-3)
    assert model.nca.state_limit == 0.01


def test_a_growth_that_blows_up_still_gets_a_finite_state_limit():
    """States past float range (inf, NaN) do not count: the limit is the margin over the largest finite one."""
    from nca3d.core.grow import STATE_MARGIN, state_limit

    model = random_model("2d", grid_size=[12, 12])
    lattice = model.make_lattice()
    step = model.nca.step

    def blowing_up(state, *args, **kwargs):  # every cell past float range from the 10th step on
        blowing_up.steps += 1
        grown = step(state, *args, **kwargs)
        return grown * float("inf") if blowing_up.steps >= 10 else grown.clamp(-0.5, 0.5)

    blowing_up.steps = 0
    model.nca.step = blowing_up
    limit = state_limit(model, lattice, steps=20, seeds=1)
    assert 0 < limit <= STATE_MARGIN * 0.5 + 1e-6
