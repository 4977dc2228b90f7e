import numpy as np
import pytest

from nca3d.ops.bake import (
    UVRasteriser,
    dilate,
    interpolate,
    tangent_frames,
    texel_frames,
    up_frames,
    vertex_normals,
)


def _texel_uv(index, size):
    row, col = np.divmod(index, size)
    return np.stack([(col + 0.5) / size, 1.0 - (row + 0.5) / size], axis=1)


def _collect(rasteriser):
    chunks = list(rasteriser)
    index = np.concatenate([c.index for c in chunks])
    face = np.concatenate([c.face for c in chunks])
    bary = np.concatenate([c.bary for c in chunks])
    return index, face, bary


def test_rasteriser_covers_each_texel_with_exact_barycentrics():
    uv = np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    faces = np.array([[0, 1, 2], [0, 2, 3]])
    size = 32
    rasteriser = UVRasteriser(uv, faces, size, border=0.0)
    index, face, bary = _collect(rasteriser)
    # the square is fully covered; only centres on the shared diagonal come from both triangles
    assert len(np.unique(index)) == size * size and len(index) - size * size <= size
    # the barycentrics reproduce each texel's centre
    assert np.allclose(interpolate(uv, faces, face, bary), _texel_uv(index, size), atol=1e-9)
    # the diagonal splits the texels between the two triangles, half and half (up to the diagonal row)
    assert abs(np.sum(face == 0) - np.sum(face == 1)) <= size


def test_rasteriser_border_texels_take_the_nearest_triangle_point():
    uv = np.array([[0.25, 0.25], [0.75, 0.25], [0.5, 0.75]])
    inside = UVRasteriser(uv, np.array([[0, 1, 2]]), 64, border=0.0)
    wider = UVRasteriser(uv, np.array([[0, 1, 2]]), 64, border=1.0)
    a, _, _ = _collect(inside)
    b, _, bary = _collect(wider)
    assert set(a) < set(b)
    ring = len(b) - len(a)
    perimeter_px = 64 * (0.5 + 2 * np.hypot(0.25, 0.5))
    assert 0.6 * perimeter_px < ring < 1.6 * perimeter_px  # about one texel all round
    assert (bary >= 0).all() and np.allclose(bary.sum(1), 1.0)


def test_rasteriser_chunks_bound_memory_without_changing_the_result():
    rng = np.random.default_rng(0)
    uv = rng.uniform(0, 1, (30, 2))
    faces = rng.integers(0, 30, (20, 3))
    faces = faces[(faces[:, 0] != faces[:, 1]) & (faces[:, 1] != faces[:, 2]) & (faces[:, 0] != faces[:, 2])]
    whole = UVRasteriser(uv, faces, 128)
    small = UVRasteriser(uv, faces, 128, chunk=997)
    a_index, _, _ = _collect(whole)
    b_index, _, _ = _collect(small)
    assert np.array_equal(np.unique(a_index), np.unique(b_index))
    assert np.array_equal(whole.distance, small.distance)
    assert np.array_equal(whole.covered, small.covered)


def test_bands_rasterised_out_of_order_and_on_two_threads_give_the_same_texels():
    """Each band scores only its own rows: bands taken bottom-up, or shared by two threads (as
    MeshBaker's streams take them), give the texels, faces and barycentrics of the raster-order pass."""
    from concurrent.futures import ThreadPoolExecutor

    rng = np.random.default_rng(4)
    uv = rng.uniform(0, 1, (60, 2))
    faces = rng.integers(0, 60, (80, 3))
    faces = faces[(faces[:, 0] != faces[:, 1]) & (faces[:, 1] != faces[:, 2]) & (faces[:, 0] != faces[:, 2])]
    ordered = UVRasteriser(uv, faces, 96, chunk=96 * 5)
    want = {texels.index[0]: texels for texels in ordered}
    assert len(ordered.bands()) == 20 and len(want) > 10
    backwards = UVRasteriser(uv, faces, 96, chunk=96 * 5)
    threaded = UVRasteriser(uv, faces, 96, chunk=96 * 5)
    with ThreadPoolExecutor(2) as pool:
        for rasteriser, bands in ((backwards, [backwards.band(*rows) for rows in reversed(backwards.bands())]),
                                  (threaded, list(pool.map(lambda rows: threaded.band(*rows), threaded.bands())))):
            got = {texels.index[0]: texels for texels in bands if len(texels.index)}
            assert sorted(got) == sorted(want)
            for first, texels in want.items():
                assert np.array_equal(got[first].index, texels.index) and np.array_equal(got[first].face, texels.face)
                assert np.array_equal(got[first].bary, texels.bary)
            assert np.array_equal(rasteriser.distance, ordered.distance)


