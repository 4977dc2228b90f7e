import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from nca3d.lattices import Grid2D, Grid3D
from nca3d.lattices.base import cartesian_local
from tests.conftest import random_model

C = 3


def _filters(perception, p):
    return perception.reshape(*perception.shape[:-1], p, C)


def test_grid2d_ramp_gives_constant_sobel_and_zero_laplacian():
    grid = Grid2D((12, 16))
    x = torch.arange(16.0).expand(12, 16)
    y = torch.arange(12.0)[:, None].expand(12, 16)
    for ramp, sobel_index in ((x, 1), (y, 2)):
        state = (ramp[None, ..., None] * torch.tensor([1.0, 2.0, -0.5])).contiguous()
        out = _filters(grid.perceive(state), 4)[0, 1:-1, 1:-1]  # away from the wrap
        assert torch.allclose(out[..., 0, :], state[0, 1:-1, 1:-1])
        assert torch.allclose(out[..., sobel_index, :], 8.0 * torch.tensor([1.0, 2.0, -0.5]).expand_as(out[..., 0, :]))
        assert torch.allclose(out[..., 3 - sobel_index, :], torch.zeros(()), atol=1e-5)
        assert torch.allclose(out[..., 3, :], torch.zeros(()), atol=1e-4)


def test_grid3d_ramp_gives_constant_sobel_and_zero_laplacian():
    grid = Grid3D((8, 9, 10))
    z, y, x = torch.meshgrid(torch.arange(8.0), torch.arange(9.0), torch.arange(10.0), indexing="ij")
    for ramp, sobel_index in ((x, 1), (y, 2), (z, 3)):
        state = ramp[None, ..., None].expand(1, 8, 9, 10, C).contiguous()
        out = _filters(grid.perceive(state), 5)[0, 1:-1, 1:-1, 1:-1]
        for k in (1, 2, 3):
            expected = 16.0 if k == sobel_index else 0.0  # [1,2,1]x[1,2,1]x[-1,0,1] / 2 on a unit ramp
            assert torch.allclose(out[..., k, :], torch.full_like(out[..., k, :], expected), atol=1e-4)
        assert torch.allclose(out[..., 4, :], torch.zeros(()), atol=1e-4)


@pytest.mark.parametrize("grid", [Grid2D(7), Grid3D(5)])
def test_constant_state_gives_zero_for_non_identity_filters(grid):
    state = torch.full((2, *grid.cell_shape, C), 0.7)
    out = _filters(grid.perceive(state), grid.perception_size)
    assert torch.allclose(out[..., 0, :], state)
    assert out[..., 1:, :].abs().max() < 1e-5


def _conv_reference(state, kernels):
    """Depthwise circular convolution with explicit kernels: the textbook definition."""
    dims = state.dim() - 2
    x = state.movedim(-1, 1)  # (B, C, *cells)
    x = F.pad(x, (1, 1) * dims, mode="circular")
    conv = F.conv2d if dims == 2 else F.conv3d
    outs = [conv(x, k.expand(C, 1, *k.shape), groups=C).movedim(1, -1) for k in kernels]
    return torch.cat(outs, -1)


def _kernels_2d():
    sobel_x = torch.tensor([[-1.0, 0, 1], [-2, 0, 2], [-1, 0, 1]])
    identity = torch.zeros(3, 3)
    identity[1, 1] = 1
    laplacian = torch.tensor([[1.0, 2, 1], [2, -12, 2], [1, 2, 1]])
    return [identity, sobel_x, sobel_x.t(), laplacian]


def _kernels_3d():
    smooth = torch.tensor([1.0, 2, 1])
    diff = torch.tensor([-1.0, 0, 1])
    outer = lambda a, b, c: a[:, None, None] * b[None, :, None] * c[None, None, :]  # (z, y, x)
    identity = torch.zeros(3, 3, 3)
    identity[1, 1, 1] = 1
    offsets = torch.stack(torch.meshgrid(*[torch.tensor([-1, 0, 1])] * 3, indexing="ij")).abs().sum(0)
    laplacian = torch.tensor([-88.0, 6, 3, 2])[offsets] / 8  # centre, faces, edges, corners
    return [identity, outer(smooth, smooth, diff) / 2, outer(smooth, diff, smooth) / 2,
            outer(diff, smooth, smooth) / 2, laplacian]


def test_grid2d_matches_explicit_kernels():
    state = torch.randn(2, 9, 11, C)
    expected = _conv_reference(state, _kernels_2d())
    assert torch.allclose(Grid2D((9, 11)).perceive(state), expected, atol=1e-5)


def test_grid3d_matches_explicit_kernels():
    state = torch.randn(1, 6, 7, 5, C)
    assert torch.allclose(Grid3D((6, 7, 5)).perceive(state), _conv_reference(state, _kernels_3d()), atol=1e-4)


