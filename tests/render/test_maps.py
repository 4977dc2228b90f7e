"""nca3d.render.maps: the 2D grid baker (GridBaker) over core.dense's dense-grid decode."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nca3d.core.nca import make_generator
from nca3d.progress import Progress
from nca3d.render.maps import (
    GridBaker,
    MapsConfig,
    MapSet,
    decoded_normals,
    model_maps,
    store_outputs,
)
from tests.conftest import random_model


def _reference_bake(model, lattice, state, size: int, config: MapsConfig) -> MapSet:
    """The maps from the model's own decode at every texel centre ((c + 0.5) W / S, (r + 0.5) H / S)."""
    maps = MapSet(model_maps(model), size, config.exr)
    width, height = lattice.sizes_xyz
    x = (torch.arange(size, dtype=torch.float32) + 0.5) * (width / size)
    y = (torch.arange(size, dtype=torch.float32) + 0.5) * (height / size)
    points = torch.stack(torch.broadcast_tensors(x[None, :], y[:, None]), dim=-1).reshape(-1, 2)
    with torch.no_grad():
        values = model.decode(state, lattice, points)[0].numpy()
    normals = decoded_normals(values[:, model.channel_slices()["normal"]])
    store_outputs(maps, model, values, np.arange(size * size), normals, normals, config.normal_convention)
    return maps


@pytest.mark.parametrize("exr, convention", [(False, "opengl"), (True, "directx")])
def test_grid_bake_equals_the_models_decode_at_every_texel(exr, convention):
    """Every map (albedo, normal, roughness, height, AO) as the model's decode gives it, within
    float rounding: at most one quantisation step apart, nearly all texels identical."""
    torch.manual_seed(0)
    model = random_model("2d", outputs="pbr", grid_size=[7, 10], harmonics=1)  # non-square
    lattice = model.make_lattice()
    with torch.inference_mode():
        state = model.rollout(model.seed(lattice), lattice, 6, make_generator(3))
    size = 45  # no multiple of the lattice
    config = MapsConfig(model="m", out=".", size=size, exr=exr, normal_convention=convention)
    reference = _reference_bake(model, lattice, state, size, config)
    for method in ("separable", "generic"):
        maps, covered = GridBaker(model, config, Progress("none"), method=method).bake(state)
        assert covered.all() and sorted(maps.arrays) == sorted(reference.arrays)
        for name, want in reference.arrays.items():
            got = maps.arrays[name]
            assert got.dtype == want.dtype and got.shape == want.shape, name
            if got.dtype == np.float32:
                np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6, err_msg=name)
            else:
                step = np.abs(got.astype(np.int64) - want.astype(np.int64))
                assert step.max() <= 1 and (step == 0).mean() > 0.99, (method, name)