@pytest.mark.parametrize("border", [0.0, 0.7, 1.0, 2.5])
def test_compiled_scoring_equals_the_numpy_passes(border, monkeypatch):
    """The numba loops (nca3d.jit) give exactly the row spans of `_row_spans`' numpy passes, the
    keys of `_score`'s and the texels of `texels`': the same arithmetic, codes and painter's
    order, over overlapping, sliver and partly off-map triangles."""
    from nca3d.ops import bake

    rng = np.random.default_rng(5)
    uv = rng.uniform(-0.05, 1.05, (90, 2))
    faces = rng.integers(0, 90, (150, 3))
    faces = faces[(faces[:, 0] != faces[:, 1]) & (faces[:, 1] != faces[:, 2]) & (faces[:, 0] != faces[:, 2])]
    compiled = UVRasteriser(uv, faces, 80, border=border, chunk=80 * 7)
    got = list(compiled)
    assert bake.compiled(bake._score_spans) is not None and bake.compiled(bake._band_texels) is not None
    assert bake.compiled(bake._fill_spans, helpers=(bake._span,)) is not None
    monkeypatch.setattr(bake, "compiled", lambda *args, **kwargs: None)  # as where numba is missing
    plain = UVRasteriser(uv, faces, 80, border=border, chunk=80 * 7)
    want = list(plain)
    assert (plain._keys != 0).mean() > 0.5
    for name in ("_span_tri", "_span_start", "_span_outside", "_span_step", "_offsets", "_row_spans_from"):
        assert np.array_equal(getattr(compiled, name), getattr(plain, name)), name
    assert np.array_equal(compiled._keys, plain._keys) and len(got) == len(want)
    for texels, reference in zip(got, want):
        for name in ("index", "face", "bary"):
            a, b = getattr(texels, name), getattr(reference, name)
            assert a.dtype == b.dtype and np.array_equal(a, b), name


def test_tangent_frames_follow_rotated_and_mirrored_islands():
    # one quad in the z = 0 plane, mapped three ways: plain, rotated 90 degrees, mirrored in u
    vertices = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0]], float)
    faces = np.array([[0, 1, 2], [0, 2, 3]])
    layouts = {
        "plain": (np.array([[0, 0], [1, 0], [1, 1], [0, 1]], float), [1, 0, 0], [0, 1, 0]),
        "rotated": (np.array([[0, 1], [0, 0], [1, 0], [1, 1]], float), [0, 1, 0], [-1, 0, 0]),
        "mirrored": (np.array([[1, 0], [0, 0], [0, 1], [1, 1]], float), [-1, 0, 0], [0, 1, 0]),
    }
    for label, (uv, dpdu, dpdv) in layouts.items():
        frames = tangent_frames(vertices, faces, uv)
        t, b, n = texel_frames(frames, faces, np.array([0, 1]), np.full((2, 3), 1 / 3))
        assert np.allclose(n, [0, 0, 1]), label
        assert np.allclose(t, dpdu, atol=1e-9), label  # tangent = dP/du
        assert np.allclose(b, dpdv, atol=1e-9), label  # bitangent = dP/dv, also when mirrored
    assert (tangent_frames(vertices, faces, layouts["mirrored"][0]).sign == -1).all()


def test_vertex_normals_agree_across_uv_seam_copies():
    # a tent: two faces meeting at an edge whose vertices are duplicated (a UV seam)
    vertices = np.array([[0, 0, 0], [1, 0, 0], [0.5, 1, 0.5], [1, 0, 0], [0.5, 1, 0.5], [1, 1, 1]], float)
    faces = np.array([[0, 1, 2], [3, 5, 4]])
    normals = vertex_normals(vertices, faces)
    assert np.allclose(normals[1], normals[3]) and np.allclose(normals[2], normals[4])
    assert np.allclose(np.linalg.norm(normals, axis=1), 1.0)


def test_up_frames_are_right_handed_with_up_towards_world_y():
    """Up: world +Y projected onto the tangent plane and normalised (+Z projected at the poles)."""
    rng = np.random.default_rng(1)
    normals = rng.normal(size=(100, 3))
    normals /= np.linalg.norm(normals, axis=1, keepdims=True)
    normals[0], normals[1] = [0, 1, 0], [0, -1, 0]  # the poles
    right, up = up_frames(normals)
    assert np.allclose(np.cross(right, up), normals, atol=1e-9)
    want = np.tile([0.0, 1.0, 0.0], (100, 1))
    want[:2] = [0.0, 0.0, 1.0]
    want -= np.sum(want * normals, 1, keepdims=True) * normals
    assert np.allclose(up, want / np.linalg.norm(want, axis=1, keepdims=True), atol=1e-12)