@pytest.mark.parametrize("grid, kernels", [(Grid2D((5, 7)), _kernels_2d), (Grid3D((4, 5, 6)), _kernels_3d)])
@pytest.mark.parametrize("rows_per_block", [1, 3, None])
def test_training_perception_backward_is_the_filters_transpose(grid, kernels, rows_per_block):
    """With autograd on, the perception (computed slab by slab) comes from one function whose
    backward is the filters' own adjoint: its gradients must be autograd's through explicit
    convolutions (float64)."""
    generator = torch.Generator().manual_seed(3)
    state = torch.randn(2, *grid.cell_shape, C, generator=generator, dtype=torch.float64, requires_grad=True)
    max_cells = None if rows_per_block is None else rows_per_block * 2 * grid.num_cells // grid.cell_shape[0]
    perception = grid.perceive(state, max_cells)
    assert torch.equal(torch.cat([b for _, b in grid.perceive_blocks(state, max_cells)], 1), perception)
    expected = _conv_reference(state, [k.double() for k in kernels()])
    assert torch.allclose(perception, expected)
    weights = torch.randn(expected.shape, generator=generator, dtype=torch.float64)
    (got,) = torch.autograd.grad((perception * weights).sum(), state)
    (want,) = torch.autograd.grad((expected * weights).sum(), state)
    assert torch.allclose(got, want, atol=1e-10)


@pytest.mark.parametrize("grid, kernels", [(Grid2D((5, 7)), _kernels_2d), (Grid3D((4, 5, 6)), _kernels_3d)])
def test_stencil_holds_the_explicit_kernels_and_wrapped_neighbours(grid, kernels):
    neighbours, weights = grid.stencil()
    offsets = list(itertools.product((-1, 0, 1), repeat=len(grid.cell_shape)))
    assert torch.allclose(torch.from_numpy(weights), torch.stack([k.reshape(-1) for k in kernels()]))
    strides = [math.prod(grid.cell_shape[a + 1:]) for a in range(len(grid.cell_shape))]
    cell = (0, *[n - 1 for n in grid.cell_shape[1:]])  # a corner: its neighbours wrap on every axis
    for k, offset in enumerate(offsets):
        wrapped = [(c + o) % n for c, o, n in zip(cell, offset, grid.cell_shape)]
        assert neighbours[sum(c * s for c, s in zip(cell, strides)), k] == sum(c * s for c, s in zip(wrapped, strides))


@pytest.mark.parametrize("grid", [Grid2D((5, 7)), Grid3D((4, 5, 6)), Grid2D(3)])
def test_perception_of_some_rows_is_those_rows_of_the_whole(grid):
    """perceive_rows (the fired cells of a training step; a compiled stencil loop each way on float32
    CPU states) gives the rows of the whole perception and the same gradient for the state."""
    generator = torch.Generator().manual_seed(4)
    state = torch.randn(3, *grid.cell_shape, C, generator=generator, requires_grad=True)
    rows = (torch.rand(state.shape[:-1], generator=generator) < 0.5).reshape(-1).nonzero().squeeze(1)
    want = grid.perceive(state).reshape(-1, grid.perception_size * C).index_select(0, rows)
    got = grid.perceive_rows(state, rows)
    assert torch.allclose(got, want, atol=1e-5)
    weights = torch.randn(want.shape, generator=generator)
    (got_grad,) = torch.autograd.grad((got * weights).sum(), state)
    (want_grad,) = torch.autograd.grad((want * weights).sum(), state)
    assert torch.allclose(got_grad, want_grad, atol=1e-5)
    assert got_grad.abs().sum() > 0


