"""Triangle-mesh lattice: cells are vertices, primitives are faces.

Perception (P = 5): the cell's own state, then for each order-1 real spherical harmonic
Y = (1, d_y, d_z, d_x) of the unit edge direction d (object space) the mean over neighbours
of Y(d_ij) * (s_j - s_i), times 6 so that the result does not depend on valence.
Inference runs it as one weighted gather (F.embedding_bag) that gives the perception rows
directly; training as one CSR sparse matmul per batch element, (5N x N) @ (N x C) read as (N, 5C)
rows, whose backward is the precomputed transpose.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .base import Lattice, Located, rows_per_block, triangle_local

COORD_MODES = ("sorted_cdf", "barycentric")


@dataclass
class SurfacePoints:
    """Query points on a mesh lattice: face (Q,) long and barycentrics bary (Q, 3)."""

    face: Tensor
    bary: Tensor

    def __len__(self) -> int:
        return self.face.shape[0]

    def __getitem__(self, index: slice) -> "SurfacePoints":
        return SurfacePoints(self.face[index], self.bary[index])

    def to(self, device) -> "SurfacePoints":
        return SurfacePoints(self.face.to(device), self.bary.to(device))


def unique_edges(faces: np.ndarray) -> np.ndarray:
    """Undirected edges (E, 2) with i < j of a triangle list (F, 3)."""
    pairs = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    pairs = np.sort(pairs, axis=1)
    pairs = pairs[pairs[:, 0] != pairs[:, 1]]
    return np.unique(pairs, axis=0)


def perception_operator(vertices: np.ndarray, faces: np.ndarray) -> Tensor:
    """The sparse (4N, N) CSR matrix whose product with s (N, X) gives the 4 SH message means x 6."""
    n = len(vertices)
    edges = unique_edges(faces)
    src = np.concatenate([edges[:, 0], edges[:, 1]])  # directed i -> j
    dst = np.concatenate([edges[:, 1], edges[:, 0]])
    direction = vertices[dst] - vertices[src]
    length = np.linalg.norm(direction, axis=1, keepdims=True)
    direction = np.divide(direction, length, out=np.zeros_like(direction), where=length > 0)
    degree = np.bincount(src, minlength=n).astype(np.float64)
    scale = 6.0 / np.maximum(degree[src], 1.0)
    harmonics = np.stack([np.ones(len(src)), direction[:, 1], direction[:, 2], direction[:, 0]])  # (4, E)
    coeff = harmonics * scale  # (4, E)
    rows, cols, vals = [], [], []
    for k in range(4):
        rows += [src + k * n, np.arange(n) + k * n]
        cols += [dst, np.arange(n)]
        vals += [coeff[k], -np.bincount(src, weights=coeff[k], minlength=n)]
    indices = torch.from_numpy(np.stack([np.concatenate(rows), np.concatenate(cols)]))
    values = torch.from_numpy(np.concatenate(vals)).float()
    coo = torch.sparse_coo_tensor(indices, values, (4 * n, n), check_invariants=False).coalesce()
    with warnings.catch_warnings():  # "CSR support is in beta": nothing a user can act on
        warnings.simplefilter("ignore", UserWarning)
        return coo.to_sparse_csr()


def perception_bags(operator: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The whole perception [s, operator s] as weighted bags for F.embedding_bag: per cell i, bag
    5i is i itself (weight 1) and bag 5i+1+k row k*N+i of the (4N, N) operator, so the (5N, X)
    sums read as (N, 5X) perception rows. Returns indices (nnz,), offsets (5N,), weights (nnz,)."""
    n = operator.shape[1]
    coo = operator.to_sparse_coo()  # from CSR: already coalesced
    rows, cols = coo.indices()
    cells = torch.arange(n)
    bag = torch.cat([cells * 5, rows % n * 5 + 1 + rows // n])
    order = torch.sort(bag, stable=True).indices
    indices = torch.cat([cells, cols])[order]
    weights = torch.cat([torch.ones(n), coo.values()])[order]
    sizes = torch.bincount(bag, minlength=5 * n)
    offsets = torch.cumsum(sizes, 0) - sizes
    return indices, offsets, weights


class _SparseProduct(torch.autograd.Function):
    """operator @ dense with a precomputed transpose for the backward pass (torch's own CSR
    backward transposes the matrix on every call: 9x slower at 40k cells)."""

    @staticmethod
    def forward(ctx, operator: Tensor, transpose: Tensor, dense: Tensor) -> Tensor:
        ctx.transpose = transpose
        return torch.sparse.mm(operator, dense)

    @staticmethod
    def backward(ctx, grad: Tensor):
        return None, None, torch.sparse.mm(ctx.transpose, grad.contiguous())


class MeshLattice(Lattice):
    """Cells on the vertices (N, 3) of a triangle mesh (F, 3)."""

    kind = "mesh"
    perception_size = 5
    local_dim = 3

    def __init__(self, vertices, faces, coord: str = "sorted_cdf"):
        if coord not in COORD_MODES:
            raise ValueError(f"coord must be one of {COORD_MODES}, got '{coord}'")
        vertices = np.asarray(vertices, dtype=np.float64)
        faces = np.asarray(faces, dtype=np.int64)
        if vertices.ndim != 2 or vertices.shape[1] != 3 or faces.ndim != 2 or faces.shape[1] != 3:
            raise ValueError("MeshLattice needs vertices (N, 3) and faces (F, 3)")
        if len(faces) == 0 or faces.min() < 0 or faces.max() >= len(vertices):
            raise ValueError("MeshLattice faces must index existing vertices")
        self.coord = coord
        self.cell_shape = (len(vertices),)
        self.vertices = torch.from_numpy(vertices).float()
        self.faces = torch.from_numpy(faces)
        self.operator = perception_operator(vertices, faces)
        self.bags = perception_bags(self.operator)
        # The bags as a (5N, N) CSR matrix: its product with one state (N, C) is the perception (N, 5C)
        indices, offsets, weights = self.bags
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            self.cell_operator = torch.sparse_csr_tensor(
                torch.cat([offsets, offsets.new_tensor([len(indices)])]), indices, weights, (5 * len(vertices), len(vertices)))
            self.cell_operator_t = self.cell_operator.to_sparse_coo().t().coalesce().to_sparse_csr()

    def to(self, device) -> "MeshLattice":
        self.vertices = self.vertices.to(device)
        self.faces = self.faces.to(device)
        self.operator = self.operator.to(device)
        self.cell_operator = self.cell_operator.to(device)
        self.cell_operator_t = self.cell_operator_t.to(device)
        self.bags = tuple(t.to(device) for t in self.bags)
        return self

    def perceive(self, state: Tensor, max_cells: int | None = None) -> Tensor:
        """(B, N, C) -> (B, N, 5C). Under autograd or off the CPU: one sparse product per batch
        element (no strided copies: a permute to (N, B*C) and back cost 5 ms per step at 10k cells),
        with the precomputed transpose as its backward."""
        if state.device.type == "cpu" and not state.requires_grad:
            return super().perceive(state, max_cells)
        batch, n, channels = state.shape
        with torch.autocast(state.device.type, enabled=False):  # the sparse product has no bf16 kernel
            rows = [_SparseProduct.apply(self.cell_operator, self.cell_operator_t, own.float()).view(n, 5 * channels)
                    for own in state.unbind(0)]
        return torch.stack(rows)

    def perceive_blocks(self, state: Tensor, max_cells: int | None) -> Iterator[tuple[slice, Tensor]]:
        batch, n, channels = state.shape
        step = rows_per_block(n, batch, max_cells)
        if state.device.type == "cpu" and not state.requires_grad:
            # Inference: one fused weighted gather (5x faster here than the CSR product and the
            # cat), perception rows in place in its (5N, B*C) output
            flat = state.permute(1, 0, 2).reshape(n, batch * channels).float()
            indices, offsets, weights = self.bags
            sums = F.embedding_bag(indices, flat, offsets, mode="sum", per_sample_weights=weights)
            perception = sums.view(n, 5, batch, channels).permute(2, 0, 1, 3).reshape(batch, n, 5 * channels)
        else:
            perception = self.perceive(state)
        for start in range(0, n, step):
            yield slice(start, min(n, start + step)), perception[:, start:start + step]

    def locate(self, query: SurfacePoints) -> Located:
        corners = self.faces.index_select(0, query.face)  # 10x faster here than faces[face]
        bary = query.bary
        if self.coord == "sorted_cdf":
            local = triangle_local(bary)
        else:
            local = bary * 2.0 - 1.0
        return Located(corners=corners, weights=bary, local=local)


def icosphere(frequency: int) -> tuple[np.ndarray, np.ndarray]:
    """Geodesic sphere: every icosahedron face split into frequency^2 triangles, on the unit sphere.

    Returns vertices (10 f^2 + 2, 3) float64 and outward-wound faces (20 f^2, 3) int64.
    """
    if frequency < 1:
        raise ValueError("icosphere frequency must be >= 1")
    phi = (1.0 + 5.0 ** 0.5) / 2.0
    base = np.array([[-1, phi, 0], [1, phi, 0], [-1, -phi, 0], [1, -phi, 0],
                     [0, -1, phi], [0, 1, phi], [0, -1, -phi], [0, 1, -phi],
                     [phi, 0, -1], [phi, 0, 1], [-phi, 0, -1], [-phi, 0, 1]], dtype=np.float64)
    base_faces = np.array([[0, 11, 5], [0, 5, 1], [0, 1, 7], [0, 7, 10], [0, 10, 11],
                           [1, 5, 9], [5, 11, 4], [11, 10, 2], [10, 7, 6], [7, 1, 8],
                           [3, 9, 4], [3, 4, 2], [3, 2, 6], [3, 6, 8], [3, 8, 9],
                           [4, 9, 5], [2, 4, 11], [6, 2, 10], [8, 6, 7], [9, 8, 1]])
    f = frequency
    # Lattice points (i, j) of one face with weights (f - i - j, i, j) on its corners (a, b, c).
    ij = np.array([(i, j) for i in range(f + 1) for j in range(f + 1 - i)])
    local_index = -np.ones((f + 1, f + 1), dtype=np.int64)
    local_index[ij[:, 0], ij[:, 1]] = np.arange(len(ij))
    weights = np.stack([f - ij.sum(1), ij[:, 0], ij[:, 1]], axis=1)  # (P, 3)
    # Exact integer key per point: (corner id, weight) pairs sorted by id; zero weights dropped.
    corner_ids = base_faces[:, None, :].repeat(len(ij), axis=1)  # (20, P, 3)
    w = np.broadcast_to(weights, corner_ids.shape)
    ids = np.where(w > 0, corner_ids, 12)
    order = np.argsort(ids, axis=-1)
    key = np.concatenate([np.take_along_axis(ids, order, -1), np.take_along_axis(w, order, -1)], -1)
    _, first, inverse = np.unique(key.reshape(-1, 6), axis=0, return_index=True, return_inverse=True)
    inverse = inverse.reshape(20, len(ij))
    points = (w[..., None] * base[base_faces][:, None, :, :]).sum(2) / f  # (20, P, 3)
    vertices = points.reshape(-1, 3)[first]
    vertices /= np.linalg.norm(vertices, axis=1, keepdims=True)
    # Sub-triangles of one face, wound like the face (a, b, c).
    tris = []
    for i in range(f):
        for j in range(f - i):
            tris.append((local_index[i, j], local_index[i + 1, j], local_index[i, j + 1]))
            if i + j < f - 1:
                tris.append((local_index[i + 1, j], local_index[i + 1, j + 1], local_index[i, j + 1]))
    tris = np.array(tris)
    faces = inverse[:, tris].reshape(-1, 3)
    return vertices, faces
