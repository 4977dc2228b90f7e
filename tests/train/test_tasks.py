"""nca3d.train.tasks: the 2D task's preview (core.dense's grid decode); a volume trained on a crop."""

import torch

from nca3d.core.nca import make_generator
from nca3d.render.volume import march_rays
from nca3d.train.tasks import Texture2DTask, VolumeTask
from tests.conftest import random_model


def test_2d_preview_is_the_whole_tile_at_scale():
    model = random_model("2d", outputs="rgb", grid_size=[6, 6], harmonics=1)
    task = Texture2DTask(6, 1, patch=8)
    with torch.inference_mode():
        state = model.rollout(model.seed(task.lattice, batch=2), task.lattice, 4, make_generator(0))
        reference = model.decode(state[:1], task.lattice, task.lattice.sample_points(4.0))[0]
    image = task.preview(model, state)
    assert image.shape == (24, 24, 3)
    torch.testing.assert_close(torch.from_numpy(image), reference.reshape(24, 24, 3), rtol=1e-5, atol=1e-6)


def test_2d_supersampled_crops_average_the_finer_samples_of_the_same_crops():
    """supersample 2: a scale-1 or scale-2 crop's px is the 2 x 2 mean of a crop decoded at twice the
    px over the same extent and origin; scale-4 crops (the finest) keep one sample a px."""
    model = random_model("2d", outputs="rgb", grid_size=[6, 6], harmonics=1)
    plain, fine = Texture2DTask(6, 1, patch=8, supersample=2), Texture2DTask(6, 1, patch=16, scales=(1, 2, 4))
    assert plain.rays_per_px == {1: 2, 2: 2, 4: 1} and Texture2DTask(6, 1, patch=8).rays_per_px == {1: 1, 2: 1, 4: 1}
    with torch.inference_mode():
        state = model.rollout(model.seed(plain.lattice, batch=2), plain.lattice, 4, make_generator(0))
        pooled = plain.render(model, state, make_generator(7))
        every = fine.render(model, state, make_generator(7))  # the same origins, twice the px
    assert [tuple(crop.shape) for crop in pooled] == [(2, 3, 8, 8)] * 7
    for crop, reference in zip(pooled[:3], every[:3]):  # scales 1 and 2
        torch.testing.assert_close(crop, torch.nn.functional.avg_pool2d(reference, 2), rtol=1e-5, atol=1e-6)
    centres = Texture2DTask(6, 1, patch=8).render(model, state, make_generator(7))
    for crop, reference in zip(pooled[3:], centres[3:]):  # scale 4: one sample a px, as without supersampling
        torch.testing.assert_close(crop, reference)


def test_a_volume_crop_renders_what_the_whole_lattice_shows():
    """A 16-cell lattice trained on an 8-cell crop: the crop's rays (wrapping through it, as deep and
    as dense as through the whole cube) composite what rays through the crop tiled 2 x 2 x 2 do."""
    model = random_model("volume", outputs="rgba", grid_size=[16] * 3, harmonics=1, channels=8, hidden=16)
    crop, whole = VolumeTask(16, 1, patch=8, crop=8), VolumeTask(16, 1, patch=8)
    assert crop.lattice.cell_shape == (8, 8, 8) and whole.lattice.cell_shape == (16, 16, 16)
    state = torch.randn((1, 8, 8, 8, 8), generator=torch.Generator().manual_seed(0))
    origins = torch.rand((32, 3), generator=torch.Generator().manual_seed(1)) * 2 - 1  # whole-lattice units
    direction = torch.nn.functional.normalize(torch.tensor([0.3, -0.5, 0.8]), dim=0)
    background = torch.ones(3)
    with torch.no_grad():
        tiled = march_rays(model, state.repeat(1, 2, 2, 2, 1), whole.lattice, origins, direction, 48, background,
                           depth=whole.depth, density_scale=whole.density_scale)
        # a whole-lattice point p is cell (p + 1) * 8, which is crop cell (2p + 2) * 4: crop point 2p + 1
        cropped = march_rays(model, state, crop.lattice, origins * 2 + 1, direction, 48, background,
                             depth=crop.depth, density_scale=crop.density_scale)
    assert tiled.std() > 0.02  # a visible texture, not the background
    torch.testing.assert_close(cropped, tiled, rtol=1e-4, atol=1e-5)


def _saved_bytes_and_gradients(model, task, state):
    """Bytes autograd keeps through a volume render's forward, and the gradients of a loss on it."""
    saved = []

    def pack(tensor):
        saved.append(tensor.numel() * tensor.element_size())
        return tensor

    model.zero_grad()
    state = state.clone().requires_grad_(True)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        crops = task.render(model, state, make_generator(3))
    sum(crop.square().mean() for crop in crops).backward()
    return sum(saved), [state.grad.clone(), *(p.grad.clone() for p in model.lppn.parameters())]


def test_volume_views_are_checkpointed_with_the_same_gradients(monkeypatch):
    """Checkpointed views keep a fraction of the plain render's activations in the forward (each
    view's ray samples are recomputed in the backward) and give the same gradients."""
    from nca3d.train import tasks

    model = random_model("volume", outputs="rgba", grid_size=[8] * 3, harmonics=1, channels=8, hidden=16)
    task = VolumeTask(8, 1, patch=8, samples=16)
    state = torch.randn((2, 8, 8, 8, 8), generator=torch.Generator().manual_seed(0))
    kept, gradients = _saved_bytes_and_gradients(model, task, state)
    monkeypatch.setattr(tasks, "CHECKPOINT_VIEWS", False)
    plain_kept, plain_gradients = _saved_bytes_and_gradients(model, task, state)
    assert kept < plain_kept / 20
    for checkpointed, plain in zip(gradients, plain_gradients, strict=True):
        torch.testing.assert_close(checkpointed, plain, rtol=1e-5, atol=1e-7)
