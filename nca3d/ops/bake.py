"""Texel baking: which surface point every texel of a UV map shows, tangent frames, seam dilation.

Texel (row i, column j) of an S x S map has its centre at uv = ((j + 0.5) / S, 1 - (i + 0.5) / S)
(OpenGL convention: v = 0 is the bottom row). A texel belongs to the UV triangle that contains
its centre; texels whose centre lies at most `border` px outside every triangle take the
nearest point of the nearest triangle, so bilinear filtering at island edges reads real
surface values. `dilate` then copies the nearest covered texel outwards by a margin, for
mipmaps.

Work is chunked over a flat, virtual list of (triangle, texel-in-its-row-span) candidates, then
over bands of texel rows, so memory stays bounded (one (S*S,) key buffer besides the chunks)
whatever the map size and however large one triangle is in UV space. It is numpy, single-threaded
per band (on 2 busy cores torch's elementwise kernels ran up to 10x slower than numpy's), with the
scoring loop compiled by numba where it imports (nca3d.jit).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from ..jit import compiled

EMPTY = 255  # texel distance code of a texel no triangle covers


@dataclass
class Texels:
    """A chunk of texels: flat index (T,) int64 into the S*S map, face (T,) int64, bary (T, 3) float32."""

    index: np.ndarray
    face: np.ndarray
    bary: np.ndarray


def _cross2(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return a[..., 0] * b[..., 1] - a[..., 1] * b[..., 0]


class UVRasteriser:
    """Streams the texels of an S x S map covered by the UV triangles of (uv (V, 2), faces (F, 3)).

    The map is cut into bands of rows, each rasterised on its own (`band`), so bands can go to
    different threads. Per band, pass 1 scores every candidate (triangle, texel-in-its-row-span)
    of the band's rows by its coverage code (0: centre inside the triangle, up to 254: `border`
    px outside) and keeps per texel the best one, the lowest code and among equal codes the last
    triangle (a painter's order), in the (S*S,) key buffer's rows of the band. Pass 2 gives the
    band's covered texels in raster order with barycentrics from the winning triangle: each
    texel once, and downstream scatters write memory in order.

    chunk: the texels of a band (whole rows: up to one row more), and candidates per pass-1 step.
    At 2^18 a chunk's largest downstream array (MeshBaker.locate's corners, 108 bytes a texel)
    stays under glibc's 32 MB mmap threshold, so its memory is reused rather than page-faulted
    afresh: 3x faster than chunks of 2^21.
    """

    CHUNK = 1 << 18

    def __init__(self, uv: np.ndarray, faces: np.ndarray, size: int, border: float = 1.0,
                 chunk: int = CHUNK):
        self.size, self.border, self.chunk = int(size), float(border), int(chunk)
        corners = np.asarray(uv, np.float64)[np.asarray(faces)]  # (F, 3, 2)
        px = np.empty_like(corners)
        px[..., 0] = corners[..., 0] * size
        px[..., 1] = (1.0 - corners[..., 1]) * size  # image rows grow downwards
        area2 = _cross2(px[:, 1] - px[:, 0], px[:, 2] - px[:, 0])
        keep = np.abs(area2) > 1e-12 * size * size  # zero-area UV triangles show no texel
        self.faces = np.flatnonzero(keep)
        px, area2 = px[keep], area2[keep]
        ab, ac = px[:, 1] - px[:, 0], px[:, 2] - px[:, 0]
        edges = np.linalg.norm(np.roll(px, -1, axis=1) - np.roll(px, 1, axis=1), axis=-1)  # opposite vertex k
        heights = np.abs(area2)[:, None] / np.maximum(edges, 1e-12)  # (F, 3) vertex k over edge k
        # Per triangle, barycentrics b, c are linear in q = centre - a: b = q . kb, c = q . kc.
        kb = np.stack([ac[:, 1], -ac[:, 0]], 1) / area2[:, None]
        kc = np.stack([-ab[:, 1], ab[:, 0]], 1) / area2[:, None]
        self._table = np.ascontiguousarray(np.concatenate([px[:, 0], kb, kc], 1).T, np.float32)  # (6, F)
        self._shift = 24 if len(self.faces) < 1 << 24 else 40  # key = (255 - code) << shift | triangle
        self._keys = np.zeros(size * size, np.uint32 if self._shift == 24 else np.uint64)
        self._row_spans(px, kb, kc, heights)

    def _row_spans(self, px, kb, kc, heights) -> None:
        """Per triangle and texel row, the columns whose centres may lie within `border` px of it,
        and along them each edge's signed distance in px (> 0: outside), linear in the column.

        Along a row each barycentric is linear in x, so each edge bounds x on one side: the
        span is exact up to one texel either side (the per-texel test decides), and the
        candidates are about the covered texels rather than whole bounding boxes. Where numba
        imports, two compiled loops (`_count_spans`, `_fill_spans`: the same float64 arithmetic,
        spans counting-sorted by row); these numpy passes are their reference."""
        size = self.size
        top = np.clip(np.floor(px[..., 1].min(1) - self.border - 0.5).astype(np.int64) + 1, 0, size - 1)
        bottom = np.clip(np.ceil(px[..., 1].max(1) + self.border - 0.5).astype(np.int64) - 1, 0, size - 1)
        count, fill = compiled(_count_spans, helpers=(_span,)), compiled(_fill_spans, helpers=(_span,))
        if count is not None:
            per_row = np.zeros(size, np.int64)
            count(px, kb, kc, heights, top, bottom, self.border, size, per_row)
            self._row_spans_from = np.concatenate([[0], np.cumsum(per_row)])
            spans = int(self._row_spans_from[-1])
            self._span_tri, self._span_start = np.empty(spans, self._keys.dtype), np.empty(spans, np.int64)
            self._span_outside, self._span_step = np.empty((3, spans), np.float32), np.empty((3, spans), np.float32)
            width = np.empty(spans, np.int64)
            fill(px, kb, kc, heights, top, bottom, self.border, size, self._row_spans_from[:-1].copy(),
                 self._span_tri, self._span_start, self._span_outside, self._span_step, width)
            self._offsets = np.concatenate([[0], np.cumsum(width)])
            return
        rows = np.maximum(bottom - top + 1, 0)
        tri = np.repeat(np.arange(len(px)), rows)
        y = top[tri] + np.arange(len(tri)) - np.repeat(np.cumsum(rows) - rows, rows)
        qy = y + 0.5 - px[tri, 0, 1]
        slope = np.stack([-(kb[tri, 0] + kc[tri, 0]), kb[tri, 0], kc[tri, 0]], 1)  # d bary / d x
        at_a = np.stack([1.0 - qy * (kb[tri, 1] + kc[tri, 1]), qy * kb[tri, 1], qy * kc[tri, 1]], 1)  # at x = ax
        limit = -self.border / heights[tri]  # bary_k >= limit_k  <=>  within `border` px of edge k
        with np.errstate(divide="ignore", invalid="ignore"):
            bound = (limit - at_a) / slope
        lower = np.where(slope > 0, bound, -np.inf).max(1)
        upper = np.where(slope < 0, bound, np.inf).min(1)
        flat_out = ((slope == 0) & (at_a < limit)).any(1)
        ax = px[tri, 0, 0]
        first = np.clip(np.ceil(np.clip(ax + lower, -1, size + 1) - 0.5).astype(np.int64) - 1, 0, size - 1)
        last = np.clip(np.floor(np.clip(ax + upper, -1, size + 1) - 0.5).astype(np.int64) + 1, 0, size - 1)
        width = np.where(flat_out, 0, np.maximum(last - first + 1, 0))
        keep = np.flatnonzero(width > 0)
        keep = keep[np.argsort(y[keep], kind="stable")]  # spans in row order: a band's are contiguous
        tri, first = tri[keep], first[keep]
        # signed px beyond edge k at the span's first centre, and its step per column
        outside = -(at_a[keep] + (first + 0.5 - ax[keep])[:, None] * slope[keep]) * heights[tri]
        self._span_tri, self._span_start = tri.astype(self._keys.dtype), y[keep] * size + first
        self._span_outside = np.ascontiguousarray(outside.T, np.float32)  # (3, R)
        self._span_step = np.ascontiguousarray((-slope[keep] * heights[tri]).T, np.float32)  # (3, R)
        self._offsets = np.concatenate([[0], np.cumsum(width[keep])])
        self._row_spans_from = np.searchsorted(y[keep], np.arange(size + 1))  # (S + 1,): row r's spans start

    @property
    def candidates(self) -> int:
        return int(self._offsets[-1])

    def bands(self) -> list[tuple[int, int]]:
        """The bands' row ranges [top, bottom), top to bottom: chunk // S rows each (at least one)."""
        rows = max(1, self.chunk // self.size)
        return [(top, min(self.size, top + rows)) for top in range(0, self.size, rows)]

    def band(self, top: int, bottom: int) -> Texels:
        """Rasterise rows [top, bottom): both passes; the covered texels in raster order (maybe none).
        Bands write only their own rows of the key buffer, so different bands may run at once."""
        self.score(top, bottom)
        return self.texels(top, bottom)

    def score(self, top: int, bottom: int) -> None:
        """Pass 1 on rows [top, bottom): their keys, and so their coverage, without the texels.
        One compiled loop over the band's spans (nca3d.jit: about 15x the numpy passes of `_score`,
        which stay as its reference and where numba is missing)."""
        spans = self._row_spans_from[[top, bottom]]
        kernel = compiled(_score_spans)
        if kernel is not None:
            kernel(self._keys, self._span_start, self._span_tri, self._span_outside, self._span_step,
                   self._offsets, spans[0], spans[1], np.float32(self.border),
                   np.float32(254.0 / max(self.border, 1e-9)), self._shift)
        else:
            first, last = self._offsets[spans]
            for start in range(first, last, self.chunk):
                self._score(start, min(last, start + self.chunk))

    def __iter__(self) -> Iterator[Texels]:
        """The non-empty bands' texels in raster order (all of the map's covered texels)."""
        for top, bottom in self.bands():
            texels = self.band(top, bottom)
            if len(texels.index):
                yield texels

    def _score(self, start: int, stop: int) -> None:
        """Pass 1 on candidates [start, stop): the best key per texel into `self._keys`."""
        first, last = np.searchsorted(self._offsets, [start, stop - 1], side="right") - 1
        span = slice(first, last + 1)
        counts = np.diff(np.clip(self._offsets[first:last + 2], start, stop))
        column = np.arange(start, stop) - np.repeat(self._offsets[span], counts)  # from the span's first
        step = column.astype(np.float32)
        outside = np.zeros(stop - start, np.float32)
        for k in range(3):
            edge = np.repeat(self._span_outside[k, span], counts)
            edge += step * np.repeat(self._span_step[k, span], counts)
            np.maximum(outside, edge, out=outside)
        near = np.flatnonzero(outside <= self.border)
        code = np.minimum(np.ceil(outside[near] * (254.0 / max(self.border, 1e-9))), 254).astype(self._keys.dtype)
        key = (255 - code) << self._shift | np.repeat(self._span_tri[span], counts)[near]
        np.maximum.at(self._keys, (np.repeat(self._span_start[span], counts) + column)[near], key)

    def texels(self, top: int, bottom: int) -> Texels:
        """Pass 2 on texel rows [top, bottom), once `score` has run on them: the covered texels, their
        triangle and barycentrics (one compiled loop, `_band_texels`, where numba imports)."""
        keys = self._keys[top * self.size:bottom * self.size]
        kernel = compiled(_band_texels)
        if kernel is not None:
            count = int(np.count_nonzero(keys))
            texels = Texels(index=np.empty(count, np.int64), face=np.empty(count, np.int64),
                            bary=np.empty((count, 3), np.float32))
            kernel(keys, top, self.size, self._shift, self._table, self.faces, texels.index, texels.face, texels.bary)
            return texels
        local = np.flatnonzero(keys)
        tri = (keys[local] & ((1 << self._shift) - 1)).astype(np.int64)
        index = local + top * self.size
        row, col = np.divmod(index, self.size)
        ax, ay, kb0, kb1, kc0, kc1 = (t[tri] for t in self._table)
        qx = col.astype(np.float32) + np.float32(0.5) - ax
        qy = row.astype(np.float32) + np.float32(0.5) - ay
        b = qx * kb0 + qy * kb1
        c = qx * kc0 + qy * kc1
        bary = np.stack([1.0 - b - c, b, c], 1)
        np.maximum(bary, 0.0, out=bary)
        bary /= (bary[:, 0] + bary[:, 1] + bary[:, 2])[:, None]  # same sums as .sum(1), 2x faster
        return Texels(index=index, face=self.faces[tri], bary=bary)

    @property
    def distance(self) -> np.ndarray:
        """(S*S,) uint8 coverage codes of the winning triangles (EMPTY: uncovered)."""
        return (255 - (self._keys >> self._shift)).astype(np.uint8)

    @property
    def covered(self) -> np.ndarray:
        """(S, S) bool: texels some triangle covers."""
        return (self._keys != 0).reshape(self.size, self.size)


def _span(px, kb, kc, heights, tri, y, border, size, at_a, slope):
    """One triangle's span on texel row y, as UVRasteriser._row_spans computes it (float64): fills
    at_a and slope (3,) and returns (first column, width; 0 if none)."""
    qy = y + 0.5 - px[tri, 0, 1]
    slope[0], slope[1], slope[2] = -(kb[tri, 0] + kc[tri, 0]), kb[tri, 0], kc[tri, 0]
    at_a[0], at_a[1], at_a[2] = 1.0 - qy * (kb[tri, 1] + kc[tri, 1]), qy * kb[tri, 1], qy * kc[tri, 1]
    lower, upper, flat_out = -np.inf, np.inf, False
    for k in range(3):
        limit = -border / heights[tri, k]
        if slope[k] > 0:
            lower = max(lower, (limit - at_a[k]) / slope[k])
        elif slope[k] < 0:
            upper = min(upper, (limit - at_a[k]) / slope[k])
        elif at_a[k] < limit:
            flat_out = True
    ax = px[tri, 0, 0]
    first = min(max(np.int64(np.ceil(min(max(ax + lower, -1.0), size + 1.0) - 0.5)) - 1, 0), size - 1)
    last = min(max(np.int64(np.floor(min(max(ax + upper, -1.0), size + 1.0) - 0.5)) + 1, 0), size - 1)
    return first, (0 if flat_out else max(last - first + 1, 0))


def _count_spans(px, kb, kc, heights, top, bottom, border, size, per_row):
    """The spans of each texel row into per_row (S,) (compiled by nca3d.jit)."""
    at_a, slope = np.empty(3), np.empty(3)
    for tri in range(px.shape[0]):
        for y in range(top[tri], bottom[tri] + 1):
            if _span(px, kb, kc, heights, tri, y, border, size, at_a, slope)[1] > 0:
                per_row[y] += 1


def _fill_spans(px, kb, kc, heights, top, bottom, border, size, next_in_row, span_tri, span_start,
                outside, step, width):
    """The spans in row order (triangles in order within a row), each at next_in_row[y] (S,), its
    row's next free place (compiled by nca3d.jit): triangle, first texel, per edge the signed px
    beyond it at the first centre and its step per column (float32), width."""
    at_a, slope = np.empty(3), np.empty(3)
    for tri in range(px.shape[0]):
        for y in range(top[tri], bottom[tri] + 1):
            first, columns = _span(px, kb, kc, heights, tri, y, border, size, at_a, slope)
            if columns == 0:
                continue
            at = next_in_row[y]
            next_in_row[y] += 1
            span_tri[at], span_start[at], width[at] = tri, y * size + first, columns
            for k in range(3):
                outside[k, at] = -(at_a[k] + (first + 0.5 - px[tri, 0, 0]) * slope[k]) * heights[tri, k]
                step[k, at] = -slope[k] * heights[tri, k]


def _score_spans(keys, span_start, span_tri, outside, step, offsets, first, last, border, scale, shift):
    """UVRasteriser._score over spans [first, last) as one loop (compiled by nca3d.jit): per span
    column the signed px beyond the farthest-violated edge, and where within `border` its key
    (255 - code) << shift | triangle, code = ceil(px * scale) (at most 254), kept if larger. The
    same float32 arithmetic as `_score`."""
    zero = np.float32(0.0)
    for span in range(first, last):
        o0, o1, o2 = outside[0, span], outside[1, span], outside[2, span]
        d0, d1, d2 = step[0, span], step[1, span], step[2, span]
        base, triangle = span_start[span], np.uint64(span_tri[span])
        for column in range(offsets[span + 1] - offsets[span]):
            c = np.float32(column)
            beyond = max(max(max(zero, o0 + c * d0), o1 + c * d1), o2 + c * d2)
            if beyond <= border:
                code = min(np.ceil(beyond * scale), np.float32(254.0))
                key = (np.uint64(255 - code) << np.uint64(shift)) | triangle
                if key > np.uint64(keys[base + column]):
                    keys[base + column] = key


def _band_texels(keys, top, size, shift, table, faces, index, face, bary):
    """UVRasteriser.texels' numpy passes as one loop (compiled by nca3d.jit) over a band's keys,
    into index, face (T,) and bary (T, 3) sized to its covered texels: the same float32 arithmetic."""
    mask = (1 << shift) - 1
    half, one, zero = np.float32(0.5), np.float32(1.0), np.float32(0.0)
    out = 0
    for local in range(keys.shape[0]):
        key = keys[local]
        if key == 0:
            continue
        tri = np.int64(key & mask)
        texel = local + top * size
        row, col = texel // size, texel % size
        qx = np.float32(col) + half - table[0, tri]
        qy = np.float32(row) + half - table[1, tri]
        b = qx * table[2, tri] + qy * table[3, tri]
        c = qx * table[4, tri] + qy * table[5, tri]
        a = max(one - b - c, zero)
        b, c = max(b, zero), max(c, zero)
        total = a + b + c
        index[out], face[out] = texel, faces[tri]
        bary[out, 0], bary[out, 1], bary[out, 2] = a / total, b / total, c / total
        out += 1


def _band_moves(covered, top, bottom, lo, hi, margin, targets, sources, distance, nearest):
    """dilation_moves of rows [top, bottom) from the coverage of rows [lo, hi) (compiled by
    nca3d.jit): the taxicab distance and nearest covered texel of each texel by two raster passes
    (Rosenfeld and Pfaltz: up and left, then down and right, which is exact for this metric), then
    the moves of the uncovered texels of [top, bottom) whose texel lies within `margin` px (the
    Euclidean distance), in raster order into targets and sources; returns how many. distance and
    nearest: int32 scratch of at least (hi - lo, S)."""
    size = covered.shape[1]
    rows = hi - lo
    far = np.int32(1 << 30)
    for r in range(rows):
        for c in range(size):
            if covered[lo + r, c]:
                distance[r, c], nearest[r, c] = 0, (lo + r) * size + c
                continue
            best, source = far, np.int32(-1)
            if r > 0 and distance[r - 1, c] + 1 < best:
                best, source = distance[r - 1, c] + 1, nearest[r - 1, c]
            if c > 0 and distance[r, c - 1] + 1 < best:
                best, source = distance[r, c - 1] + 1, nearest[r, c - 1]
            distance[r, c], nearest[r, c] = best, source
    for r in range(rows - 1, -1, -1):
        for c in range(size - 1, -1, -1):
            best = distance[r, c]
            if r + 1 < rows and distance[r + 1, c] + 1 < best:
                best, nearest[r, c] = distance[r + 1, c] + 1, nearest[r + 1, c]
            if c + 1 < size and distance[r, c + 1] + 1 < best:
                best, nearest[r, c] = distance[r, c + 1] + 1, nearest[r, c + 1]
            distance[r, c] = best
    count = 0
    for r in range(top - lo, bottom - lo):
        for c in range(size):
            source = nearest[r, c]
            if distance[r, c] == 0 or source < 0:
                continue
            down, across = source // size - (lo + r), source % size - c
            if down * down + across * across <= margin * margin:
                targets[count], sources[count] = (lo + r) * size + c, source
                count += 1
    return count


def sample_bilinear(texture: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """Bilinear samples (N, ...) of a map (H, W) or (H, W, C) at uv (N, 2): OpenGL v up (v = 1 is
    row 0), texel centres at (i + 0.5) / size, wrapping around (as glTF and Blender samplers repeat)."""
    height, width = texture.shape[:2]
    x = uv[:, 0] * width - 0.5
    y = (1.0 - uv[:, 1]) * height - 0.5
    x0, y0 = np.floor(x), np.floor(y)
    weight = texture.dtype if texture.dtype.kind == "f" else np.float32
    shape = (-1,) + (1,) * (texture.ndim - 2)  # one weight per sample, over any channels
    fx, fy = (x - x0).astype(weight).reshape(shape), (y - y0).astype(weight).reshape(shape)
    x0, y0 = x0.astype(np.int64) % width, y0.astype(np.int64) % height
    x1, y1 = (x0 + 1) % width, (y0 + 1) % height
    top = texture[y0, x0] * (1 - fx) + texture[y0, x1] * fx
    bottom = texture[y1, x0] * (1 - fx) + texture[y1, x1] * fx
    return top * (1 - fy) + bottom * fy


def vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Area-weighted unit vertex normals (V, 3) float64 of a mesh (vertices (V, 3), faces (F, 3)).

    Vertices at the same position, to 1e-9 of the mesh size (copies along UV seams), share one
    normal, so seams shade smoothly; a vertex on no face of non-zero area gets +Z.
    """
    vertices = np.asarray(vertices, dtype=np.float64)
    faces = np.asarray(faces, dtype=np.int64)
    corners = vertices[faces]
    face_normals = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])  # |n| = 2 area
    quantum = max(float(np.ptp(vertices, axis=0).max()), 1e-300) * 1e-9
    _, welded = np.unique(np.round(vertices / quantum), axis=0, return_inverse=True)
    welded = welded.reshape(-1)
    sums = np.zeros((welded.max() + 1, 3))
    np.add.at(sums, welded[faces].reshape(-1), np.repeat(face_normals, 3, axis=0))
    normals = sums[welded]
    length = np.linalg.norm(normals, axis=1, keepdims=True)
    return np.where(length > 1e-30, normals / np.maximum(length, 1e-30), (0.0, 0.0, 1.0))


@dataclass
class TangentFrames:
    """Per-vertex tangent frames of a UV-mapped mesh, for tangent-space normal maps.

    tangent (V, 3) unit, orthogonal to the vertex normal; normal (V, 3); sign (F,) +-1: the
    handedness of each face's UV mapping (-1 on mirrored islands). Per texel, as MikkTSpace
    consumers do: N = interp(normal), T = interp(tangent) made orthogonal to N,
    B = sign * N x T.
    """

    tangent: np.ndarray
    normal: np.ndarray
    sign: np.ndarray


def tangent_frames(vertices: np.ndarray, faces: np.ndarray, uv: np.ndarray) -> TangentFrames:
    """Angle-weighted per-vertex tangents from the UV derivatives of each face (MikkTSpace-style)."""
    vertices, uv = np.asarray(vertices, np.float64), np.asarray(uv, np.float64)
    normal = vertex_normals(vertices, faces)
    p = vertices[faces]  # (F, 3, 3)
    t = uv[faces]  # (F, 3, 2)
    e1, e2 = p[:, 1] - p[:, 0], p[:, 2] - p[:, 0]
    d1, d2 = t[:, 1] - t[:, 0], t[:, 2] - t[:, 0]
    det = d1[:, 0] * d2[:, 1] - d2[:, 0] * d1[:, 1]
    safe = np.where(np.abs(det) > 1e-30, det, 1.0)
    face_tangent = (e1 * d2[:, 1:2] - e2 * d1[:, 1:2]) / safe[:, None]  # dP/du
    face_tangent /= np.maximum(np.linalg.norm(face_tangent, axis=1, keepdims=True), 1e-30)
    face_tangent[np.abs(det) <= 1e-30] = 0.0
    tangent = np.zeros_like(vertices)
    for k in range(3):
        a, b = p[:, (k + 1) % 3] - p[:, k], p[:, (k + 2) % 3] - p[:, k]
        cos = np.sum(a * b, 1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-30)
        np.add.at(tangent, faces[:, k], face_tangent * np.arccos(np.clip(cos, -1, 1))[:, None])
    tangent = orthonormal_to(tangent, normal)
    return TangentFrames(tangent=tangent, normal=normal, sign=np.where(det < 0, -1.0, 1.0))


def orthonormal_to(vectors: np.ndarray, normals: np.ndarray) -> np.ndarray:
    """Gram-Schmidt: unit vectors (N, 3) orthogonal to unit `normals` (any one where degenerate)."""
    v = vectors - np.einsum("nd,nd->n", vectors, normals)[:, None] * normals
    length = np.sqrt(np.einsum("nd,nd->n", v, v))[:, None]
    bad = length[:, 0] < 1e-12
    if bad.any():  # pick any perpendicular direction
        helper = np.where(np.abs(normals[bad, :1]) < 0.9, [[1.0, 0.0, 0.0]], [[0.0, 1.0, 0.0]])
        v[bad] = cross(normals[bad], helper)
        length[bad] = np.linalg.norm(v[bad], axis=1, keepdims=True)
    return v / length


def cross(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cross products (N, 3) of (N, 3) arrays (np.cross without its axis shuffling)."""
    out = np.empty(np.broadcast_shapes(a.shape, b.shape), np.result_type(a, b))
    for k in range(3):
        i, j = (k + 1) % 3, (k + 2) % 3
        np.subtract(a[:, i] * b[:, j], a[:, j] * b[:, i], out=out[:, k])
    return out


def interpolate(values: np.ndarray, faces: np.ndarray, face: np.ndarray, bary: np.ndarray) -> np.ndarray:
    """Per-vertex values (V, D) at points (face (T,), bary (T, 3)) -> (T, D)."""
    corners = faces[face]
    return sum(bary[:, k:k + 1] * values[corners[:, k]] for k in range(3))


def texel_frames(frames: TangentFrames, faces: np.ndarray, face: np.ndarray, bary: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(T, B, N) unit vectors (T, 3) each at texel points, as a tangent-space normal map expects."""
    n = interpolate(frames.normal, faces, face, bary)
    n /= np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-30)
    t = orthonormal_to(interpolate(frames.tangent, faces, face, bary), n)
    b = frames.sign[face][:, None] * cross(n, t)
    return t, b, n


def up_frames(normals: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The mesh models' tangent frame (right, up) (N, 3) at unit normals: up is world +Y
    projected onto the tangent plane (+Z where the normal is vertical), right = up x normal.
    This is the frame the icosphere training views use, so model normals live in it.

    In closed form: with L = |Y - n_y n| = sqrt(n_x^2 + n_z^2), up = (-n_y n_x, L^2, -n_y n_z) / L
    and right = Y x n / L = (n_z, 0, -n_x) / L."""
    x, y, z = normals.T
    length = np.sqrt(x * x + z * z)
    pole = np.abs(y) > 1.0 - 1e-6
    length[pole] = 1.0
    right, up = np.empty_like(normals), np.empty_like(normals)
    right[:, 0], right[:, 1], right[:, 2] = z / length, 0.0, -x / length
    up[:, 0], up[:, 1], up[:, 2] = -y * x / length, length, -y * z / length
    if pole.any():  # world +Z projected
        up[pole] = orthonormal_to(np.broadcast_to([0.0, 0.0, 1.0], (int(pole.sum()), 3)), normals[pole])
        right[pole] = cross(up[pole], normals[pole])
    return right, up


def locate_texels(corners: np.ndarray, sign: np.ndarray, face: np.ndarray, bary: np.ndarray,
                  with_tangents: bool) -> tuple | None:
    """MeshBaker.locate as one compiled loop (nca3d.jit), or None where numba does not import.
    corners (F, 3, 9) float32: per face corner position, normal, tangent; sign (F,) float32; face
    (T,) int; bary (T, 3) float32 -> positions (T, 3) and frame (n,) or (n, right, up, turn)."""
    kernel = compiled(_texel_frames, helpers=(_orthonormal,))
    if kernel is None:
        return None
    count = len(face)
    out = [np.empty((count, 3), np.float32) for _ in range(5 if with_tangents else 2)]
    kernel(corners, sign, np.ascontiguousarray(face), np.ascontiguousarray(bary, np.float32), with_tangents, *out,
           *([] if with_tangents else [out[1]] * 3))
    return out[0], tuple(out[1:])


def _texel_frames(corners, sign, face, bary, with_tangents, position, normal, right, up, turn):
    """Per texel: the corners' position, normal and tangent interpolated; the unit normal n; with
    tangents the tangent made orthonormal to n (t), the model frame (right, up) of `up_frames` and
    turn = (right . t, up . t, sign), as MeshBaker.locate's numpy passes compute them."""
    point = np.empty(9, np.float32)
    for q in range(face.shape[0]):
        f = face[q]
        for d in range(9):
            point[d] = bary[q, 0] * corners[f, 0, d] + bary[q, 1] * corners[f, 1, d] + bary[q, 2] * corners[f, 2, d]
        nx, ny, nz = point[3], point[4], point[5]
        length = max(np.sqrt(nx * nx + ny * ny + nz * nz), np.float32(1e-12))
        nx, ny, nz = nx / length, ny / length, nz / length
        position[q, 0], position[q, 1], position[q, 2] = point[0], point[1], point[2]
        normal[q, 0], normal[q, 1], normal[q, 2] = nx, ny, nz
        if not with_tangents:
            continue
        tx, ty, tz = _orthonormal(point[6], point[7], point[8], nx, ny, nz)
        flat = np.sqrt(nx * nx + nz * nz)
        if abs(ny) > 1.0 - 1e-6:  # a pole: world +Z projected, right = up x n
            ux, uy, uz = _orthonormal(np.float32(0.0), np.float32(0.0), np.float32(1.0), nx, ny, nz)
            rx, ry, rz = uy * nz - uz * ny, uz * nx - ux * nz, ux * ny - uy * nx
        else:
            rx, ry, rz = nz / flat, np.float32(0.0), -nx / flat
            ux, uy, uz = -ny * nx / flat, flat, -ny * nz / flat
        right[q, 0], right[q, 1], right[q, 2] = rx, ry, rz
        up[q, 0], up[q, 1], up[q, 2] = ux, uy, uz
        turn[q, 0], turn[q, 1], turn[q, 2] = rx * tx + ry * ty + rz * tz, ux * tx + uy * ty + uz * tz, sign[f]


def _orthonormal(vx, vy, vz, nx, ny, nz):
    """orthonormal_to for one vector and unit normal (any perpendicular where degenerate)."""
    along = vx * nx + vy * ny + vz * nz
    vx, vy, vz = vx - along * nx, vy - along * ny, vz - along * nz
    length = np.sqrt(vx * vx + vy * vy + vz * vz)
    if length < 1e-12:
        hx, hy = (np.float32(1.0), np.float32(0.0)) if abs(nx) < 0.9 else (np.float32(0.0), np.float32(1.0))
        vx, vy, vz = -nz * hy, nz * hx, nx * hy - ny * hx  # n x helper (helper z = 0)
        length = np.sqrt(vx * vx + vy * vy + vz * vz)
    return vx / length, vy / length, vz / length


def dilate(maps: list[np.ndarray], covered: np.ndarray, margin: int, band: int = 1024) -> None:
    """Copy the nearest covered texel into every uncovered texel within `margin` px, in place
    (dilation_moves).
    maps: arrays (S, S, ...) sharing `covered` (S, S) bool."""
    copy_moves(maps, dilation_moves(covered, margin, band))


def copy_moves(maps: list[np.ndarray], moves: tuple[np.ndarray, np.ndarray], part: int = 0, parts: int = 1) -> None:
    """Copy texels along flat (target, source) indices (D,) in each map (S, S, ...), in place, one
    channel at a time (1D copies: 2x faster than rows of 3 bytes); of all the maps' channels in
    order only every `parts`-th from `part` (threads share the work: numpy drops the GIL here)."""
    target, source = moves
    channels = [channel for image in maps for channel in image.reshape(image.shape[0] * image.shape[1], -1).T]
    for channel in channels[part::parts]:
        channel[target] = channel[source]


def dilation_moves(covered: np.ndarray, margin: int, band: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Flat (target, source) indices (D,) int64 of the dilation: each uncovered texel of `covered`
    (S, S) bool and its nearest covered texel in the taxicab metric (straight across a straight
    edge, as the Euclidean one), kept where that texel is within `margin` px. They depend on the
    coverage only, so bakers keep them across frames. Per row band (with a `margin` halo, so memory
    stays bounded at 8K) one chamfer feature transform: two raster passes, 3-4x faster than the
    exact Euclidean one; near a chart's corners the texel copied may be a little farther than the
    nearest, which padding does not mind. Where numba imports, one compiled pass pair per band
    (`_band_moves`); else scipy's transform (the reference)."""
    size = covered.shape[0]
    targets, sources = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
    if margin <= 0 or covered.all() or not covered.any():
        return targets[0], sources[0]
    kernel = compiled(_band_moves)
    if kernel is not None:  # one output and one scratch pair for all bands: first touches cost
        moves = np.empty((2, covered.size - int(np.count_nonzero(covered))), np.int64)
        scratch = np.empty((2, min(size, band + 2 * margin), size), np.int32)
        count = 0
        for top in range(0, size, band):
            bottom = min(size, top + band)
            count += kernel(covered, top, bottom, max(0, top - margin), min(size, bottom + margin), margin,
                            moves[0, count:], moves[1, count:], scratch[0], scratch[1])
        return moves[0, :count], moves[1, :count]
    from scipy import ndimage

    for top in range(0, size, band):
        bottom = min(size, top + band)
        lo, hi = max(0, top - margin), min(size, bottom + margin)
        hole = ~covered[lo:hi]
        inner = slice(top - lo, bottom - lo)
        target = np.flatnonzero(hole[inner])
        if not len(target):
            continue
        rows, cols = ndimage.distance_transform_cdt(hole, metric="taxicab", return_distances=False,
                                                    return_indices=True)
        source_rows, source_cols = rows[inner].reshape(-1)[target], cols[inner].reshape(-1)[target]
        target_rows, target_cols = np.divmod(target, size)
        near = (source_rows - target_rows - (top - lo)) ** 2 + (source_cols - target_cols) ** 2 <= margin * margin
        targets.append(target[near] + top * size)
        sources.append((source_rows[near] + lo) * size + source_cols[near])
    return np.concatenate(targets), np.concatenate(sources)