@pytest.mark.parametrize("band", [1024, 7])
def test_dilate_copies_the_nearest_covered_texel_within_the_margin(band):
    size = 40
    covered = np.zeros((size, size), bool)
    covered[10:20, 10:20] = True
    image = np.zeros((size, size, 3), np.uint8)
    image[10:20, 10:20] = np.arange(100, dtype=np.uint8).reshape(10, 10, 1)
    height = image[..., 0].astype(np.uint16) * 100
    dilate([image, height], covered, margin=3, band=band)
    assert (image[10:20, 8] == image[10:20, 10]).all()  # copied from the island's left column
    assert (image[22, 10:20] == image[19, 10:20]).all()
    assert (height[22, 10:20] == image[19, 10:20, 0].astype(np.uint16) * 100).all()
    assert (image[:6] == 0).all() and (image[:, 24:] == 0).all()  # beyond the margin: untouched


@pytest.mark.parametrize("band", [1024, 13])
def test_compiled_dilation_moves_are_taxicab_nearest_like_scipys(band, monkeypatch):
    """The compiled two-pass transform (nca3d.jit) moves the texels scipy's chamfer transform (the
    reference) moves, each from a covered texel within the margin, at the exact taxicab distance."""
    from scipy import ndimage

    from nca3d.ops import bake

    rng = np.random.default_rng(7)
    covered = np.kron(rng.random((12, 12)) < 0.4, np.ones((8, 8), bool))
    covered &= rng.random(covered.shape) < 0.97  # pinholes
    size, margin = covered.shape[0], 5
    target, source = bake.dilation_moves(covered, margin, band)
    assert bake.compiled(bake._band_moves) is not None and len(target) > 500
    target_rows, target_cols = np.divmod(target, size)
    source_rows, source_cols = np.divmod(source, size)
    if band >= size:  # one band: nearest over the whole map (bands see only their margin halo)
        taxicab = ndimage.distance_transform_cdt(~covered, metric="taxicab").reshape(-1)
        assert np.array_equal(np.abs(target_rows - source_rows) + np.abs(target_cols - source_cols), taxicab[target])
    assert covered.reshape(-1)[source].all() and not covered.reshape(-1)[target].any()
    assert ((target_rows - source_rows) ** 2 + (target_cols - source_cols) ** 2 <= margin ** 2).all()
    assert np.array_equal(target, np.sort(target))  # raster order
    monkeypatch.setattr(bake, "compiled", lambda *args, **kwargs: None)
    reference, _ = bake.dilation_moves(covered, margin, band)
    assert np.array_equal(np.sort(reference), target)


def test_row_spans_find_exactly_the_texels_a_brute_force_search_finds():
    rng = np.random.default_rng(3)
    uv = rng.uniform(-0.1, 1.1, (24, 2))  # some corners outside the map
    faces = rng.integers(0, 24, (16, 3))
    faces = faces[(faces[:, 0] != faces[:, 1]) & (faces[:, 1] != faces[:, 2]) & (faces[:, 0] != faces[:, 2])]
    size, border = 48, 1.0
    rasteriser = UVRasteriser(uv, faces, size, border=border)
    list(rasteriser)
    # brute force: every texel centre against every triangle: its distance beyond the farthest
    # edge line is within the border, and it lies within the border of the triangle's bounding box
    rows, cols = np.mgrid[0:size, 0:size]
    centre = np.stack([cols.ravel() + 0.5, rows.ravel() + 0.5], 1)
    covered = np.zeros(size * size, bool)
    for f in faces:
        p = np.stack([uv[f, 0] * size, (1 - uv[f, 1]) * size], 1)
        area2 = (p[1, 0] - p[0, 0]) * (p[2, 1] - p[0, 1]) - (p[1, 1] - p[0, 1]) * (p[2, 0] - p[0, 0])
        if abs(area2) < 1e-9:
            continue
        outside = np.zeros(len(centre))
        for k in range(3):
            a, b = p[(k + 1) % 3], p[(k + 2) % 3]
            edge = b - a
            signed = (edge[0] * (centre[:, 1] - a[1]) - edge[1] * (centre[:, 0] - a[0])) / np.linalg.norm(edge)
            outside = np.maximum(outside, np.maximum(-signed * np.sign(area2), 0))
        near_box = ((centre >= p.min(0) - border + 1e-4) & (centre <= p.max(0) + border - 1e-4)).all(1)
        covered |= (outside <= border - 1e-4) & near_box
    assert (rasteriser.covered.ravel() >= covered).all()  # nothing within the border is missed
    assert rasteriser.covered.sum() <= covered.sum() + 0.02 * size * size  # and little beyond it


