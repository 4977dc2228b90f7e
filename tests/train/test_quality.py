import numpy as np
import torch

from tests.conftest import optional_import

optional_import("plenoptic", "the texture statistics need plenoptic (pip install 'nca3d[bench]')", module_level=True)

from nca3d.train.quality import (  # noqa: E402
    TextureStatistics,
    band_score,
    orientation_distance,
    orientation_histogram,
    phase_randomised,
    reference_scores,
)


def test_reference_crops_of_plain_tiled_diagonal_and_zoomed_exemplars():
    """Where the reference, the ceiling's crops and the floor come from; the scores are tested below.
    White noise is its own phase randomisation: that floor is no further than another crop, so
    the band cannot rank (a blur is far)."""
    rng = np.random.default_rng(0)
    noise = torch.from_numpy(rng.random((3, 256, 256))).float()
    stats = TextureStatistics(size=64)
    scores = reference_scores(noise, stats)
    assert scores["ceiling"] < scores["floor_blur"] and band_score(scores["ceiling"], scores["floor"], 0.0) is None
    assert stats.distance(noise[:, :128, :128], noise[:, :128, :128]) < 1e-6
    assert not scores["tiled"]
    assert scores["scale"] == 2
    tiled = reference_scores(noise[:, :128, :128].repeat(1, 2, 2), stats)
    # a 2 x 2 tiling's halves are the same pixels: it is measured within one tile instead
    assert tiled["tiled"] and tiled["scale"] == 4
    assert torch.equal(tiled["reference"], noise[:, :64, :64])
    assert 0 < tiled["ceiling"] < tiled["floor_blur"]
    # periodic along the diagonal (tiles A B / B A): the ceiling compares A with B, not A with itself
    a, b = noise[:, :64, :64], noise[:, 64:128, :64]
    diagonal = reference_scores(torch.cat([torch.cat([a, b], 2), torch.cat([b, a], 2)], 1), stats)
    assert not diagonal["tiled"] and diagonal["scale"] == 2
    assert 0 < diagonal["ceiling"] < diagonal["floor_blur"]
    # a model trained at zoom 2 spans half the exemplar: it is measured within the top-left half
    zoomed = reference_scores(noise, stats, zoom=2)
    assert torch.equal(zoomed["region"], noise[:, :128, :128])
    assert torch.equal(zoomed["reference"], noise[:, :64, :64]) and zoomed["scale"] == 2
    assert 0 < zoomed["ceiling"] < zoomed["floor_blur"]


def blobs(size=256, sigma=12.0, seed=0):
    """Large two-tone blotches (black spots on white): smooth noise, thresholded."""
    rng = np.random.default_rng(seed)
    f = np.fft.fftfreq(size)
    smooth = np.real(np.fft.ifft2(np.fft.fft2(rng.standard_normal((size, size)))
                                  * np.exp(-2 * (np.pi * sigma) ** 2 * (f[:, None] ** 2 + f[None] ** 2))))
    return torch.from_numpy((smooth > np.quantile(smooth, 0.3)).astype(np.float32))[None].expand(3, -1, -1).clone()


def test_the_floor_of_a_two_tone_texture_is_beyond_its_ceiling():
    """Black spots on white: unwhitened, a blur once stayed nearer than another crop (the bench
    divided by a band of -0.006). In units of the exemplar's own crop-to-crop spread both
    degradations lie well beyond another crop."""
    stats = TextureStatistics()
    scores = reference_scores(blobs(sigma=4.0), stats)
    assert scores["floor"] == min(scores["floor_blur"], scores["floor_phase"])
    assert scores["floor"] > 1.5 * scores["ceiling"]


def test_stripes_and_streaks_lower_the_score():
    """Streaks and stripes over a blotchy texture: another crop scores about 1, they score below 0."""
    stats = TextureStatistics()
    texture = blobs(sigma=3.0, seed=1)
    scores = reference_scores(texture, stats)
    reference = stats(scores["reference"])
    crop = texture[:, 128:, 128:]
    streaked = crop.clone()
    for shift in range(1, 12):  # smeared down the image: vertical streaks
        streaked = torch.maximum(streaked, crop.roll(shift, dims=1) * (1 - shift / 12))
    striped = 0.5 * crop + 0.5 * crop[:, :1].expand_as(crop)

    def score(image):
        return band_score(scores["ceiling"], scores["floor"],
                          stats.distance(image, b_stats=reference, spread=scores["spread"]))

    assert score(crop) > 0.7
    assert score(streaked) < 0.0 and score(striped) < 0.0
    histogram = orientation_histogram(striped)
    assert histogram.argmax() % 12 == 0  # the gradient points along x: vertical stripes
    assert histogram.max() > 2 * orientation_histogram(crop).max()
    # the training selection's stripe term: stripes and streaks far from the exemplar's directions
    own = orientation_histogram(texture[:, :128, :128])
    natural = orientation_distance(crop[None], own)
    assert orientation_distance(torch.stack([striped, streaked]), own) > 2 * natural
    # a blown-up render (NaN, inf) gives a finite histogram, not an IndexError
    broken = crop.clone()
    broken[:, :8] = float("nan")
    broken[:, 8:16] = float("inf")
    assert torch.isfinite(orientation_histogram(broken)).all()


def test_phase_randomising_keeps_the_spectrum_and_the_mean_colour():
    image = 0.4 + 0.2 * blobs(size=64)
    image[0] *= 0.5
    randomised = phase_randomised(image)
    assert torch.allclose(randomised.mean((1, 2)), image.mean((1, 2)), atol=0.01)
    spectrum = torch.fft.fft2(image).abs()
    assert torch.allclose(torch.fft.fft2(randomised).abs(), spectrum, atol=1e-3 * float(spectrum.max()))
    assert (randomised - image).abs().mean() > 0.05  # the spots are gone

