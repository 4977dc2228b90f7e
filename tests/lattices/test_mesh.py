import math

import numpy as np
import pytest
import torch

from nca3d.lattices import MeshLattice, SurfacePoints, icosphere, triangle_local
from nca3d.lattices.mesh import unique_edges
from tests.conftest import random_model

C = 4


@pytest.mark.parametrize("frequency", [1, 3, 64])
def test_icosphere_counts_and_valence(frequency):
    vertices, faces = icosphere(frequency)
    assert vertices.shape == (10 * frequency ** 2 + 2, 3)
    assert faces.shape == (20 * frequency ** 2, 3)
    assert np.allclose(np.linalg.norm(vertices, axis=1), 1.0)
    valence = np.bincount(unique_edges(faces).ravel())
    assert (valence == 5).sum() == 12 and ((valence == 5) | (valence == 6)).all()
    normals = np.cross(vertices[faces[:, 1]] - vertices[faces[:, 0]], vertices[faces[:, 2]] - vertices[faces[:, 0]])
    assert ((normals * vertices[faces].mean(1)).sum(1) > 0).all()  # wound outward


def test_frequency_64_icosphere_is_exact():
    vertices, faces = icosphere(64)
    assert len(vertices) == 40962 and len(faces) == 81920


def test_constant_state_gives_zero_messages():
    lattice = MeshLattice(*icosphere(3))
    state = torch.full((2, lattice.num_cells, C), -0.3)
    out = lattice.perceive(state).reshape(2, -1, 5, C)
    assert torch.allclose(out[:, :, 0], state)
    assert out[:, :, 1:].abs().max() < 1e-5


def test_perception_does_not_depend_on_neighbour_order():
    vertices, faces = icosphere(2)
    state = torch.randn(1, len(vertices), C)
    reference = MeshLattice(vertices, faces).perceive(state)
    rng = np.random.default_rng(0)
    shuffled = np.roll(faces[rng.permutation(len(faces))], 1, axis=1)  # face order and corner order
    assert torch.allclose(MeshLattice(vertices, shuffled).perceive(state), reference, atol=1e-6)


def _fan(valence):
    """A planar fan: centre vertex 0 with `valence` unit spokes, rotated by an odd angle."""
    angles = 2 * math.pi * np.arange(valence) / valence + 0.3
    ring = np.stack([np.cos(angles), np.sin(angles), np.zeros(valence)], 1)
    vertices = np.concatenate([np.zeros((1, 3)), ring])
    faces = np.array([[0, 1 + i, 1 + (i + 1) % valence] for i in range(valence)])
    return vertices, faces


def test_valence_five_and_six_agree_on_a_linear_field():
    gradient = torch.tensor([[0.7, -1.2, 0.4], [2.0, 0.5, -0.1]]).t()  # (3 xyz, 2 channels)
    centres = []
    for valence in (5, 6):
        vertices, faces = _fan(valence)
        lattice = MeshLattice(vertices, faces)
        state = (torch.from_numpy(vertices).float() @ gradient)[None]  # (1, N, 2)
        centres.append(lattice.perceive(state)[0, 0])
    assert torch.allclose(centres[0], centres[1], atol=1e-5)
    # mean(Y * (s_j - s_i)) * 6: the constant term vanishes, d_x / d_y terms give 3 * gradient
    messages = centres[0].reshape(5, 2)
    assert torch.allclose(messages[1], torch.zeros(2), atol=1e-5)
    assert torch.allclose(messages[2], 3 * gradient[1], atol=1e-5)  # d_y
    assert torch.allclose(messages[4], 3 * gradient[0], atol=1e-5)  # d_x


def test_triangle_local_is_symmetric_bounded_and_flattened():
    g = torch.Generator().manual_seed(0)
    r = torch.rand(200000, 2, generator=g)
    r = torch.where(r.sum(1, keepdim=True) > 1, 1 - r, r)  # uniform in the triangle
    bary = torch.stack([1 - r.sum(1), r[:, 0], r[:, 1]], 1)
    local = triangle_local(bary)
    assert local.abs().max() <= 1.0 + 1e-6
    assert torch.allclose(local, triangle_local(bary[:, [2, 0, 1]]))
    # The CDF transform makes each coordinate uniform on [-1, 1]: mean 0, std 1/sqrt(3).
    assert local.mean(0).abs().max() < 0.01
    assert (local.std(0) - 1 / math.sqrt(3)).abs().max() < 0.01