def test_rasteriser_picks_the_best_triangle_of_a_brute_force_search_with_its_barycentrics():
    """Each covered texel once, in raster order, with the triangle of the lowest coverage code (the
    last of equals: overlapping triangles paint over earlier ones) and its clamped barycentrics, as a
    float64 search of every texel against every triangle finds them (up to code rounding): within
    `border` px of the edge lines, in the triangle's rows widened by `border`."""
    rng = np.random.default_rng(5)
    uv = rng.uniform(0.0, 1.0, (30, 2))
    faces = rng.integers(0, 30, (25, 3))
    faces = faces[(faces[:, 0] != faces[:, 1]) & (faces[:, 1] != faces[:, 2]) & (faces[:, 0] != faces[:, 2])]
    size, border = 40, 1.0
    chunks = list(UVRasteriser(uv, faces, size, border=border, chunk=300))
    index = np.concatenate([c.index for c in chunks])
    assert (np.diff(index) > 0).all()  # raster order, each texel once
    rows, cols = np.divmod(np.arange(size * size), size)
    centre = np.stack([cols + 0.5, rows + 0.5], 1)
    codes = np.full((len(faces), size * size), np.inf)
    barys = np.zeros((len(faces), size * size, 3))
    decided = np.zeros((len(faces), size * size), bool)  # centre clearly inside (or > 1e-3 px outside)
    inside = np.zeros((len(faces), size * size), bool)
    for k, f in enumerate(faces):
        p = np.stack([uv[f, 0] * size, (1 - uv[f, 1]) * size], 1)
        area2 = (p[1, 0] - p[0, 0]) * (p[2, 1] - p[0, 1]) - (p[1, 1] - p[0, 1]) * (p[2, 0] - p[0, 0])
        edges = [np.linalg.norm(p[(j + 2) % 3] - p[(j + 1) % 3]) for j in range(3)]
        bary = np.stack([((p[(j + 1) % 3, 0] - centre[:, 0]) * (p[(j + 2) % 3, 1] - centre[:, 1])
                          - (p[(j + 1) % 3, 1] - centre[:, 1]) * (p[(j + 2) % 3, 0] - centre[:, 0])) / area2
                         for j in range(3)], 1)
        outside = np.max(np.maximum(-bary, 0) * np.abs(area2) / edges, 1)  # px beyond the farthest edge
        near = (outside <= border) & (centre[:, 1] > p[:, 1].min() - border) & (centre[:, 1] < p[:, 1].max() + border)
        codes[k, near] = np.minimum(np.ceil(outside[near] * 254 / border), 254)
        clamped = np.maximum(bary, 0)
        barys[k] = clamped / clamped.sum(1, keepdims=True)
        inside[k] = bary.min(1) > 1e-6
        decided[k] = inside[k] | (outside > 1e-3)
    best = codes.min(0)
    covered = np.isfinite(best)
    winner = len(faces) - 1 - np.argmin(codes[::-1], 0)  # the last triangle with the lowest code
    clear = covered & ((codes <= best + 1).sum(0) == 1)  # no other triangle within one code step
    face = np.full(size * size, -1)
    face[index] = np.concatenate([c.face for c in chunks])
    bary = np.zeros((size * size, 3))
    bary[index] = np.concatenate([c.bary for c in chunks])
    assert np.array_equal(face[clear], winner[clear]) and clear.sum() > 0.15 * size * size
    overlap = decided.all(0) & (inside.sum(0) > 1)  # inside several triangles: the last one wins
    last_inside = len(faces) - 1 - np.argmax(inside[::-1], 0)
    assert np.array_equal(face[overlap], last_inside[overlap]) and overlap.sum() > 0.1 * size * size
    picked = barys[np.maximum(face, 0), np.arange(size * size)]
    assert np.abs(bary[face >= 0] - picked[face >= 0]).max() < 1e-5
    assert abs(int((face >= 0).sum()) - int(covered.sum())) <= 0.01 * size * size