@pytest.mark.parametrize("grid", [Grid2D((10, 6)), Grid3D((5, 4, 6))])
def test_perception_blocks_cover_the_grid_exactly(grid):
    state = torch.randn(2, *grid.cell_shape, C)
    whole = grid.perceive(state)
    blocks = list(grid.perceive_blocks(state, max_cells=2 * grid.num_cells // grid.cell_shape[0]))
    assert len(blocks) == grid.cell_shape[0]
    assert torch.equal(torch.cat([b for _, b in blocks], 1), whole)


@pytest.mark.parametrize("grid", [Grid2D((5, 7)), Grid3D((4, 5, 6))])
def test_locate_is_the_textbook_n_linear_location(grid):
    """Corner k is the k-th of itertools.product((0, 1), repeat=d) (x first), each the wrapped
    lower or upper cell along every axis with weight 1 - frac or frac; locate_cells agrees."""
    dims = len(grid.cell_shape)
    points = (torch.rand(300, dims) - 0.5) * 40
    cell = torch.floor(points)
    frac = points - cell
    sizes, corners, weights = grid.cell_shape[::-1], [], []
    for bits in itertools.product((0, 1), repeat=dims):
        index, weight = torch.zeros(300, dtype=torch.long), torch.ones(300)
        for axis in range(dims):
            stride = math.prod(sizes[:axis])
            index += (cell[:, axis].long() + bits[axis]) % sizes[axis] * stride
            weight *= frac[:, axis] if bits[axis] else 1 - frac[:, axis]
        corners.append(index)
        weights.append(weight)
    for located in (grid.locate(points), grid.locate_cells(cell.long(), frac)):
        assert torch.equal(located.corners, torch.stack(corners, 1))
        assert torch.allclose(located.weights, torch.stack(weights, 1), atol=1e-6)
        assert torch.allclose(located.local, frac * 2 - 1, atol=1e-6)


@pytest.mark.parametrize("harmonics", [0, 1, 2])
@pytest.mark.parametrize("grid", [Grid2D((5, 7)), Grid3D((4, 5, 6))])
def test_compiled_locate_equals_the_torch_passes(grid, harmonics):
    """float32 CPU points take the compiled loop (nca3d.jit); corners and weights are exactly the
    torch reference's (_locate_rows), the harmonics within float32 rounding; float64 points take
    the reference itself."""
    grid.harmonics = harmonics
    dims = len(grid.cell_shape)
    points = (torch.rand(2000, dims) - 0.4) * 300  # negative, and many periods out
    rows = points.t().contiguous()
    cell = torch.floor(rows)
    want = grid._locate_rows(cell, rows - cell)
    got = grid.locate(points)
    assert got.corners.dtype == want.corners.dtype == torch.int32
    assert torch.equal(got.corners, want.corners) and torch.equal(got.weights, want.weights)
    assert got.local.shape == want.local.shape and (got.local - want.local).abs().max() < 1e-6
    located = grid.locate(points.double())
    assert torch.equal(located.corners, want.corners) and located.weights.dtype == torch.float64


@pytest.mark.parametrize("grid", [Grid2D((5, 7)), Grid3D((4, 5, 6))])
def test_locate_weights_are_a_partition_of_unity(grid):
    points = torch.randn(500, len(grid.cell_shape)) * 20
    located = grid.locate(points)
    assert located.corners.shape == (500, 2 ** len(grid.cell_shape))
    assert (located.weights >= 0).all()
    assert torch.allclose(located.weights.sum(-1), torch.ones(500))
    assert located.corners.min() >= 0 and located.corners.max() < grid.num_cells
    assert located.local.abs().max() <= 1.0


def test_locate_interpolates_a_linear_field_and_wraps():
    grid = Grid2D((6, 8))
    field = (torch.arange(8.0)[None, :] * 2 + torch.arange(6.0)[:, None] * 3).reshape(-1)
    points = torch.tensor([[2.25, 1.5], [0.0, 0.0], [8.0 + 2.25, -6.0 + 1.5]])
    located = grid.locate(points)
    values = (field[located.corners] * located.weights).sum(-1)
    assert torch.allclose(values, torch.tensor([2.25 * 2 + 1.5 * 3, 0.0, 2.25 * 2 + 1.5 * 3]))


def test_sample_points_are_ordered_like_an_image():
    grid = Grid2D((3, 4))
    points = grid.sample_points(2.0)
    assert points.shape == (6 * 8, 2)
    assert torch.equal(points[1], torch.tensor([0.75, 0.25]))  # x moves fastest
    assert torch.equal(points[8], torch.tensor([0.25, 0.75]))


def _decode_both_sides(model, grid, axis):
    """Decode at points on a shared cell face, located from the cell on each side."""
    state = torch.randn(1, *grid.cell_shape, model.config.channels)
    dims = len(grid.cell_shape)
    g = torch.Generator().manual_seed(3)
    frac = torch.rand(200, dims, generator=g)
    cell = torch.randint(0, 4, (200, dims), generator=g)
    frac[:, axis] = 0.0
    lower = cell.clone()
    lower[:, axis] -= 1
    frac_lower = frac.clone()
    frac_lower[:, axis] = 1.0
    a = model.decode_located(state, grid.locate_cells(cell, frac))
    b = model.decode_located(state, grid.locate_cells(lower, frac_lower))
    return (a - b).abs().max().item()


@pytest.mark.parametrize("domain", ["2d", "volume"])
def test_decoding_is_c0_across_cell_faces_with_harmonics(domain):
    model = random_model(domain, grid_size=[5] * (2 if domain == "2d" else 3), harmonics=2)
    grid = model.make_lattice()
    for axis in range(len(grid.cell_shape)):
        assert _decode_both_sides(model, grid, axis) < 1e-5


def test_raw_cartesian_coordinate_is_not_c0():
    model = random_model("2d", grid_size=[5, 5], harmonics=0)
    assert _decode_both_sides(model, model.make_lattice(), 0) > 1e-3


def test_cartesian_local_harmonics_shape_and_range():
    frac = torch.rand(10, 3)
    assert cartesian_local(frac, 0).shape == (10, 3)
    encoded = cartesian_local(frac, 2)
    assert encoded.shape == (10, 12) and encoded.abs().max() <= 1.0
    assert torch.allclose(cartesian_local(torch.zeros(1, 2), 3), cartesian_local(torch.ones(1, 2), 3), atol=1e-6)
