"""UV unwrapping for meshes that come without usable texture coordinates.

Charts (`project_charts`): faces labelled by the closest of six axis directions, the labels
smoothed over the face graph so that seams stay short, each edge-connected region projected onto
its axis plane, regions that would overlap themselves bisected. Packing (`pack_charts`): a
skyline of chart profiles. xatlas, used before, charts in quadratic time on big charts (45 s on
the 75k-face bunny under load, packing included); this takes under a second there with shorter
seams and as much texel use, at the cost of some stretch (anisotropy at most 1 / MIN_COSINE).
"""

from __future__ import annotations

import numpy as np

from ..errors import require
from ..io.mesh import SurfaceMesh, weld
from .remesh import face_normals, half_edges, shared_edges

AXES = np.concatenate([np.eye(3), -np.eye(3)])  # the projection directions (6, 3)
MIN_COSINE = 0.4  # a face goes only to a direction within 66 degrees of its normal
SMOOTHING = 1.0  # weight of agreeing with the neighbours (per unit of perimeter) over facing the direction
SMOOTHING_ROUNDS = 20
PACK_ANGLES = 16  # turns tried per chart for its smallest bounding box (0 to 90 degrees)
PACK_STEPS = 6  # bisection steps of the packing scale: within 1 % of the largest that fits
PACK_GRID = 1024  # columns of the packing skyline at most


