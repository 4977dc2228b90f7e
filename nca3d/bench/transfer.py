"""Mesh models on meshes they never saw: `python -m nca3d.bench transfer --models M,... --meshes A,B`.

A mesh model trains on the icosphere; on a user's mesh it grows on an isotropic remesh with the
same cell count. This bench grows it on the icosphere, on a jittered icosphere (valence 6
everywhere, irregular neighbourhoods), on a remeshed sphere (a scan-like valence mix, no
curvature change) and on each mesh, and counts blotches: vertices whose decoded colour lies
farther than `threshold` (RGB, 0-1) from every colour of the exemplar. Rates are also given by
vertex class (boundary, valence 5 / 7, the 1% most curved by neighbour-centroid offset), so
the cause of blotches shows: what the icosphere lacks and the mesh has.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..core.nca import make_generator
from ..errors import NCA3DError
from ..io.images import read_exemplar
from ..lattices.mesh import MeshLattice, SurfacePoints, icosphere, unique_edges
from ..models import load_named_model
from ..ops.demo_meshes import load_demo_or_mesh
from ..ops.remesh import uniform_lattice
from ..train.trainer import exemplar_digest

JITTER = 0.2  # tangential jitter of the jittered icosphere, in edge lengths
GAMUT_SAMPLES = 20000  # exemplar pixels the gamut is made of


def vertex_colours(model, lattice: MeshLattice, state: torch.Tensor) -> np.ndarray:
    """The decoded RGB (N, 3) next to each vertex: a point at barycentric 0.96 of one of its faces."""
    faces = lattice.faces.cpu().numpy()
    n = lattice.num_cells
    face_of, corner = np.zeros(n, np.int64), np.zeros(n, np.int64)
    for c in range(3):
        face_of[faces[:, c]], corner[faces[:, c]] = np.arange(len(faces)), c
    bary = np.full((n, 3), 0.02, np.float32)
    bary[np.arange(n), corner] = 0.96
    query = SurfacePoints(torch.from_numpy(face_of), torch.from_numpy(bary)).to(state.device)
    with torch.no_grad():
        rgb = model.decode(state, lattice, query)[0][:, :3].float().cpu().numpy()
    return np.nan_to_num(rgb, nan=9.0, posinf=9.0, neginf=-9.0)


def vertex_classes(vertices: np.ndarray, faces: np.ndarray) -> dict[str, np.ndarray]:
    """Boolean masks (N,) of the vertices a lattice's irregularities live on."""
    edges = unique_edges(faces)
    n = len(vertices)
    src, dst = np.concatenate([edges[:, 0], edges[:, 1]]), np.concatenate([edges[:, 1], edges[:, 0]])
    valence = np.bincount(src, minlength=n)
    spacing = np.linalg.norm(vertices[dst] - vertices[src], axis=1).mean()
    centroid = np.stack([np.bincount(src, vertices[dst, k] - vertices[src, k], minlength=n) for k in range(3)], 1)
    offset = np.linalg.norm(centroid / np.maximum(valence, 1)[:, None], axis=1) / spacing
    directed = np.sort(np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]), axis=1)
    _, inverse, counts = np.unique(directed, axis=0, return_inverse=True, return_counts=True)
    boundary = np.zeros(n, bool)
    boundary[directed[counts[inverse.ravel()] == 1].ravel()] = True  # an edge with one face
    return {"boundary": boundary, "valence 5": valence == 5, "valence 7": valence == 7,
            "curved 1%": offset >= np.quantile(offset, 0.99)}


def blotch_rates(model, vertices: np.ndarray, faces: np.ndarray, gamut, steps: int, seeds: int,
                 threshold: float) -> dict:
    """Blotch rate overall and per vertex class, over `seeds` growths of `steps` steps."""
    from scipy.spatial import cKDTree

    tree = gamut if isinstance(gamut, cKDTree) else cKDTree(gamut)
    lattice = MeshLattice(vertices, faces).to(model.device)
    outside = []
    for seed in range(seeds):
        with torch.no_grad():
            state = model.rollout(model.seed(lattice), lattice, steps, make_generator(seed, model.device))
        distance, _ = tree.query(vertex_colours(model, lattice, state))
        outside.append(distance > threshold)
    outside = np.mean(outside, axis=0)
    classes = vertex_classes(np.asarray(vertices), np.asarray(faces))
    edges = unique_edges(np.asarray(faces))
    return {"cells": len(vertices), "valence6": float(np.mean(np.bincount(edges.ravel(), minlength=len(vertices)) == 6)),
            "blotches": float(outside.mean()),
            "by_class": {name: (float(outside[mask].mean()) if mask.any() else None, float(mask.mean()))
                         for name, mask in classes.items()}}


