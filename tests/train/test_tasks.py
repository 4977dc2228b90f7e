"""nca3d.train.tasks: the 2D task's preview (core.dense's grid decode)."""

import torch

from nca3d.core.nca import make_generator
from nca3d.train.tasks import Texture2DTask
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