def uv_areas(uv: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Signed UV-space areas (F,) of faces (F, 3) over per-vertex uv (V, 2)."""
    a, b, c = uv[faces[:, 0]], uv[faces[:, 1]], uv[faces[:, 2]]
    return 0.5 * ((b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0]))


def has_usable_uv(mesh: SurfaceMesh) -> bool:
    """True when mesh.uv is (V, 2), finite, and not every face has zero area in UV space."""
    uv = mesh.uv
    if uv is None or uv.shape != (len(mesh.vertices), 2) or not np.isfinite(uv).all():
        return False
    return bool(np.any(uv_areas(uv, mesh.faces) != 0))


def unwrap(mesh: SurfaceMesh, resolution: int = 1024, padding: int = 4) -> SurfaceMesh:
    """A copy of mesh with fresh UVs in [0, 1]; vertices are duplicated along the chart seams.

    Charts come from `project_charts` and are packed by `pack_charts` for a `resolution`^2 map
    with at least `padding` texels between them. Vertices are welded by position first (existing
    UVs are ignored); faces keep their order and 3D positions are kept exactly.
    """
    first, index = weld(mesh.vertices)
    vertices, faces = mesh.vertices[first], index[mesh.faces]
    chart, corner_uv = project_charts(vertices, faces)
    # one UV vertex per (chart, vertex)
    _, uv_first, uv_faces = np.unique(chart[:, None] * len(vertices) + faces, return_index=True,
                                      return_inverse=True)
    uv_faces = uv_faces.reshape(-1, 3)
    uv = pack_charts(corner_uv.reshape(-1, 2)[uv_first], np.repeat(chart, 3)[uv_first], uv_faces, resolution,
                     padding)
    return SurfaceMesh(vertices=vertices[faces.ravel()[uv_first]], faces=uv_faces, uv=uv,
                       name=mesh.name)


def pack_charts(uv: np.ndarray, chart: np.ndarray, faces: np.ndarray, resolution: int, padding: float
                ) -> np.ndarray:
    """Charts chart (U,) of uv (U, 2) in object units with faces (F, 3), packed into [0, 1]^2 for a
    `resolution`^2 map with at least `padding` texels between charts, all at one scale, the largest
    that fits (bisected in PACK_STEPS). Returns (U, 2).

    Each chart is turned to its smallest bounding box (PACK_ANGLES steps) and seen on a grid of at
    most PACK_GRID columns as a lower and an upper profile per column (sampled along its boundary
    edges); biggest first, it drops onto the skyline of the charts placed so far where, and in
    whichever of four quarter turns, its top comes to rest lowest, so that charts nest into the
    hollows of the charts below them.
    """
    count = chart.max() + 1
    turns = np.exp(-1j * np.linspace(0.0, np.pi / 2, PACK_ANGLES, endpoint=False))
    z = (uv[:, 0] + 1j * uv[:, 1])[:, None] * turns  # (U, A)
    low = np.stack([np.full((count, PACK_ANGLES), np.inf)] * 2)
    high = -low
    for axis, part in enumerate((z.real, z.imag)):
        np.minimum.at(low[axis], chart, part)
        np.maximum.at(high[axis], chart, part)
    extent = high - low  # (2, C, A)
    best = np.argmin(extent[0] * extent[1], axis=1)
    rows = np.arange(count)
    z = z[np.arange(len(z)), best[chart]] - (low[0] + 1j * low[1])[chart, best[chart]]  # in [0, w] x [0, h]
    width, height = extent[0][rows, best], extent[1][rows, best]
    area = np.bincount(chart[faces[:, 0]], np.abs(uv_areas(uv, faces)), count)
    tail, head, edge = half_edges(faces)
    rim = np.bincount(edge)[edge] == 1
    start, end, owner = z[tail[rim]], z[head[rim]], chart[tail[rim]]
    resolution, padding = float(resolution), float(padding)
    grid = min(int(resolution), PACK_GRID)
    cell = resolution / grid  # texels per grid cell
    # free cells kept around each chart: 2 margins, less a sampling error per chart, make the padding
    margin = int(np.ceil((padding + cell) / (2 * cell)))
    order = np.argsort(-area, kind="stable").tolist()
    window = np.lib.stride_tricks.sliding_window_view

    def profiles(scale: float, quarter: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Columns (C,) and where each chart's start (C,), and per column (concatenated over charts) lowest and highest cell of each
        chart at `scale` texels per unit, turned `quarter` quarter turns, with the margin."""
        steps = np.maximum(np.ceil(np.abs(end - start) * scale / (cell / 2)).astype(np.int64), 1)  # half a cell apart
        which = np.repeat(np.arange(len(start)), steps + 1)
        t = (np.arange(len(which)) - np.repeat(np.cumsum(steps + 1) - steps - 1, steps + 1)) / steps[which]
        point = (start[which] + t * (end[which] - start[which])) * scale / cell * 1j ** quarter
        w, h = width * scale / cell, height * scale / cell
        point += (0, h, w + 1j * h, 1j * w)[quarter][owner[which]] if quarter else 0
        columns = np.ceil(h if quarter % 2 else w).astype(np.int64) + 2 * margin
        offset = np.cumsum(columns) - columns
        key = offset[owner[which]] + np.clip(np.floor(point.real).astype(np.int64) + margin, 0,
                                             columns[owner[which]] - 1)
        bottom = np.full(columns.sum(), np.inf)
        top = np.full(columns.sum(), -np.inf)
        np.minimum.at(bottom, key, np.floor(point.imag) - margin)
        np.maximum.at(top, key, np.ceil(point.imag) + margin)
        # spread the margin sideways: each column takes the extremes of its neighbours within it
        pad = np.full(margin, np.inf)
        bottom = window(np.concatenate([pad, bottom, pad]), 2 * margin + 1).min(axis=1)
        top = window(np.concatenate([-pad, top, -pad]), 2 * margin + 1).max(axis=1)
        return columns.tolist(), offset.tolist(), bottom, top

    def layout(scale: float) -> tuple[np.ndarray, np.ndarray] | None:
        """Lower-left corners (C,) complex in texels and quarter turns (C,), or None if it does not fit."""
        turned = [profiles(scale, quarter) for quarter in range(4)]
        sky = np.zeros(grid)
        corner = np.zeros(count, dtype=complex)
        quarters = np.zeros(count, dtype=np.int64)
        for k in order:
            choice = None
            for quarter, (columns, offset, bottom, top) in enumerate(turned):
                first, w = offset[k], columns[k]
                if w > grid:
                    continue
                rest = np.max(window(sky, w) - bottom[first:first + w], axis=1)
                x = int(np.argmin(rest))
                y = max(float(rest[x]), 0.0)
                summit = y + top[first:first + w].max()
                if choice is None or summit < choice[0]:
                    choice = (summit, x, y, quarter, top[first:first + w])
            if choice is None or choice[0] > grid:
                return None
            _, x, y, quarter, top = choice
            sky[x:x + len(top)] = np.maximum(sky[x:x + len(top)], y + top)
            corner[k], quarters[k] = complex(x, y) * cell, quarter
        return corner, quarters

    high_scale = resolution / max(width.max(), height.max(), np.sqrt(area.sum()), 1e-300)
    low_scale = high_scale * 0.6  # most layouts use 40 - 70 % of the map
    while layout(low_scale) is None:
        high_scale, low_scale = low_scale, low_scale / 2
    for _ in range(PACK_STEPS):
        middle = np.sqrt(low_scale * high_scale)
        low_scale, high_scale = (middle, high_scale) if layout(middle) is not None else (low_scale, middle)
    corner, quarter = layout(low_scale)
    w, h = width * low_scale, height * low_scale
    shift = np.stack([np.zeros(count), h, w + 1j * h, 1j * w])[quarter, rows]
    packed = (z * low_scale * 1j ** quarter[chart] + shift[chart] + corner[chart] + margin * cell) / resolution
    return np.clip(np.stack([packed.real, packed.imag], axis=1), 0.0, 1.0)


def project_charts(vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Charts of a welded mesh vertices (V, 3) / faces (F, 3): chart id (F,) and each corner's
    position on its chart's axis plane (F, 3, 2), counter-clockwise for counter-clockwise faces.

    Each face takes one of the six AXES within MIN_COSINE of its normal; SMOOTHING_ROUNDS of
    voting (facing the axis + SMOOTHING x the share of the face's perimeter shared with neighbours
    of that axis; a random half of the faces per round, seeded) shorten the seams. Charts are the regions of one axis joined across edges of two
    consistently wound faces; a chart that overlaps itself in projection is cut in two (by rank
    along its longer side) until none does (a zero-area face ends up alone, with zero UV area).
    """
    sparse = require("scipy.sparse", None, "Unwrapping a mesh into UV charts")
    normals = face_normals(vertices, faces)
    normals /= np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-300)
    cosine = normals @ AXES.T
    cosine[cosine < MIN_COSINE] = -np.inf
    tail, head, one, two = shared_edges(faces)
    joined = tail[one] == head[two]  # consistently wound
    one, two = one[joined], two[joined]
    length = np.linalg.norm(vertices[head[one]] - vertices[tail[one]], axis=1)
    one, two = one // 3, two // 3
    count = len(faces)
    neighbours = sparse.coo_matrix((np.concatenate([length, length]), (np.concatenate([one, two]),
                                   np.concatenate([two, one]))), shape=(count, count)).tocsr()
    corners = vertices[faces]
    perimeter = np.linalg.norm(corners[:, [1, 2, 0]] - corners, axis=2).sum(axis=1)
    label = np.argmax(cosine, axis=1)
    rng = np.random.default_rng(0)
    for _ in range(SMOOTHING_ROUNDS):  # a random half of the faces votes each round: all at once they oscillate
        votes = neighbours @ np.eye(len(AXES))[label]
        voting = rng.random(count) < 0.5
        label[voting] = np.argmax(cosine + SMOOTHING * votes / perimeter[:, None], axis=1)[voting]
    u = AXES[[1, 2, 0, 2, 0, 1]][label]  # (u, v, axis) right-handed: projection keeps the winding
    v = np.cross(AXES[label], u)
    corner_uv = np.stack([np.einsum("fkd,fd->fk", corners, u), np.einsum("fkd,fd->fk", corners, v)], axis=2)
    chart = label
    while True:
        chart = regions(chart, one, two, count)
        bad = overlapping_charts(corner_uv, faces, chart) & (np.bincount(chart) > 1)  # a lone face: degenerate
        if not bad.any():
            return chart, corner_uv
        chart = 2 * chart + bisect(corner_uv, chart, bad)


def regions(group: np.ndarray, one: np.ndarray, two: np.ndarray, count: int) -> np.ndarray:
    """Edge-connected regions (F,) of faces in one group (F,), joined by face pairs one/two (J,)."""
    sparse = require("scipy.sparse", None, "Unwrapping a mesh into UV charts")
    csgraph = require("scipy.sparse.csgraph", None, "Unwrapping a mesh into UV charts")
    same = group[one] == group[two]
    graph = sparse.coo_matrix((np.ones(same.sum()), (one[same], two[same])), shape=(count, count))
    return csgraph.connected_components(graph, directed=False)[1]


def bisect(corner_uv: np.ndarray, chart: np.ndarray, bad: np.ndarray) -> np.ndarray:
    """0/1 (F,) halves of each bad chart: the faces below / above the median face by rank along
    the chart's longer UV side; 0 for faces of good charts."""
    centre = corner_uv.mean(axis=1)
    low = np.full((chart.max() + 1, 2), np.inf)
    high = np.full((chart.max() + 1, 2), -np.inf)
    np.minimum.at(low, chart, centre)
    np.maximum.at(high, chart, centre)
    axis = np.argmax(high - low, axis=1)[chart]
    key = centre[np.arange(len(chart)), axis]
    order = np.lexsort((key, chart))
    rank = np.empty(len(chart), dtype=np.int64)
    rank[order] = np.arange(len(chart))
    start = np.searchsorted(chart[order], np.arange(chart.max() + 1))
    size = np.bincount(chart, minlength=chart.max() + 1)
    upper = rank - start[chart] >= size[chart] // 2
    return (upper & bad[chart]).astype(np.int64)


def overlapping_charts(corner_uv: np.ndarray, faces: np.ndarray, chart: np.ndarray) -> np.ndarray:
    """Which charts (C,) overlap themselves: a vertex whose corners in the chart overlap in angle,
    or two boundary edges of the chart that cross or touch (faces must have positive UV area)."""
    bad = np.zeros(chart.max() + 1, dtype=bool)
    # corners: counter-clockwise angle intervals around their vertex, disjoint per (chart, vertex)
    origin = corner_uv
    to_next = corner_uv[:, [1, 2, 0]] - origin
    to_prev = corner_uv[:, [2, 0, 1]] - origin
    start = np.arctan2(to_next[..., 1], to_next[..., 0]).ravel() % (2 * np.pi)
    sweep = np.arctan2(to_next[..., 0] * to_prev[..., 1] - to_next[..., 1] * to_prev[..., 0],
                       np.einsum("fkd,fkd->fk", to_next, to_prev)).ravel()
    key = np.repeat(chart, 3) * (faces.max() + 1) + faces.ravel()
    order = np.lexsort((start, key))
    key, start, end = key[order], start[order], start[order] + sweep[order]
    group_start = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
    group_end = np.r_[group_start[1:], len(key)] - 1
    following = np.arange(len(key)) + 1
    following[group_end] = group_start
    wrap = np.zeros(len(key))
    wrap[group_end] = 2 * np.pi
    clash = end > start[following] + wrap + 1e-9
    clash[group_end] &= group_end != group_start  # a lone corner cannot clash
    clash |= sweep[order] <= 0
    bad[key[clash] // (faces.max() + 1)] = True
    # boundary edges of each chart crossing each other
    tail, head, edge = half_edges(faces)
    face = np.arange(len(tail)) // 3
    tail_uv = corner_uv.reshape(-1, 2)
    head_uv = corner_uv[:, [1, 2, 0]].reshape(-1, 2)
    _, per_key, twin_count = np.unique(edge * (chart.max() + 1) + chart[face], return_inverse=True,
                                       return_counts=True)
    boundary = np.flatnonzero(twin_count[per_key] == 1)
    a, b = segment_pairs(tail_uv[boundary], head_uv[boundary], chart[face[boundary]])
    a, b = boundary[a], boundary[b]
    apart = (tail[a] != tail[b]) & (tail[a] != head[b]) & (head[a] != tail[b]) & (head[a] != head[b])
    a, b = a[apart], b[apart]
    cross = segments_meet(tail_uv[a], head_uv[a], tail_uv[b], head_uv[b])
    bad[chart[face[a[cross]]]] = True
    return bad


def segment_pairs(start: np.ndarray, end: np.ndarray, group: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs (i < j) of segments start/end (S, 2) in one group (S,) whose boxes share a grid cell
    (cells of about twice the group's mean segment length, never under 1/16 of its longest)."""
    length = np.linalg.norm(end - start, axis=1)
    groups = group.max(initial=-1) + 1
    count = np.maximum(np.bincount(group, minlength=groups), 1)
    cell = np.maximum(2 * np.bincount(group, length, groups) / count, 1e-300)
    longest = np.zeros(groups)
    np.maximum.at(longest, group, length)
    cell = np.maximum(cell, longest / 16)[group]
    low = np.floor(np.minimum(start, end) / cell[:, None]).astype(np.int64)
    high = np.floor(np.maximum(start, end) / cell[:, None]).astype(np.int64)
    span = high - low + 1
    cells = span[:, 0] * span[:, 1]
    segment = np.repeat(np.arange(len(start)), cells)
    local = np.arange(len(segment)) - np.repeat(np.cumsum(cells) - cells, cells)
    ix = low[segment, 0] + local // span[segment, 1]
    iy = low[segment, 1] + local % span[segment, 1]
    _, cell_id = np.unique(np.stack([group[segment], ix, iy], axis=1), axis=0, return_inverse=True)
    order = np.argsort(cell_id.ravel(), kind="stable")
    cell_id, segment = cell_id.ravel()[order], segment[order]
    # every later member of the same cell
    run_end = np.searchsorted(cell_id, cell_id, side="right")
    later = run_end - np.arange(len(cell_id)) - 1
    first = np.repeat(np.arange(len(cell_id)), later)
    second = first + 1 + np.arange(len(first)) - np.repeat(np.cumsum(later) - later, later)
    pairs = np.unique(np.sort(np.stack([segment[first], segment[second]], axis=1), axis=1), axis=0)
    return pairs[:, 0], pairs[:, 1]


def segments_meet(a: np.ndarray, b: np.ndarray, c: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Whether segments a-b and c-d (S, 2 each) cross or touch (S,)."""
    def orient(p, q, r):
        return np.sign((q[:, 0] - p[:, 0]) * (r[:, 1] - p[:, 1]) - (q[:, 1] - p[:, 1]) * (r[:, 0] - p[:, 0]))

    o1, o2, o3, o4 = orient(a, b, c), orient(a, b, d), orient(c, d, a), orient(c, d, b)
    collinear = (o1 == 0) & (o2 == 0)
    boxes = np.all((np.minimum(a, b) <= np.maximum(c, d)) & (np.minimum(c, d) <= np.maximum(a, b)), axis=1)
    return np.where(collinear, boxes, (o1 * o2 <= 0) & (o3 * o4 <= 0))


def seam_stats(mesh: SurfaceMesh) -> dict:
    """Seams and texel use of an unwrapped mesh: seam_length (3D length of the cut edges) over
    sqrt(surface area) and over the total edge length; texel_use (the UV area, the share of the
    map's texels the charts cover); stretch_l2 (area-weighted RMS of the UV -> 3D singular values
    over the mean scale, 1 = no stretch) and anisotropy_mean / anisotropy_max (ratio of the
    singular values per face; mean area-weighted)."""
    first, position = weld(mesh.vertices)
    welded = position[mesh.faces]

    def open_and_total(vertices: np.ndarray, faces: np.ndarray) -> tuple[float, float]:
        tail, head, edge = half_edges(faces)
        length = np.linalg.norm(vertices[head] - vertices[tail], axis=1)
        once = np.bincount(edge)[edge] == 1
        return float(length[once].sum()), float(length[np.unique(edge, return_index=True)[1]].sum())

    uv_open, _ = open_and_total(mesh.vertices, mesh.faces)
    open_3d, total = open_and_total(mesh.vertices[first], welded)
    seam = (uv_open - open_3d) / 2
    corners = mesh.vertices[mesh.faces]
    e1, e2 = corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0]
    area = 0.5 * np.linalg.norm(np.cross(e1, e2), axis=1)
    uv = mesh.uv[mesh.faces]
    d1, d2 = uv[:, 1] - uv[:, 0], uv[:, 2] - uv[:, 0]
    det = d1[:, 0] * d2[:, 1] - d1[:, 1] * d2[:, 0]
    ds = (e1 * d2[:, 1:] - e2 * d1[:, 1:]) / det[:, None]  # dP/du, dP/dv (F, 3)
    dt = (e2 * d1[:, :1] - e1 * d2[:, :1]) / det[:, None]
    a, b, c = np.einsum("fd,fd->f", ds, ds), np.einsum("fd,fd->f", ds, dt), np.einsum("fd,fd->f", dt, dt)
    root = np.sqrt((a - c) ** 2 + 4 * b * b)
    high, low = np.sqrt((a + c + root) / 2), np.sqrt(np.maximum(a + c - root, 0) / 2)
    uv_area = float(np.abs(det).sum() / 2)
    weight = area / area.sum()
    anisotropy = high / np.maximum(low, 1e-300)
    return {
        "seam_length": seam / np.sqrt(area.sum()),
        "seam_share": seam / total,
        "texel_use": uv_area,
        "stretch_l2": float(np.sqrt(np.sum(weight * (high**2 + low**2) / 2) * uv_area / area.sum())),
        "anisotropy_mean": float(np.sum(weight * anisotropy)),
        "anisotropy_max": float(anisotropy.max()),
    }