def _edge_mismatch(coord):
    """Max decode difference at points on shared edges, located from each adjacent face."""
    model = random_model("mesh", triangle_coord=coord, icosphere_frequency=2)
    lattice = model.make_lattice()
    faces = lattice.faces.numpy()
    state = torch.randn(1, lattice.num_cells, model.config.channels)
    lookup = {}
    for f, tri in enumerate(faces):
        for k in range(3):
            a, b = tri[k], tri[(k + 1) % 3]
            lookup.setdefault((min(a, b), max(a, b)), []).append((f, k))
    face_a, bary_a, face_b, bary_b = [], [], [], []
    for (a, b), owners in lookup.items():
        (fa, _), (fb, _) = owners
        for t in (0.2, 0.5, 0.9):
            for face, out_face, out_bary in ((fa, face_a, bary_a), (fb, face_b, bary_b)):
                weights = np.zeros(3)
                weights[list(faces[face]).index(a)] = t
                weights[list(faces[face]).index(b)] = 1 - t
                out_face.append(face)
                out_bary.append(weights)
    decode = lambda f, w: model.decode(state, lattice, SurfacePoints(torch.tensor(f), torch.tensor(np.array(w)).float()))
    return (decode(face_a, bary_a) - decode(face_b, bary_b)).abs().max().item()


def test_decoding_is_c0_across_shared_edges():
    assert _edge_mismatch("sorted_cdf") < 1e-5


def test_decoding_without_the_triangle_transform_breaks_c0():
    assert _edge_mismatch("barycentric") > 1e-3


def test_locate_weights_and_corners():
    lattice = MeshLattice(*icosphere(2))
    bary = torch.rand(50, 3)
    bary = bary / bary.sum(1, keepdim=True)
    face = torch.randint(0, lattice.faces.shape[0], (50,))
    located = lattice.locate(SurfacePoints(face, bary))
    assert torch.equal(located.corners, lattice.faces[face])
    assert (located.weights >= 0).all() and torch.allclose(located.weights.sum(1), torch.ones(50))


def test_perception_gradient_matches_the_dense_operator():
    vertices, faces = icosphere(3)
    lattice = MeshLattice(vertices, faces)
    state = torch.randn(2, len(vertices), 5, requires_grad=True)
    weights = torch.randn(2, len(vertices), 25)
    (_, perception), = lattice.perceive_blocks(state, None)
    (perception * weights).sum().backward()
    dense = lattice.operator.to_dense()
    reference_state = state.detach().clone().requires_grad_(True)
    flat = reference_state.permute(1, 0, 2).reshape(len(vertices), -1)
    messages = (dense @ flat).reshape(4, len(vertices), 2, 5).permute(2, 1, 0, 3).reshape(2, len(vertices), 20)
    (torch.cat([reference_state, messages], -1) * weights).sum().backward()
    assert torch.allclose(perception, torch.cat([reference_state, messages], -1), atol=1e-5)
    assert torch.allclose(state.grad, reference_state.grad, atol=1e-4)


@pytest.mark.parametrize("compiled", [True, False])
def test_triangle_local_is_the_sorted_cdf_formula(compiled, monkeypatch):
    """The in-place formula (the torch passes, and the compiled loop float32 CPU barycentrics take
    where numba imports) against the definition: sort, then each value's triangular CDF (x <= mode:
    x^2 / mode, else 1 - (1 - x)^2 / (1 - mode)), corners and edges of the triangle included."""
    from nca3d.lattices import base

    if not compiled:
        monkeypatch.setattr(base, "compiled", lambda *args: None)
    torch.manual_seed(3)
    bary = torch.rand(500, 3)
    bary = torch.cat([bary / bary.sum(1, keepdim=True),
                      torch.tensor([[1.0, 0, 0], [0, 1, 0], [1 / 3, 1 / 3, 1 / 3], [0.5, 0.5, 0], [0.25, 0.25, 0.5]])])
    ordered = bary.sort(dim=-1, descending=True).values
    a, c = ordered[:, 0], ordered[:, 2]
    expected = []
    for x, mode in (((a - 1 / 3) * 1.5, 0.25), ((1 - a - c) * 2, 2 / 3), (c * 3, 0.0)):
        x = x.clamp(0, 1)
        rising = x * x / mode if mode > 0 else torch.zeros_like(x)
        expected.append(torch.where(x <= mode, rising, 1 - (1 - x) ** 2 / (1 - mode)) * 2 - 1)
    assert (triangle_local(bary) - torch.stack(expected, -1)).abs().max() < 1e-6



def test_compiled_triangle_local_equals_the_torch_passes(monkeypatch):
    """Bit for bit: the same float32 operations in the same order."""
    from nca3d.lattices import base

    bary = torch.rand(4000, 3)
    bary = bary / bary.sum(1, keepdim=True)
    compiled = triangle_local(bary)
    assert base.compiled(base._triangle_local_points) is not None
    monkeypatch.setattr(base, "compiled", lambda *args: None)
    assert torch.equal(compiled, triangle_local(bary))


@pytest.mark.parametrize("batch", [1, 2])
def test_inference_perception_equals_the_sparse_product(batch):
    """The inference gather (embedding_bag) against the differentiable CSR product + cat."""
    vertices, faces = icosphere(3)
    lattice = MeshLattice(vertices, faces)
    state = torch.randn(batch, len(vertices), 5)
    with torch.inference_mode():
        (_, fast), = lattice.perceive_blocks(state, None)
    (_, exact), = lattice.perceive_blocks(state.clone().requires_grad_(True), None)
    assert fast.shape == exact.shape == (batch, len(vertices), 25)
    assert (fast - exact.detach()).abs().max() < 1e-5
