import io
import math
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from PIL import Image

from nca3d.cli import main
from nca3d.errors import NCA3DError
from nca3d.io.model_file import load_model, read_header
from nca3d.progress import Progress
from nca3d.render.raycast import available_backends
from nca3d.train.scale import ScaleChoice
from nca3d.train.trainer import (
    FINE_DETAIL_SHARE,
    FINE_TUNE_LR,
    LARGE_FEATURE_CELLS,
    TrainConfig,
    Trainer,
    checkpoint_path,
    feature_upsample_for,
)


def make_exemplar(path, size=48, grey=False):
    """A small blobby texture: random bright spots on a coloured ground."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:size, 0:size]
    image = np.zeros((size, size, 3)) + [0.2, 0.3, 0.5]
    for cx, cy in rng.uniform(0, size, (12, 2)):
        blob = np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / 8.0)
        image += blob[..., None] * [0.8, 0.5, 0.1]
    image = np.clip(image, 0, 1)
    if grey:
        Image.fromarray((image.mean(2) * 255).astype(np.uint8), "L").save(path)
    else:
        Image.fromarray((image * 255).astype(np.uint8)).save(path)
    return path


def tiny_config(tmp_path, domain="2d", **overrides):
    options = dict(exemplar=str(make_exemplar(tmp_path / "ex.png")), out=str(tmp_path / "m.nca3d"), domain=domain,
                   iters=20, features="patches", channels=8, hidden=32, grid=8 if domain == "2d" else 6,
                   pool=8, batch=2, min_steps=4, max_steps=8, patch=24, samples=128, ray_samples=8,
                   lr=3e-3, checkpoint_every=5, device="cpu", limit_steps=64, pool_age_steps=16)
    options.update(overrides)
    return TrainConfig(**options)


def test_2d_loss_renders_are_supersampled_by_default(tmp_path):
    """2D: each px of the coarser loss crops the mean of 2 x 2 decoder samples (the finest crops keep
    one); meshes and volumes one sample a px unless asked; a given count is kept."""
    assert [TrainConfig(exemplar="x.png", out="m.nca3d", domain=d).supersample for d in ("2d", "mesh", "volume")] \
        == [2, 1, 1]
    trainer = Trainer(tiny_config(tmp_path), Progress("none"))
    assert trainer.task.rays_per_px == {1: 2, 2: 2, 4: 1}
    assert Trainer(tiny_config(tmp_path, supersample=1), Progress("none")).task.rays_per_px == {1: 1, 2: 1, 4: 1}
    assert Trainer(tiny_config(tmp_path, supersample=4), Progress("none")).task.rays_per_px == {1: 4, 2: 2, 4: 1}
    model = trainer.run()[0]
    assert read_header(model)[0]["provenance"]["config"]["supersample"] == 2


def test_feature_upsample_reaches_efficientnet(tmp_path):
    """--feature-upsample sets how far EfficientNet upsamples the loss crops; left out, 2 where the
    features land at under LARGE_FEATURE_CELLS cells (2-px blobs on an 8-cell lattice over 48 px: 0.5
    cells) and 1 on a 2D lattice that puts smooth ones at more (the same on 32 cells: 2 cells), as the
    trainer says; either is kept when given; out-of-range values are refused in one line."""
    for grid, given, used in ((8, None, 2.0), (8, 1.0, 1.0), (32, None, 1.0), (32, 2.0, 2.0)):
        options = {} if given is None else {"feature_upsample": given}
        printed = io.StringIO()
        trainer = Trainer(tiny_config(tmp_path, features="effnet", grid=grid, **options), Progress("json", printed))
        assert trainer.loss_fn.extractor.upsample == used == trainer.config.feature_upsample
        said = "EfficientNet sees the loss crops unscaled" in printed.getvalue()
        assert said == (given is None and used == 1.0)
        assert ("feature_upsample" in trainer.chosen) == (given is None)
    assert trainer.scale.fine_detail < FINE_DETAIL_SHARE
    for features, said in (("efficientnet", True), ("patches", False)):  # another name for it; no upsampling at all
        printed = io.StringIO()
        Trainer(tiny_config(tmp_path, features=features, grid=32), Progress("json", printed))
        assert ("EfficientNet sees the loss crops unscaled" in printed.getvalue()) == said
    # the same large features with per-pixel grain: fine detail the upsampling is for
    exemplar = np.asarray(Image.open(make_exemplar(tmp_path / "grainy.png")), dtype=np.float64)
    grain = np.random.default_rng(1).normal(0, 40, exemplar.shape)
    Image.fromarray(np.clip(exemplar + grain, 0, 255).astype(np.uint8)).save(tmp_path / "grainy.png")
    grainy = Trainer(tiny_config(tmp_path, exemplar=str(tmp_path / "grainy.png"), grid=32), Progress("none"))
    assert grainy.scale.fine_detail > FINE_DETAIL_SHARE and grainy.scale.feature_cells > LARGE_FEATURE_CELLS
    assert grainy.config.feature_upsample == 2.0
    large, small = LARGE_FEATURE_CELLS + 0.01, LARGE_FEATURE_CELLS
    soft, fine = FINE_DETAIL_SHARE - 0.01, FINE_DETAIL_SHARE
    assert feature_upsample_for("2d", ScaleChoice(32, 1.0, 30.0, large, [], fine_detail=soft)) == 1.0
    assert feature_upsample_for("2d", ScaleChoice(32, 1.0, 30.0, small, [], fine_detail=soft)) == 2.0
    assert feature_upsample_for("2d", ScaleChoice(32, 1.0, 30.0, large, [], fine_detail=fine)) == 2.0
    assert feature_upsample_for("2d", ScaleChoice(64, 1.0, None, None, [])) == 2.0  # nothing to measure
    assert feature_upsample_for("mesh", ScaleChoice(64, 0.5, 30.0, large, [], fine_detail=soft)) == 2.0  # 2D only
    for wrong in (0.5, 5.0):
        with pytest.raises(NCA3DError, match=f"--feature-upsample {wrong:g} is out of range"):
            tiny_config(tmp_path, feature_upsample=wrong)


@pytest.mark.parametrize("domain", ["2d", "volume", "mesh"])
def test_loss_goes_down(tmp_path, monkeypatch, domain):
    if domain == "mesh":
        if not available_backends():
            pytest.skip("mesh supervision ray-casts: pip install embreex (x86-64) or pip install 'nca3d[open3d]'")
        monkeypatch.setenv("NCA3D_CACHE", str(tmp_path / "cache"))
    overrides = {"grid": 12} if domain == "mesh" else {}
    trainer = Trainer(tiny_config(tmp_path, domain, **overrides), Progress("none"))
    files = trainer.run()
    losses = trainer.losses
    assert len(losses) == 20
    assert np.mean(losses[-5:]) < np.mean(losses[:5])
    model = load_model(files[0])
    assert model.config.domain == domain and model.config.state_limit > 0  # measured after training
    # The NCA itself learned from the zero seed (not only the decoder) and the pool grew a pattern.
    assert model.nca.hidden_to_update.weight.abs().sum() > 0
    assert trainer.pool.std(dim=tuple(range(1, trainer.pool.dim() - 1))).mean() > 1e-4
    assert model.provenance["iterations"] == 20 and model.provenance["exemplar"] == "ex.png"
    assert model.provenance["config"]["features"] == "patches"
    for path in files[1:]:
        assert Image.open(path).size[0] > 0


SELECT = dict(select_every=3, select_after=3, select_steps=12)


def test_a_volume_larger_than_a_view_trains_on_a_crop_and_ships_its_whole_lattice(tmp_path):
    trainer = Trainer(tiny_config(tmp_path, "volume", grid=40, iters=2, pool=2, min_steps=2, max_steps=2,
                                  ray_samples=4), Progress("none"))
    assert trainer.task.lattice.cell_shape == (32, 32, 32) and trainer.pool.shape[1:4] == (32, 32, 32)
    trainer.run()
    model = load_model(trainer.config.out)
    assert model.config.grid_size == [40, 40, 40] and model.provenance["config"]["grid"] == 40


def test_gradient_checkpointing_turns_on_where_the_rollout_would_not_fit(tmp_path, monkeypatch, capsys):
    from nca3d.train import trainer as trainer_module

    monkeypatch.setattr(trainer_module, "available_memory", lambda: (1 << 20, 1 << 30))  # 1 MiB free
    tight = Trainer(tiny_config(tmp_path), Progress("json"))
    assert tight.config.grad_checkpoint == trainer_module.AUTO_CHECKPOINT_STEPS
    assert "recomputing it in segments of 8 steps" in capsys.readouterr().out
    assert Trainer(tiny_config(tmp_path, grad_checkpoint=0), Progress("none")).config.grad_checkpoint == 0  # given
    monkeypatch.setattr(trainer_module, "available_memory", lambda: (1 << 40, 1 << 40))
    assert Trainer(tiny_config(tmp_path), Progress("none")).config.grad_checkpoint == 0


def test_resume_continues_the_same_run(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    # no decay or pool ageing: they come at a fraction of each run's own budget, which differs here
    steady = dict(lr_decay=1.0, pool_age_steps=0, **SELECT)
    straight = Trainer(tiny_config(tmp_path / "a", iters=10, **steady), Progress("none"))
    straight.run()
    first = Trainer(tiny_config(tmp_path / "b", iters=6, **steady), Progress("none"))
    first.run()
    second = Trainer(tiny_config(tmp_path / "b", iters=10, **steady), Progress("none"))
    second.run(resume=True)
    assert second.losses[:6] == first.losses
    # the long-rollout candidates (and the best weights) survive the checkpoint
    assert [i for i, _ in second.selection] == [i for i, _ in straight.selection] == [3, 6, 9, 10]
    assert np.allclose([s for _, s in second.selection], [s for _, s in straight.selection], rtol=1e-3)
    assert np.allclose(second.losses, straight.losses, rtol=1e-4)
    for a, b in zip(straight.model.state_dict().values(), second.model.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-5)


def test_the_best_long_rollout_is_the_model_that_ships(tmp_path):
    trainer = Trainer(tiny_config(tmp_path, iters=12, **SELECT), Progress("none"))
    trainer.run()
    iterations, scores = zip(*trainer.selection)
    assert iterations == (3, 6, 9, 12) and all(np.isfinite(scores))
    best = iterations[int(np.argmin(scores))]
    model = load_model(trainer.config.out)
    assert model.provenance["selected_iteration"] == best
    # the shipped weights score what the selection recorded for that candidate
    trainer.model.load_state_dict(model.state_dict())
    assert trainer.long_rollout_score() == pytest.approx(min(scores), rel=1e-4)


def test_learning_rate_decays_once_at_a_fraction_of_the_budget(tmp_path):
    trainer = Trainer(tiny_config(tmp_path, iters=8, lr=1e-3, lr_decay=0.3, lr_decay_at=0.5), Progress("none"))
    rates = []
    for _ in range(8):
        trainer.step()
        rates.append(trainer.optimizer.param_groups[0]["lr"])
    assert rates == pytest.approx([1e-3] * 4 + [3e-4] * 4)
    assert trainer.lr_decayed_at == 4
    # a time budget anneals by elapsed time, whatever the iteration count
    timed = Trainer(tiny_config(tmp_path, minutes=10.0, lr_decay_at=0.5), Progress("none"))
    timed.elapsed = 299.0
    assert timed._lr() == pytest.approx(timed.config.lr) and timed.lr_decayed_at is None
    timed.elapsed = 301.0
    assert timed._lr() == pytest.approx(timed.config.lr * 0.3) and timed.lr_decayed_at == 0
    # the decay sticks when a resumed run gets a larger budget
    timed.config.minutes = 60.0
    assert timed._lr() == pytest.approx(timed.config.lr * 0.3)
    trainer.save_checkpoint()
    resumed = Trainer(tiny_config(tmp_path, iters=100, lr=1e-3, lr_decay=0.3, lr_decay_at=0.5), Progress("none"))
    assert resumed.run(resume=True) and resumed.lr_decayed_at == 4
    assert load_model(resumed.config.out).provenance["lr_decayed_at"] == 4


def test_an_eighth_of_the_pool_ages_once_at_a_fraction_of_the_budget(tmp_path):
    trainer = Trainer(tiny_config(tmp_path, iters=10, pool=24, batch=2, pool_age_steps=40), Progress("none"))
    for _ in range(3):
        trainer.step()
    before = trainer.pool.clone()
    trainer.age_pool()
    moved = (trainer.pool - before).flatten(1).abs().amax(1) > 0
    assert int(moved.sum()) == 3 and trainer.pool_aged == [3, 3, 32]  # 3 of 24 slots, the rest untouched
    # capped at AGE_COST x the state-steps trained by 40% of the budget: 4 of 10 iterations x 2 states
    # x 6 steps x 2 over 3 states
    assert trainer.config.pool_age_steps == 40 and (trainer.config.min_steps, trainer.config.max_steps) == (4, 8)
    # a run ages once, when 40% of its budget is spent; the checkpoint and the model record it
    (tmp_path / "run").mkdir()
    run = Trainer(tiny_config(tmp_path / "run", iters=10), Progress("none"))
    run.run()
    assert run.pool_aged == [4, 2, 16] and load_model(run.config.out).provenance["pool_aged"] == [4, 2, 16]
    resumed = Trainer(tiny_config(tmp_path / "run", iters=12), Progress("none"))
    resumed.run(resume=True)
    assert resumed.pool_aged == [4, 2, 16]  # not again


def test_a_step_whose_gradient_is_not_finite_is_skipped_and_its_states_reseeded(tmp_path, capsys):
    trainer = Trainer(tiny_config(tmp_path, domain="volume", iters=6), Progress("json"))
    trainer.step()
    weights = [p.detach().clone() for p in trainer.model.parameters()]
    grow = trainer._grow_and_score

    def blown(*args):
        grown, texture, grads = grow(*args)
        return grown * math.inf, texture, [None if g is None else g * math.nan for g in grads]

    trainer._grow_and_score = blown
    trainer.step()
    assert trainer.iteration == 2 and all(torch.equal(a, b) for a, b in zip(weights, trainer.model.parameters()))
    assert torch.isfinite(trainer.pool).all() and (trainer.pool.flatten(1).abs().amax(1) == 0).sum() >= 2
    assert "it 1: the gradient is not finite; step skipped, its 2 pool states reseeded" in capsys.readouterr().out
    trainer._grow_and_score = grow
    trainer.step()
    assert all(bool(torch.isfinite(p).all()) for p in trainer.model.parameters())


def test_resume_refuses_other_settings(tmp_path):
    """The refusal names each setting with the checkpoint's value and the run's, so the user knows
    what to pass; a checkpoint older than a setting counts as made with its old value."""
    Trainer(tiny_config(tmp_path, iters=2), Progress("none")).run()
    with pytest.raises(NCA3DError, match="different settings \\(--hidden 32 there, 16 now\\)"):
        Trainer(tiny_config(tmp_path, iters=4, hidden=16), Progress("none")).run(resume=True)
    edit_checkpoint(tmp_path / "m.nca3d", lambda meta, tensors: meta["config"].pop("supersample"))
    with pytest.raises(NCA3DError, match="\\(--supersample 1 there, 2 now\\)"):
        Trainer(tiny_config(tmp_path, iters=4), Progress("none")).run(resume=True)
    Trainer(tiny_config(tmp_path, iters=4, supersample=1), Progress("none")).run(resume=True)


def test_a_run_folder_moved_elsewhere_resumes_from_its_checkpoint(tmp_path):
    """--out and the exemplar's path may change on resume (a moved or copied run folder); the exemplar's
    digest still refuses other images."""
    (tmp_path / "a").mkdir()
    Trainer(tiny_config(tmp_path / "a", iters=2), Progress("none")).run()
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    moved = Trainer(tiny_config(tmp_path / "b", iters=4), Progress("none"))
    assert moved.run(resume=True) and moved.iteration == 4
    assert load_model(tmp_path / "b" / "m.nca3d").provenance["config"]["exemplar"] == str(tmp_path / "b" / "ex.png")
    other = make_exemplar(tmp_path / "b" / "other.png", size=40)
    with pytest.raises(NCA3DError, match="trained on a different exemplar"):
        Trainer(tiny_config(tmp_path / "b", iters=6, exemplar=str(other)), Progress("none")).run(resume=True)


def test_a_resumed_run_may_score_candidates_sooner(tmp_path):
    """A run whose budget would end before --select-after resumes with an earlier one: candidates
    from then on, the new setting kept in its checkpoint; the growth they are scored on may not change."""
    Trainer(tiny_config(tmp_path, iters=2, select_steps=12), Progress("none")).run()  # select_after 400: none
    resumed = Trainer(tiny_config(tmp_path, iters=6, **SELECT), Progress("none"))
    assert resumed.run(resume=True) and [it for it, _ in resumed.selection] == [3, 6]
    assert load_model(resumed.config.out).provenance["config"]["select_after"] == 3
    with pytest.raises(NCA3DError, match="--select-steps 12 there, 24 now"):
        Trainer(tiny_config(tmp_path, iters=8, **{**SELECT, "select_steps": 24}), Progress("none")).run(resume=True)


def edit_checkpoint(out, edit) -> None:
    """Rewrite the checkpoint beside model `out` after edit(meta, tensors) changed it in place."""
    import json

    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    path = str(checkpoint_path(str(out)))
    with safe_open(path, "pt") as f:
        meta = json.loads(f.metadata()["nca3d_checkpoint"])
    tensors = load_file(path)
    edit(meta, tensors)
    save_file(tensors, path, metadata={"nca3d_checkpoint": json.dumps(meta)})


def test_a_checkpoint_older_than_a_setting_resumes_with_the_value_it_was_trained_with(tmp_path):
    Trainer(tiny_config(tmp_path, iters=2, tap_balance=0.0), Progress("none")).run()
    # as written before --tap-balance existed (the loss was tap_balance 0)
    edit_checkpoint(tmp_path / "m.nca3d", lambda meta, tensors: meta["config"].pop("tap_balance"))
    with pytest.raises(NCA3DError, match="--tap-balance 0 there, 0.5 now"):  # today's default, 0.5, is not what it was trained with
        Trainer(tiny_config(tmp_path, iters=4), Progress("none")).run(resume=True)
    resumed = Trainer(tiny_config(tmp_path, iters=4, tap_balance=0.0), Progress("none"))
    resumed.run(resume=True)
    assert resumed.iteration == 4


def test_a_checkpoint_from_before_the_chosen_upsampling_resumes_with_the_value_it_was_trained_with(tmp_path):
    """Large features (2 cells on 32 cells) get --feature-upsample 1 chosen; a checkpoint made before
    the setting existed was trained at 2, and the refusal says to pass that."""
    Trainer(tiny_config(tmp_path, iters=2, grid=32), Progress("none")).run()
    edit_checkpoint(tmp_path / "m.nca3d", lambda meta, tensors: meta["config"].pop("feature_upsample"))
    with pytest.raises(NCA3DError, match="automatic choice is now feature upsample 1; resume with --feature-upsample 2"):
        Trainer(tiny_config(tmp_path, iters=4, grid=32), Progress("none")).run(resume=True)
    resumed = Trainer(tiny_config(tmp_path, iters=4, grid=32, feature_upsample=2.0), Progress("none"))
    resumed.run(resume=True)
    assert resumed.iteration == 4


def test_pixel_scale_crops_train_and_resume_only_with_the_same_scales(tmp_path):
    trainer = Trainer(tiny_config(tmp_path, iters=3, scales=[8, 1, 2, 4, 4]), Progress("none"))
    assert trainer.config.scales == [1, 2, 4, 8]
    assert len(trainer.task.render(trainer.model, trainer.pool[:2], torch.Generator().manual_seed(0))) == 11
    trainer.run()
    assert load_model(trainer.config.out).provenance["config"]["scales"] == [1, 2, 4, 8]
    with pytest.raises(NCA3DError, match="scales"):
        Trainer(tiny_config(tmp_path, iters=6), Progress("none")).run(resume=True)
    resumed = Trainer(tiny_config(tmp_path, iters=6, scales=[1, 2, 4, 8]), Progress("none"))
    resumed.run(resume=True)
    assert resumed.iteration == 6
    # a checkpoint from before --scales existed was trained on 1, 2, 4
    edit_checkpoint(tmp_path / "m.nca3d", lambda meta, tensors: meta["config"].pop("scales"))
    assert Trainer(tiny_config(tmp_path, iters=7), Progress("none")).run(resume=True)


def test_a_checkpoint_from_another_device_resumes_with_a_fresh_random_stream(tmp_path, capsys):
    """A run started on a GPU continues on the CPU (and back): generator states do not transfer."""
    Trainer(tiny_config(tmp_path, iters=2), Progress("none")).run()

    def as_if_from_cuda(meta, tensors):
        meta["rng_device"] = "cuda"
        tensors["rng"] = torch.zeros(16, dtype=torch.uint8)  # a CUDA generator's state: Philox seed and offset

    edit_checkpoint(tmp_path / "m.nca3d", as_if_from_cuda)
    resumed = Trainer(tiny_config(tmp_path, iters=4), Progress("json"))
    resumed.run(resume=True)
    assert resumed.iteration == 4 and len(resumed.losses) == 4
    assert "random stream is from cuda: continuing on cpu" in capsys.readouterr().out


def test_seed_every_default_keeps_pool_states_alive_about_2048_steps():
    """A pool state's mean age is seed_every x batch x mean steps: 8 x 4 x 64 in 2D and on meshes,
    32 x 2 x 32 for volumes at batch 2; an explicit value is kept."""
    assert TrainConfig(exemplar="x.png", out="m.nca3d").seed_every == 8
    assert TrainConfig(exemplar="x.png", out="m.nca3d", domain="mesh").seed_every == 8
    assert TrainConfig(exemplar="x.png", out="m.nca3d", domain="volume", batch=2).seed_every == 32
    assert TrainConfig(exemplar="x.png", out="m.nca3d", seed_every=3).seed_every == 3


def test_selection_scores_the_growth_on_its_way(tmp_path, monkeypatch):
    """A candidate is scored at 256, 1024 and 2048 steps and at select_steps, in one growth."""
    trainer = Trainer(tiny_config(tmp_path, select_steps=3000), Progress("none"))
    grown, rendered = [0], []
    monkeypatch.setattr(trainer.model, "rollout", lambda state, lattice, steps, *_: grown.append(grown[-1] + steps) or state)
    render = trainer.task.render
    monkeypatch.setattr(trainer.task, "render", lambda *args: rendered.append(grown[-1]) or render(*args))
    assert np.isfinite(trainer.long_rollout_score())
    assert rendered == [256, 1024, 2048, 3000]
    trainer.config.select_steps = 512
    rendered.clear(), grown.append(0)
    trainer.long_rollout_score()
    assert rendered == [256, 512]


def test_selection_grows_as_the_model_ships_clamped_after_limit_steps(tmp_path, monkeypatch):
    """Unclamped for limit_steps while its states are tracked, then clamped at STATE_MARGIN x the
    largest of them (what finish sets as the shipped model's limit); the limit is restored after."""
    from nca3d.core.grow import STATE_MARGIN

    trainer = Trainer(tiny_config(tmp_path, select_steps=300, limit_steps=64), Progress("none"))
    torch.nn.init.normal_(trainer.model.nca.hidden_to_update.weight, std=0.2)  # states that move
    rollout, calls, seen = trainer.model.rollout, [], []

    def recording(state, lattice, steps, generator, callback=None):
        calls.append((steps, trainer.model.nca.state_limit, callback is not None))
        grown = rollout(state, lattice, steps, generator, callback)
        seen.append(float(grown.abs().max()))
        return grown

    monkeypatch.setattr(trainer.model, "rollout", recording)
    trainer.model.nca.state_limit = 7.0  # whatever the model had, the growth starts unclamped
    assert np.isfinite(trainer.long_rollout_score())
    (first, unclamped, tracked), *rest = calls
    assert (first, unclamped, tracked) == (64, 0.0, True)
    assert [steps for steps, _, _ in rest] == [256 - 64, 300 - 256] and not any(t for _, _, t in rest)
    limit = rest[0][1]
    assert limit > 0 and limit == rest[1][1] and limit >= STATE_MARGIN * seen[0] - 1e-3
    assert max(seen[1:]) <= limit + 1e-6 and trainer.model.nca.state_limit == 7.0


def test_a_growth_that_blows_up_is_the_worst_candidate(tmp_path, monkeypatch):
    """A candidate whose growth reaches inf or NaN scores inf (the orientation histogram of a NaN
    render crashed a 64^3 volume run at its first selection), never ships while another is finite,
    and is written as null in the checkpoint and the model."""
    trainer = Trainer(tiny_config(tmp_path, iters=6, pool_age_steps=0, **SELECT), Progress("none"))
    rollout = trainer.model.rollout
    blown = {3}  # the iterations whose candidates blow up

    def rollout_or_nan(*args, **kwargs):
        grown = rollout(*args, **kwargs)
        return grown * float("nan") if not torch.is_grad_enabled() and trainer.iteration in blown else grown

    monkeypatch.setattr(trainer.model, "rollout", rollout_or_nan)
    trainer.run()
    assert trainer.selection[0] == (3, float("inf")) and np.isfinite(trainer.selection[1][1])
    model = load_model(trainer.config.out)
    assert model.provenance["selected_iteration"] == 6
    assert model.provenance["selection"][0] == [3, None]
    resumed = Trainer(tiny_config(tmp_path, iters=6, pool_age_steps=0, **SELECT), Progress("none"))
    assert resumed.resume() and resumed.selection == trainer.selection


def test_a_fine_tune_ages_its_pool_before_its_first_candidate(tmp_path):
    first = tmp_path / "first"
    first.mkdir()
    start = Trainer(tiny_config(first, iters=3), Progress("none")).run()[0]
    tuned = Trainer(tiny_config(tmp_path, iters=8, init=start, pool_age_steps=100, **SELECT), Progress("none"))
    tuned.run()
    assert tuned.pool_aged[0] == 3  # the first selection, before 40% of the budget (iteration 4)
    # ageing at 3 of 8 iterations, it may spend what a run ageing at 40% does: 3.2 iterations x 2 states
    # x 6 steps x 2 over 2 states (36 counting the 3 iterations done)
    assert tuned.pool_aged[1:] == [2, 38]
    fresh = Trainer(tiny_config(tmp_path / "first", iters=8, out=str(tmp_path / "f.nca3d"), **SELECT), Progress("none"))
    fresh.run()
    assert fresh.pool_aged[0] == 4  # from scratch: at 40% of the budget as before


def test_a_fine_tunes_pool_ages_clamped_at_its_starting_models_state_limit(tmp_path):
    first = tmp_path / "first"
    first.mkdir()
    start = Trainer(tiny_config(first, iters=3), Progress("none")).run()[0]
    limit = load_model(start).config.state_limit
    tuned = Trainer(tiny_config(tmp_path, iters=8, init=start, pool_age_steps=100), Progress("none"))
    assert tuned.init_record["state_limit"] == limit > 0
    tuned.init_record["state_limit"] = 0.01  # a limit the growth meets at once

    def aged_states(trainer):
        for _ in range(2):
            trainer.step()
        before = trainer.pool.clone()
        trainer.age_pool()
        aged = (trainer.pool - before).flatten(1).abs().amax(1) > 0
        assert int(aged.sum()) == trainer.pool_aged[1] > 0 and trainer.pool_aged[2] > 0
        return trainer.pool[aged]

    assert float(aged_states(tuned).abs().max()) == pytest.approx(0.01)
    assert tuned.model.nca.state_limit == 0.0  # training itself stays unclamped
    fresh = Trainer(tiny_config(first, iters=8, out=str(tmp_path / "f.nca3d"), pool_age_steps=100), Progress("none"))
    assert float(aged_states(fresh).abs().max()) > 0.01  # from scratch: no limit yet, unclamped


def test_init_fine_tunes_from_a_models_weights(tmp_path, capsys):
    first = tmp_path / "first"
    first.mkdir()
    start_files = Trainer(tiny_config(first, iters=3), Progress("none")).run()
    start = load_model(start_files[0])
    second = tmp_path / "second"
    second.mkdir()
    trainer = Trainer(tiny_config(second, iters=2, init=start_files[0], seed=5), Progress("none"))
    for name, value in start.state_dict().items():  # it starts from those weights, not a fresh init
        assert torch.equal(trainer.model.state_dict()[name], value), name
    tuned = load_model(trainer.run()[0])
    assert tuned.provenance["init"]["model"] == "m.nca3d" and tuned.provenance["init"]["iterations"] == 3
    assert tuned.provenance["init"]["tensors_sha256"] == read_header(start_files[0])[0]["tensors_sha256"]
    assert tuned.provenance["iterations"] == 2
    # resumed after the tuned model was copied over the one it started from: the record stays the start's
    shutil.copyfile(trainer.config.out, start_files[0])
    resumed = Trainer(tiny_config(second, iters=3, init=start_files[0], seed=5), Progress("none"))
    assert resumed.run(resume=True)
    assert load_model(resumed.config.out).provenance["init"] == tuned.provenance["init"]
    # another architecture: one clear line from the command
    code = main(["train", str(second / "ex.png"), "--out", str(tmp_path / "x.nca3d"), "--iters", "1",
                 "--features", "patches", "--hidden", "16", "--init", start_files[0], "--device", "cpu",
                 "--progress", "none"])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--init model" in err[0] and "hidden 32" in err[0]


def test_a_fine_tune_resumes_after_its_start_model_is_gone(tmp_path, capsys):
    """The checkpoint holds what a resume needs of the start model (its record); a fresh start needs the file."""
    start_file = Trainer(tiny_config(tmp_path, out=str(tmp_path / "start.nca3d"), iters=1), Progress("none")).run()[0]
    tuned = Trainer(tiny_config(tmp_path, iters=2, init=start_file), Progress("none"))
    tuned.run()
    record = load_model(tuned.config.out).provenance["init"]
    (tmp_path / "start.nca3d").unlink()
    resumed = Trainer(tiny_config(tmp_path, iters=3, init=start_file), Progress("none"))
    assert resumed.run(resume=True) and load_model(resumed.config.out).provenance["init"] == record
    assert resumed.iteration == 3
    code = main(["train", str(tmp_path / "ex.png"), "--out", resumed.config.out, "--iters", "4", "--features",
                 "patches", "--channels", "8", "--hidden", "32", "--grid", "8", "--init", start_file, "--device",
                 "cpu", "--progress", "none"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and f"--init model '{start_file}' not found" in err[0] and "--resume" in err[0]
    assert load_model(resumed.config.out).provenance["iterations"] == 3  # nothing overwritten


def test_a_fine_tune_names_what_differs_from_its_start_and_runs_at_a_lower_rate(tmp_path, capsys):
    """A start model whose PBR maps were derived, fine-tuned without --derive-pbr: one line naming both
    runs' outputs and the flag that mends it; a fine-tune's default rate is FINE_TUNE_LR, a given one kept."""
    first = tmp_path / "first"
    first.mkdir()
    start_file = Trainer(tiny_config(first, iters=1, derive_pbr=True), Progress("none")).run()[0]
    code = main(["train", str(first / "ex.png"), "--out", str(tmp_path / "x.nca3d"), "--iters", "1", "--features",
                 "patches", "--channels", "8", "--hidden", "32", "--init", start_file, "--device", "cpu",
                 "--progress", "none"])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "its outputs pbr (albedo, height, roughness, ao, normal), this run's rgb (rgb)" in err[0]
    assert "its maps were derived: add --derive-pbr" in err[0]
    rates = [TrainConfig(exemplar="x.png", out="m.nca3d", **given).lr
             for given in ({}, {"init": start_file}, {"init": start_file, "lr": 2e-3})]
    assert rates == [1e-3, FINE_TUNE_LR, 2e-3] and FINE_TUNE_LR < 1e-3


def test_a_fine_tune_on_the_same_exemplar_keeps_its_start_models_licence_and_credit(tmp_path, capsys):
    """Same exemplar and maps (same digest): the start's licence and credit unless given; another
    exemplar: none carried, and the run says so."""
    first = tmp_path / "first"
    first.mkdir()
    start = Trainer(tiny_config(first, iters=1, license="CC-BY-3.0", credit="A. Painter"), Progress("none")).run()[0]

    def tuned(name, exemplar_size=48, **given):
        folder = tmp_path / name
        folder.mkdir()
        config = tiny_config(folder, iters=1, init=start, exemplar=str(make_exemplar(folder / "own.png", exemplar_size)),
                             **given)
        provenance = load_model(Trainer(config, Progress("json")).run()[0]).provenance
        return provenance["license"], provenance["credit"]

    assert tuned("same") == ("CC-BY-3.0", "A. Painter")
    assert "not carrying over" not in capsys.readouterr().out
    assert tuned("given", credit="B. Tuner") == ("CC-BY-3.0", "B. Tuner")
    assert tuned("other", exemplar_size=40) == (None, None)
    out = capsys.readouterr().out
    assert "not carrying over the start model's license and credit (it learned another exemplar)" in out


def test_kill_minus_nine_then_resume(tmp_path):
    exemplar = make_exemplar(tmp_path / "ex.png")
    out = tmp_path / "k.nca3d"
    args = [sys.executable, "-m", "nca3d", "train", str(exemplar), "--out", str(out), "--features", "patches",
            "--channels", "8", "--hidden", "32", "--grid", "8", "--pool", "8", "--batch", "2", "--patch", "24",
            "--checkpoint-every", "2", "--device", "cpu", "--progress", "none"]
    process = subprocess.Popen(args + ["--iters", "100000"])
    ckpt = checkpoint_path(str(out))
    deadline = time.time() + 120
    while not ckpt.exists() and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(1.0)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert ckpt.exists() and not out.exists()
    result = subprocess.run(args + ["--iters", "8", "--resume"], capture_output=True, text=True, timeout=300)
    if result.returncode == 0:
        assert load_model(out).provenance["iterations"] >= 8
    else:
        pytest.fail(result.stderr)


def _bad(tmp_path, name, writer):
    path = tmp_path / name
    writer(path)
    return path


def test_bad_exemplars_give_one_clear_line(tmp_path, capsys):
    out = str(tmp_path / "m.nca3d")
    cases = {
        "missing": (tmp_path / "nope.png", "not found"),
        "not an image": (_bad(tmp_path, "x.png", lambda p: p.write_text("hello")), "not a readable image"),
        "1x1": (_bad(tmp_path, "one.png", lambda p: Image.new("RGB", (1, 1)).save(p)), "only 1x1"),
        "transparent": (_bad(tmp_path, "rgba.png", lambda p: Image.new("RGBA", (32, 32), (9, 9, 9, 0)).save(p)),
                        "transparent"),
    }
    for label, (path, message) in cases.items():
        assert main(["train", str(path), "--out", out, "--iters", "1", "--features", "patches"]) == 2, label
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], (label, err)
    small = _bad(tmp_path, "small.png", lambda p: Image.new("RGB", (40, 40)).save(p))
    good = make_exemplar(tmp_path / "good.png")
    assert main(["train", str(good), "--height", str(small), "--out", out, "--features", "patches"]) == 2
    assert "same size" in capsys.readouterr().err
    for zoom, message in (("0.5", "below 1"), ("4", "use at most --zoom 3")):  # 48 px / 16 px = 3
        assert main(["train", str(good), "--zoom", zoom, "--out", out, "--iters", "1", "--features", "patches"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], (zoom, err)
    for domain, supersample in (("volume", "2"), ("2d", "-1")):
        assert main(["train", str(good), "--domain", domain, "--supersample", supersample, "--out", out,
                     "--iters", "1", "--features", "patches"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"--supersample {supersample} does not apply" in err[0], (domain, err)
    for scales, message in (("1,a", "not a comma-separated list"), ("0,2", "out of range")):
        assert main(["train", str(good), "--scales", scales, "--out", out, "--iters", "1", "--features", "patches"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], (scales, err)
    assert not (tmp_path / "m.nca3d").exists()


def test_sixteen_bit_grey_and_opaque_rgba_exemplars_load(tmp_path):
    from nca3d.io.images import read_exemplar

    ramp = (np.linspace(0, 65535, 32 * 32).reshape(32, 32)).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "g16.png")
    pixels, grey = read_exemplar(tmp_path / "g16.png")
    assert grey and pixels.shape == (32, 32, 3)
    assert abs(pixels[-1, -1, 0] - 1.0) < 1e-4 and pixels[0, 0, 0] == 0.0
    Image.new("RGBA", (32, 32), (200, 100, 50, 255)).save(tmp_path / "opaque.png")
    pixels, grey = read_exemplar(tmp_path / "opaque.png")
    assert not grey and np.allclose(pixels[0, 0], [200 / 255, 100 / 255, 50 / 255])


def test_grey_exemplar_trains_a_grey_model(tmp_path):
    config = tiny_config(tmp_path, iters=4)
    config.exemplar = str(make_exemplar(tmp_path / "grey.png", grey=True))
    trainer = Trainer(config, Progress("none"))
    trainer.run()
    assert trainer.grey and load_model(config.out).provenance["grey"] is True


def test_a_material_folder_trains_the_maps_it_has(tmp_path, capsys):
    """albedo + a DirectX normal + a gloss map, no height or AO: the model has albedo, roughness and
    normal outputs; the flip and the inversion are said and recorded; `nca3d maps` writes those maps."""
    from tests.io.test_material import make_material

    folder = make_material(tmp_path / "Bricks", {"albedo": "Bricks_2K_Color.png", "normal": "Bricks_2K_NormalDX.png",
                                                 "gloss": "Bricks_2K_gloss.png"}, size=48, directx=True)
    out = tmp_path / "bricks.nca3d"
    args = ["train", str(folder), "--out", str(out), "--iters", "3", "--features", "patches", "--channels", "8",
            "--hidden", "32", "--grid", "8", "--pool", "4", "--batch", "2", "--min-steps", "2", "--max-steps", "4",
            "--patch", "24", "--samples", "64", "--select-every", "0", "--device", "cpu", "--progress", "json"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "PBR maps: albedo Bricks_2K_Color.png, roughness Bricks_2K_gloss.png, normal Bricks_2K_NormalDX.png" in printed
    assert "is DirectX (-Y): green flipped" in printed and "is a gloss map: inverted into roughness" in printed
    model = load_model(out)
    assert model.config.outputs == "albedo+roughness+normal"
    assert [c.name for c in model.outputs] == ["albedo", "roughness", "normal"]
    header = read_header(out)[0]
    assert header["provenance"]["maps"] == {"normal": "Bricks_2K_NormalDX.png", "roughness": "Bricks_2K_gloss.png"}
    assert len(header["provenance"]["map_notes"]) == 2
    assert header["provenance"]["config"]["material"] == str(folder)
    assert main(["maps", "--model", str(out), "--out", str(tmp_path / "maps"), "--size", "32", "--steps", "2",
                 "--preview-size", "0", "--progress", "none"]) == 0
    written = sorted(p.name.split("_", 1)[1] for p in (tmp_path / "maps").glob("*.png"))
    assert written == ["albedo.png", "normal.png", "orm.png", "roughness.png"]


def test_a_map_flag_wins_over_the_folders(tmp_path):
    from tests.io.test_material import make_material

    folder = make_material(tmp_path / "m", {"albedo": "m_albedo.png", "height": "m_height.png"}, size=48)
    other = make_material(tmp_path / "other", {"height": "x_disp.png"}, size=48)
    config = tiny_config(tmp_path, exemplar=str(folder), maps={"height": str(other / "x_disp.png")})
    assert config.exemplar == str(folder / "m_albedo.png") and config.material == str(folder)
    assert config.maps == {"height": str(other / "x_disp.png")}
    assert main(["train", str(folder), "--out", str(tmp_path / "v.nca3d"), "--domain", "volume",
                 "--features", "patches"]) == 2  # volumes learn colour only


def test_loss_views_pack_three_one_channel_maps_into_one_image():
    from nca3d.train.trainer import loss_views

    assert loss_views(["albedo", "height", "roughness", "ao", "normal"]) == [slice(0, 3), slice(3, 6), slice(6, 9)]
    assert loss_views(["albedo", "height", "normal"]) == [slice(0, 3), slice(3, 4), slice(4, 7)]
    assert loss_views(["albedo", "roughness", "ao"]) == [slice(0, 3), slice(3, 4), slice(4, 5)]


def test_derive_pbr_turns_one_photo_into_a_full_pbr_model(tmp_path, capsys):
    """An albedo alone with --derive-pbr: every map is derived (and said), the model has all five,
    and the normal-height term is part of its loss."""
    exemplar = make_exemplar(tmp_path / "photo.png")
    out = tmp_path / "photo.nca3d"
    args = ["train", str(exemplar), "--derive-pbr", "--out", str(out), "--iters", "2", "--features", "patches",
            "--channels", "8", "--hidden", "32", "--grid", "8", "--pool", "4", "--batch", "2", "--min-steps", "2",
            "--max-steps", "4", "--patch", "24", "--samples", "64", "--select-every", "0", "--device", "cpu",
            "--progress", "json"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    for note in ("height: band-passed luminance", "normal: from the height", "roughness: from local albedo",
                 "ao: horizon-based"):
        assert note in printed
    model = load_model(out)
    assert model.config.outputs == "pbr"
    assert sorted(model.provenance["derived_maps"]) == ["ao", "height", "normal", "roughness"]
    config = tiny_config(tmp_path, derive_pbr=True, iters=1)
    trainer = Trainer(config, Progress("none"))
    state = trainer.model.rollout(trainer.pool[:2].clone(), trainer.task.lattice, 3, trainer.generator)
    with_term = trainer._losses(state, torch.Generator().manual_seed(0))[1]
    trainer.config.normal_height_weight = 0.0
    without = trainer._losses(state, torch.Generator().manual_seed(0))[1]
    assert float(with_term.detach()) > float(without.detach())


@pytest.mark.parametrize("options,words", [
    ({"dark_is_high": True}, "add --derive-pbr"),
    ({"dark_is_high": True, "derive_pbr": True, "maps": {"height": "h.png"}}, "height map that gives the relief")])
def test_dark_is_high_is_refused_where_it_cannot_apply(tmp_path, options, words):
    with pytest.raises(NCA3DError, match=words):
        tiny_config(tmp_path, **options)


def test_the_normal_height_tie_takes_its_strength_and_sign_from_the_exemplar(tmp_path):
    """The tie's strength comes from the exemplar's own pair at the loss crops' texel size: positive
    for a height that agrees with its normals, negative for an inverted one (kept, not flattened)."""
    from nca3d.io.images import read_exemplar, write_png
    from tests.io.test_material import make_material

    folder = make_material(tmp_path / "Rock", {"albedo": "Rock_Color.png", "normal": "Rock_NormalGL.png",
                                               "height": "Rock_Height.png"}, size=48)
    agreeing = Trainer(tiny_config(tmp_path, exemplar=str(folder)), Progress("none"))
    assert agreeing.relief_strength > 0
    finer = Trainer(tiny_config(tmp_path, exemplar=str(folder), patch=48), Progress("none"))
    assert finer.relief_strength > agreeing.relief_strength  # more pixels per exemplar texel: steeper per pixel
    height = read_exemplar(folder / "Rock_Height.png")[0][..., 0]
    write_png(folder / "Rock_Height.png", 1.0 - height)
    inverted = Trainer(tiny_config(tmp_path, exemplar=str(folder)), Progress("none"))
    assert abs(inverted.relief_strength + agreeing.relief_strength) < 0.05 * agreeing.relief_strength
    state = inverted.model.rollout(inverted.pool[:2].clone(), inverted.task.lattice, 3, inverted.generator)
    assert torch.isfinite(inverted._losses(state, torch.Generator().manual_seed(0))[1])
    rgb = Trainer(tiny_config(tmp_path, exemplar=str(folder / "Rock_Color.png")), Progress("none"))
    assert rgb.relief_strength is None


def test_a_folder_with_opengl_and_directx_normals_says_which_one_training_uses(tmp_path):
    from nca3d.train.trainer import load_exemplar_stack
    from tests.io.test_material import make_material

    folder = make_material(tmp_path / "Rock", {"albedo": "Rock_Color.png", "normal": "Rock_NormalGL.png"}, size=48)
    make_material(folder, {"normal": "Rock_NormalDX.png"}, size=48, directx=True)
    _, kinds, _, _, notes = load_exemplar_stack(tiny_config(tmp_path, exemplar=str(folder)))
    assert kinds == ["albedo", "normal"]
    assert "normal: Rock_NormalGL.png (OpenGL) used, Rock_NormalDX.png (DirectX) ignored" in notes


def test_bf16_rollout_gives_the_fp32_gradients_and_is_recorded(tmp_path):
    """bf16 autocast covers only the rollout's MLP matmuls: one iteration's gradients point the same
    way as in fp32 (states, decoder and loss stay fp32), and the header says which ran."""
    from nca3d.device import bf16_matmul_pays

    assert isinstance(bf16_matmul_pays(torch.device("cpu")), bool) and not bf16_matmul_pays(torch.device("meta"))
    grads = {}
    for precision in ("fp32", "bf16"):
        (tmp_path / precision).mkdir()
        trainer = Trainer(tiny_config(tmp_path / precision, iters=1, precision=precision), Progress("none"))
        assert trainer.rollout_bf16 == (precision == "bf16")
        torch.nn.init.normal_(trainer.model.nca.hidden_to_update.weight, std=0.05)  # a live NCA, not the identity
        trainer.step()
        grads[precision] = torch.cat([p.grad.flatten() for p in trainer.model.parameters() if p.grad is not None])
        files = trainer.run()
        assert read_header(files[0])[0]["provenance"]["rollout_precision"] == precision
    assert torch.nn.functional.cosine_similarity(grads["fp32"], grads["bf16"], dim=0) > 0.99
    with pytest.raises(NCA3DError, match="precision"):
        tiny_config(tmp_path, precision="fp16")


def test_point_target_sampling_reaches_the_loss_and_the_header(tmp_path, capsys):
    trainer = Trainer(tiny_config(tmp_path, iters=2, target_sampling="point"), Progress("none"))
    assert trainer.loss_fn.target_sampling == "point"
    files = trainer.run()
    assert read_header(files[0])[0]["provenance"]["config"]["target_sampling"] == "point"
    (tmp_path / "area").mkdir()
    assert Trainer(tiny_config(tmp_path / "area", iters=1), Progress("none")).loss_fn.target_sampling == "area"
    with pytest.raises(NCA3DError, match="--target-sampling nearest is unknown"):
        tiny_config(tmp_path, target_sampling="nearest")
    good = make_exemplar(tmp_path / "good.png")
    assert main(["train", str(good), "--target-sampling", "nearest", "--out", str(tmp_path / "x.nca3d")]) == 2
    assert "invalid choice: 'nearest'" in capsys.readouterr().err


def test_a_cpu_batch_grows_in_parts_on_streams_with_the_same_numbers_on_one_thread(tmp_path, monkeypatch):
    """A CPU iteration grows and scores its batch in BATCH_PARTS parts, one stream per core (one torch
    thread each); on one thread the parts run one after the other and the run is the same."""
    import nca3d.train.trainer as trainer_module

    streams = []
    real_run_threads = trainer_module.run_threads
    monkeypatch.setattr(trainer_module, "run_threads",
                        lambda worker, count, *a: streams.append(count) or real_run_threads(worker, count, *a))
    runs, threads = {}, torch.get_num_threads()
    try:
        for count in (1, 2):
            (tmp_path / str(count)).mkdir()
            trainer = Trainer(tiny_config(tmp_path / str(count), batch=4, iters=3), Progress("none"))
            torch.nn.init.normal_(trainer.model.nca.hidden_to_update.weight, std=0.05)  # a live NCA
            torch.set_num_threads(count)
            losses = [trainer.step() for _ in range(3)]
            runs[count] = losses, [p.detach().clone() for p in trainer.model.parameters()], trainer.pool.clone()
    finally:
        torch.set_num_threads(threads)
    assert streams == [1] * 3 + [2] * 3
    assert np.allclose(runs[1][0], runs[2][0], rtol=1e-5)
    for one, two in zip(runs[1][1], runs[2][1]):
        assert torch.allclose(one, two, atol=1e-6)
    assert torch.allclose(runs[1][2], runs[2][2], atol=1e-5)


def test_a_second_run_on_the_same_out_is_refused_while_the_first_trains(tmp_path, capsys):
    """Two runs writing one NAME.ckpt in turn would undo each other's iterations."""
    from nca3d.io.run_lock import run_lock

    config = tiny_config(tmp_path, iters=2)
    with run_lock(tmp_path / "m.lock", "the first run", "wait"):
        assert main(["train", config.exemplar, "--out", config.out, "--iters", "1", "--features", "patches",
                     "--grid", "8", "--device", "cpu", "--progress", "none"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"run '{config.out}' is in use by another process (pid {os.getpid()})" in err[0]
        assert not checkpoint_path(config.out).exists()
    Trainer(config, Progress("none")).run()
    assert load_model(config.out).provenance["iterations"] == 2 and not (tmp_path / "m.lock").exists()