def exemplar_file(model, data: str) -> Path:
    """The model's exemplar under `data`, at any depth (an image folder, a folder of PBR material
    folders, or the folder above both): a file of the recorded name and, where the header records
    the training data's sha256, that content (for a PBR model with its maps of the recorded names
    beside it), so each model of a mixed list finds its own: one set's albedo.png among many."""
    name = Path(str(model.provenance.get("exemplar") or "")).name
    config = model.provenance.get("config") or {}
    digest = model.provenance.get("exemplar_sha256")

    def matches(path: Path) -> bool:
        if not path.is_file():
            return False
        if not digest:  # an older header: its name is all there is to match
            return True
        maps = {kind: path.parent / Path(str(file)).name for kind, file in (config.get("maps") or {}).items()}
        return all(file.is_file() for file in maps.values()) and exemplar_digest(path, maps) == digest

    material = Path(str(config.get("material") or "")).name  # a PBR set's folder: looked in first
    candidates = sorted(Path(data).rglob(name), key=lambda path: path.parent.name != material) if name else []
    found = next(filter(matches, candidates), None)
    if found is None:
        raise NCA3DError(f"the model's exemplar '{name or '(none recorded)'}' is not in {data}"
                         f"{' (with the content it was trained on)' if digest and candidates else ''}; "
                         f"give --data the folder that holds it")
    return found


def _exemplar_gamut(model, data: str) -> np.ndarray:
    found = exemplar_file(model, data)
    pixels = read_exemplar(found)[0].reshape(-1, 3)
    pick = np.random.default_rng(0).choice(len(pixels), min(GAMUT_SAMPLES, len(pixels)), replace=False)
    return pixels[pick]


def bench_transfer(models: list[str], meshes: list[str], data: str, steps: int = 1024, seeds: int = 2,
                   threshold: float = 0.12, device="cpu") -> dict:
    """Blotch rates of each mesh model on the reference lattices and on each mesh; `data` holds the
    exemplars at any depth (RGB images, or PBR material folders, whose albedo is the gamut)."""
    rows = []
    for name in models:
        model = load_named_model(name, str(device), domains=("mesh",), refusal="the transfer bench takes mesh models")
        gamut = _exemplar_gamut(model, data)
        frequency = model.config.icosphere_frequency
        cells = 10 * frequency ** 2 + 2
        sphere = icosphere(frequency)
        spacing = np.linalg.norm(sphere[0][sphere[1][:, 0]] - sphere[0][sphere[1][:, 1]], axis=1).mean()
        jittered = sphere[0] + np.random.default_rng(0).normal(scale=JITTER * spacing, size=sphere[0].shape)
        jittered /= np.linalg.norm(jittered, axis=1, keepdims=True)
        remeshed = uniform_lattice(*icosphere(2 * frequency), cells=cells)
        lattices = [(f"icosphere {frequency}", *sphere), (f"icosphere jittered {JITTER:g}", jittered, sphere[1]),
                    ("sphere remeshed", remeshed.vertices, remeshed.faces)]
        for mesh in meshes:
            loaded = load_demo_or_mesh(mesh)
            lattice = uniform_lattice(loaded.vertices, loaded.faces, cells=cells)
            lattices.append((Path(mesh).name, lattice.vertices, lattice.faces))
        for label, vertices, faces in lattices:
            rows.append({"model": name, "lattice": label,
                         **blotch_rates(model, vertices, faces, gamut, steps, seeds, threshold)})
    return {"steps": steps, "seeds": seeds, "threshold": threshold, "rows": rows}


def print_transfer(results: dict) -> None:
    classes = list(results["rows"][0]["by_class"]) if results["rows"] else []
    print(f"{'model':22s} {'lattice':26s} {'cells':>6s} {'val6':>5s} {'blotches':>8s} "
          + " ".join(f"{name:>14s}" for name in classes))
    for row in results["rows"]:
        cells = [("-" if rate is None else f"{rate:.3f}") + f" ({share:.2f})" for rate, share in row["by_class"].values()]
        print(f"{row['model']:22s} {row['lattice']:26s} {row['cells']:6d} {row['valence6']:5.2f} {row['blotches']:8.3f} "
              + " ".join(f"{cell:>14s}" for cell in cells))
    print(f"blotches: share of vertices whose colour after {results['steps']} steps is more than "
          f"{results['threshold']:g} (RGB) from every exemplar colour, mean of {results['seeds']} growths; per class: "
          f"the rate there (the class's share of vertices)")
