"""Texture losses: feature-distribution distances between renders and an exemplar.

The main entry point is :class:`TextureLoss`. It crops each render at several scales (full,
2 half-size crops, 4 quarter-size crops, all resized to one patch size), runs a frozen
feature extractor (see :mod:`nca3d.train.features`) once on all crops, samples feature vectors
per tap and compares them with cached exemplar samples using a relaxed earth mover's distance
(cosine cost + moment term) or a sliced Wasserstein distance.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..ops.pbr import normal_height_agreement

__all__ = [
    "DISTANCES",
    "RESAMPLINGS",
    "TextureLoss",
    "autocorrelation",
    "autocorrelation_loss",
    "crop_count",
    "multiscale_crops",
    "normal_height_misfit",
    "overflow_loss",
    "relaxed_emd",
    "sample_vectors",
    "sliced_wasserstein",
]

DISTANCES = ("emd", "swd")


# --------------------------------------------------------------------------------------------
# random helpers (a CPU generator may drive tensors on another device)
# --------------------------------------------------------------------------------------------


def _gen_device(generator: torch.Generator | None) -> torch.device:
    return generator.device if generator is not None else torch.device("cpu")


def _rand(size: Sequence[int], generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    return torch.rand(tuple(size), generator=generator, device=_gen_device(generator)).to(device)


def _randn(size: Sequence[int], generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    return torch.randn(tuple(size), generator=generator, device=_gen_device(generator)).to(device)


def _randint(high: int, size: Sequence[int], generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    return torch.randint(int(high), tuple(size), generator=generator, device=_gen_device(generator)).to(device)


def _stratified_indices(total: int, n: int, batch: int, generator, device) -> torch.Tensor:
    """``(batch, n)`` distinct indices in ``[0, total)``, ``n <= total``: stratified sampling.

    ``[0, total)`` is cut into ``n`` integer bins, one uniform draw per bin, then everything is
    rotated by a random offset per row, so every index has probability exactly ``n / total``.
    Unlike a full permutation this costs O(n).
    """
    edges = torch.arange(n + 1, device=device, dtype=torch.int64) * total // n
    size = (edges[1:] - edges[:-1]).to(torch.float64)  # >= 1
    u = _rand((batch, n), generator, device).to(torch.float64)
    offset = torch.minimum((u * size).long(), (size - 1).long())
    shift = _randint(total, (batch, 1), generator, device)
    return (edges[:-1] + offset + shift) % total


# --------------------------------------------------------------------------------------------
# sampling and distances
# --------------------------------------------------------------------------------------------


def sample_vectors(feat: torch.Tensor, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Random spatial sample of feature vectors: ``(B, C, H, W) -> (B, min(n, H*W), C)``.

    Positions are drawn without replacement (stratified over the flattened map), independently
    per batch element. Differentiable with respect to ``feat``.
    """
    if feat.dim() != 4:
        raise ValueError(f"expected features (B, C, H, W), got {tuple(feat.shape)}")
    b, c, h, w = feat.shape
    flat = feat.reshape(b, c, h * w)
    total = h * w
    if n >= total:
        return flat.transpose(1, 2)
    idx = _stratified_indices(total, n, b, generator, feat.device)
    return torch.gather(flat, 2, idx.unsqueeze(1).expand(b, c, n)).transpose(1, 2)


def _check_xy(x: torch.Tensor, y: torch.Tensor) -> tuple[int, ...]:
    if x.dim() < 3 or y.dim() != x.dim():
        raise ValueError(f"expected (B, N, C) and (B|1, M, C), got {tuple(x.shape)} and {tuple(y.shape)}")
    if x.shape[-1] != y.shape[-1]:
        raise ValueError(f"channel mismatch: {x.shape[-1]} vs {y.shape[-1]}")
    try:
        return tuple(torch.broadcast_shapes(x.shape[:-2], y.shape[:-2]))
    except RuntimeError:
        raise ValueError(f"batch mismatch: x {tuple(x.shape)} vs y {tuple(y.shape)}") from None


def _moments(v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    mean = v.mean(dim=-2)
    centred = v - mean.unsqueeze(-2)
    cov = centred.transpose(-1, -2) @ centred / max(v.shape[-2] - 1, 1)
    return mean, cov


def relaxed_emd(x: torch.Tensor, y: torch.Tensor, moments: float = 1.0) -> torch.Tensor:
    """Relaxed earth mover's distance with cosine cost, plus a moment term: ``(B,)``.

    ``x`` is ``(B, N, C)``, ``y`` is ``(B, M, C)`` or ``(1, M, C)`` (shared target); extra
    leading batch dimensions broadcast. The REMD is ``max(mean_i min_j c_ij, mean_j min_i c_ij)``
    with ``c_ij = 1 - cos(x_i, y_j)`` (STROTSS); the moment term, weighted by ``moments`` (0: off), is
    ``|mean_x - mean_y|.mean() + |cov_x - cov_y|.mean()``.

    Nearest neighbours are found without autograd and the cost is re-evaluated only for the
    matched pairs: the exact gradient of the min, at O((N + M) C) backward cost.
    """
    batch = _check_xy(x, y)
    n, m, c = x.shape[-2], y.shape[-2], x.shape[-1]
    xn = x / x.norm(dim=-1, keepdim=True).clamp_min(1e-8)
    yn = y / y.norm(dim=-1, keepdim=True).clamp_min(1e-8)
    with torch.no_grad():
        sim = xn @ yn.transpose(-1, -2)  # (..., N, M)
        nn_x = sim.argmax(dim=-1)  # nearest target of each x: (..., N)
        nn_y = sim.argmax(dim=-2)  # nearest output of each y: (..., M)
        del sim
    xb = xn.expand(*batch, n, c)
    yb = yn.expand(*batch, m, c)
    y_for_x = torch.gather(yb, -2, nn_x.unsqueeze(-1).expand(*batch, n, c))
    x_for_y = torch.gather(xb, -2, nn_y.unsqueeze(-1).expand(*batch, m, c))
    r_x = 1 - (xb * y_for_x).sum(-1).mean(-1)
    r_y = 1 - (yb * x_for_y).sum(-1).mean(-1)
    loss = torch.maximum(r_x, r_y)
    if moments:
        mx, cx = _moments(x)
        my, cy = _moments(y)
        loss = loss + moments * ((mx - my).abs().mean(-1) + (cx - cy).abs().mean(dim=(-2, -1)))
    return loss


def _resample_sorted(v: torch.Tensor, n: int) -> torch.Tensor:
    """Resample sorted values ``(..., M)`` to ``n`` quantiles by linear interpolation."""
    m = v.shape[-1]
    if m == n:
        return v
    pos = (torch.arange(n, device=v.device, dtype=v.dtype) + 0.5) * (m / n) - 0.5
    pos = pos.clamp(0, m - 1)
    lo = pos.floor().long()
    hi = (lo + 1).clamp(max=m - 1)
    t = pos - lo.to(v.dtype)
    return v[..., lo] * (1 - t) + v[..., hi] * t


def sliced_wasserstein(
    x: torch.Tensor,
    y: torch.Tensor,
    projections: int = 64,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Sliced Wasserstein-2 distance (squared, averaged over projections and quantiles): ``(B,)``.

    Projects both samples onto ``projections`` random unit directions (shared by x and y),
    sorts, and returns the mean squared difference of the sorted projections. If ``M != N``
    the sorted target projections are resampled to ``N`` quantiles. Extra leading batch
    dimensions broadcast as in :func:`relaxed_emd`.
    """
    _check_xy(x, y)
    c = x.shape[-1]
    dirs = _randn((c, projections), generator, x.device).to(x.dtype)
    dirs = dirs / dirs.norm(dim=0, keepdim=True).clamp_min(1e-12)
    px = (x @ dirs).transpose(-1, -2).sort(dim=-1).values  # (..., P, N)
    py = (y @ dirs).transpose(-1, -2).sort(dim=-1).values  # (..., P, M)
    py = _resample_sorted(py, x.shape[-2])
    return (px - py).pow(2).mean(dim=(-2, -1))


# --------------------------------------------------------------------------------------------
# multi-scale crops
# --------------------------------------------------------------------------------------------


def _patch_size(h: int, w: int, patch: int) -> tuple[int, int]:
    """Output size for a crop of ``h x w``: the shorter side becomes ``patch`` (aspect kept)."""
    if h == w:
        return patch, patch
    s = min(h, w)
    return max(1, round(patch * h / s)), max(1, round(patch * w / s))


RESAMPLINGS = ("area", "point")


def _resize(x: torch.Tensor, size: tuple[int, int], resample: str = "area") -> torch.Tensor:
    """Crops (N, K, h, w) -> (N, K, *size): bilinear, and when shrinking either antialiased ("area":
    each pixel the mean of the texels it covers) or one texel per pixel, at its centre ("point": as
    a render decodes one point per pixel)."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    down = size[0] < x.shape[-2] or size[1] < x.shape[-1]
    if down and resample == "point":
        return F.interpolate(x, size=size, mode="nearest-exact")
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=down)


MAX_CROPS_PER_SCALE = 4  # finer scales add detail, not more positions: 4 crops already give ample samples


def crop_count(scale: int) -> int:
    """Crops a render contributes at crop scale ``scale``: ``min(scale, 4)`` (1 full view, 2 halves, 4 quarters, 4 eighths)."""
    return min(int(scale), MAX_CROPS_PER_SCALE)


def _random_crops(images: torch.Tensor, count: int, ch: int, cw: int, generator, wrap: bool) -> torch.Tensor:
    """``count`` random ``ch x cw`` crops per image, vectorised: ``(count*B, K, ch, cw)``, crop-major."""
    b, k, h, w = images.shape
    dev = images.device
    if ch == h and cw == w:
        return images.repeat(count, 1, 1, 1)
    if wrap:
        oy = _randint(h, (count, b), generator, dev)
        ox = _randint(w, (count, b), generator, dev)
    else:
        oy = _randint(h - ch + 1, (count, b), generator, dev)
        ox = _randint(w - cw + 1, (count, b), generator, dev)
    rows = oy.unsqueeze(-1) + torch.arange(ch, device=dev)  # (count, B, ch)
    cols = ox.unsqueeze(-1) + torch.arange(cw, device=dev)  # (count, B, cw)
    if wrap:
        rows = rows % h
        cols = cols % w
    bidx = torch.arange(b, device=dev).view(1, b, 1, 1)
    hwk = images.permute(0, 2, 3, 1)  # (B, H, W, K)
    crops = hwk[bidx, rows.unsqueeze(-1), cols.unsqueeze(-2)]  # (count, B, ch, cw, K)
    return crops.permute(0, 1, 4, 2, 3).reshape(count * b, k, ch, cw)


def multiscale_crops(
    images: torch.Tensor,
    patch: int,
    generator: torch.Generator | None = None,
    scales: Sequence[int] = (1, 2, 4),
    wrap: bool = True,
    counts: Sequence[int] | None = None,
    extent: float = 1.0,
    resample: str = "area",
) -> list[torch.Tensor]:
    """Multi-scale random crops, each resized to ``patch`` (bilinear, antialiased when shrinking).

    For scale ``s`` the crop is ``(H * extent // s, W * extent // s)`` and there are ``counts[i]``
    crops (default :func:`crop_count`: the full image, 2 half-size crops, 4 quarter-size crops). Returns a flat list, scale by
    scale, of ``(B, K, patch, patch)`` tensors (for non-square images the shorter side is
    ``patch``). ``wrap=True`` lets crops wrap around the border (periodic textures); each batch
    element gets its own crop positions. A crop covering the whole image is the image itself.
    ``resample`` says how crops larger than ``patch`` shrink (:func:`_resize`).
    """
    if images.dim() != 4:
        raise ValueError(f"expected images (B, K, H, W), got {tuple(images.shape)}")
    b, _, h, w = images.shape
    counts = tuple(crop_count(s) for s in scales) if counts is None else tuple(counts)
    if len(counts) != len(scales):
        raise ValueError("counts must have one entry per scale")
    if not 0 < extent <= 1:
        raise ValueError(f"extent must be in (0, 1], got {extent}")
    size = _patch_size(h, w, patch)  # one output size for every scale (aspect of the full image)
    out: list[torch.Tensor] = []
    for s, count in zip(scales, counts):
        ch, cw = max(1, int(h * extent) // s), max(1, int(w * extent) // s)
        crops = _resize(_random_crops(images, int(count), ch, cw, generator, wrap), size, resample)
        out.extend(crops.split(b, dim=0))
    return out


# --------------------------------------------------------------------------------------------
# other losses
# --------------------------------------------------------------------------------------------


def overflow_loss(state: torch.Tensor) -> torch.Tensor:
    """``mean |s - clip(s, -1, 1)|``: keeps NCA states in range (weight about 100)."""
    return (state - state.clamp(-1, 1)).abs().mean()


def _unit_normals_and_height_gradient(normal: torch.Tensor, height: torch.Tensor):
    """Decoded unit normals (B, 3, H-2, W-2) and the height's central-difference gradient
    (B, H-2, W-2) twice (x right, y up the image) over the interior of encoded normals
    (B, 3, H, W) and a height (B, 1, H, W)."""
    n = normal * 2.0 - 1.0
    n = (n / n.norm(dim=1, keepdim=True).clamp_min(1e-6))[:, :, 1:-1, 1:-1]
    h = height[:, 0]
    gx = (h[:, 1:-1, 2:] - h[:, 1:-1, :-2]) / 2
    gy = (h[:, :-2, 1:-1] - h[:, 2:, 1:-1]) / 2
    return n, gx, gy


@torch.no_grad()
def relief_strength(normal: torch.Tensor, height: torch.Tensor, texel: float = 1.0) -> float:
    """The signed strength s of a map pair, encoded normals (1, 3, H, W) and height (1, 1, H, W):
    the least-squares fit of the normals' slopes to s x the height gradient, per texel of the map
    resampled to `texel` of its texels each (so it holds for renders at that texel size).
    s < 0: the pair contradicts itself (an inverted height). The fit is ops.pbr.normal_height_agreement's."""
    if texel != 1.0:
        size = [max(4, round(n / texel)) for n in normal.shape[-2:]]
        mode = "area" if texel > 1.0 else "bilinear"
        normal = F.interpolate(normal * 2.0 - 1.0, size=size, mode=mode) * 0.5 + 0.5
        height = F.interpolate(height, size=size, mode=mode)
    return normal_height_agreement(normal[0].float().permute(1, 2, 0).cpu().numpy(),
                                   height[0, 0].float().cpu().numpy())["strength"]


def normal_height_misfit(normal: torch.Tensor, height: torch.Tensor, strength: float) -> torch.Tensor:
    """How far encoded normals (B, 3, H, W) are from the normals `strength` x a height
    (B, 1, H, W) implies: the mean 1 - cos of their angle over interior texels, 0 when they agree
    (OpenGL: y up the image). `strength` is the exemplar's (:func:`relief_strength` at the
    renders' texel size), so the tie keeps the exemplar's relief, its sign included."""
    n, gx, gy = _unit_normals_and_height_gradient(normal, height)
    implied = torch.stack([-strength * gx, -strength * gy, torch.ones_like(gx)], 1)
    implied = implied / implied.norm(dim=1, keepdim=True)
    return (1.0 - (implied * n).sum(1)).mean()


def autocorrelation(feat: torch.Tensor) -> torch.Tensor:
    """Normalised circular autocorrelation of each channel, zero lag at the centre: ``(B, C, H, W)``.

    The channel mean is removed and the result divided by the zero-lag value (the variance),
    so it lies in ``[-1, 1]``.
    """
    h, w = feat.shape[-2:]
    f = feat.float() - feat.float().mean(dim=(-2, -1), keepdim=True)
    spec = torch.fft.rfft2(f)
    ac = torch.fft.irfft2(spec.real.square() + spec.imag.square(), s=(h, w))
    ac = ac / ac[..., :1, :1].clamp_min(1e-8)
    return torch.fft.fftshift(ac, dim=(-2, -1))


def _center_crop(t: torch.Tensor, h: int, w: int) -> torch.Tensor:
    th, tw = t.shape[-2:]
    y0, x0 = (th - h) // 2, (tw - w) // 2
    return t[..., y0 : y0 + h, x0 : x0 + w]


def _autocorr_l1(ax: torch.Tensor, ay: torch.Tensor) -> torch.Tensor:
    h = min(ax.shape[-2], ay.shape[-2])
    w = min(ax.shape[-1], ay.shape[-1])
    return (_center_crop(ax, h, w) - _center_crop(ay, h, w)).abs().mean()


def autocorrelation_loss(
    feats_x: torch.Tensor | Sequence[torch.Tensor], feats_y: torch.Tensor | Sequence[torch.Tensor]
) -> torch.Tensor:
    """L1 between normalised FFT autocorrelations of feature maps (scalar, mean over taps).

    Accepts one ``(B, C, H, W)`` map or a list (one per tap) on each side; ``feats_y`` may have
    batch 1. If the spatial sizes differ, the centred autocorrelations are cropped to the common size.
    """
    if isinstance(feats_x, torch.Tensor):
        feats_x, feats_y = [feats_x], [feats_y]  # type: ignore[list-item]
    if len(feats_x) != len(feats_y):
        raise ValueError("feats_x and feats_y need the same number of taps")
    terms = [_autocorr_l1(autocorrelation(fx), autocorrelation(fy)) for fx, fy in zip(feats_x, feats_y)]
    return torch.stack(terms).mean()


# --------------------------------------------------------------------------------------------
# the texture loss
# --------------------------------------------------------------------------------------------


def _default_map_slices(k: int) -> list[slice]:
    """3 channels: one RGB map; more: RGB albedo then every further channel as its own 1-channel map."""
    if k == 3:
        return [slice(0, 3)]
    if k < 3:
        raise ValueError(f"an exemplar needs at least 3 channels (RGB), got {k}")
    return [slice(0, 3)] + [slice(i, i + 1) for i in range(3, k)]


def _random_mixes(n: int, k: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` fixed affine maps ``out = W x + b`` from K channels to 3, mapping [0,1]^K into [0,1]^3.

    ``W`` is Gaussian; each output row is rescaled by its positive + negative weight mass and
    offset by the negative mass, so mixes may contrast channels but never leave [0, 1].
    """
    w = torch.randn(n, 3, k, generator=generator, dtype=torch.float64)
    pos = w.clamp(min=0).sum(-1)
    neg = (-w).clamp(min=0).sum(-1)
    scale = (pos + neg).clamp_min(1e-6)
    return (w / scale.unsqueeze(-1)).float(), (neg / scale).float()


class TextureLoss(nn.Module):
    """Multi-scale feature-distribution loss against a fixed exemplar.

    Args:
        exemplar: ``(K, H, W)`` (or ``(1, K, H, W)``) in [0, 1]; K = 3 (RGB) or a PBR stack.
        extractor: a frozen :class:`~nca3d.train.features.FeatureExtractor`.
        distance: ``"emd"`` (relaxed EMD + moments) or ``"swd"`` (sliced Wasserstein).
        patch: every crop is resized to this size (shorter side) before the extractor.
        samples: feature vectors sampled per (view, scale, tap) from each render and from the target.
        pseudo_targets: number of fixed random 3-channel mixes of all K channels (used only when
            there is more than one map); one is added per call so the maps stay aligned.
        target_crops: random exemplar crops per scale (crop size 1, 1/2, 1/4 of the exemplar
            over ``zoom``; a full-size "crop" of the whole exemplar is taken once).
        zoom: a render's full view matches ``1 / zoom`` of the exemplar's side (>= 1): the
            exemplar's features come out ``zoom`` times larger on the lattice.
        seed: seeds the mixes and the target crops/samples.
        map_slices: channel ranges of the separate maps (1 or 3 channels each; 1-channel maps
            are repeated to RGB). Default: RGB, or albedo ``0:3`` + one map per extra channel.
        scales: crop scales (scale ``s`` -> :func:`crop_count` crops of size ``1/s`` per render).
        wrap: render crops wrap around the border (periodic outputs). Exemplar crops never wrap.
        projections: random directions for ``"swd"``.
        target_pool: cached target vectors per (view, scale, tap) (default ``4 * samples``);
            each call draws ``samples`` of them.
        autocorr_weight: weight of the optional auto-correlation loss on the full views
            (scale 1); 0 = off.
        moment_weight: weight of the moment term of ``"emd"`` (1: the paper's loss).
        tap_balance: exponent ``a`` of per-tap weights ``(mean_t b_t / b_t) ** a``, where ``b_t``
            is the distance between two disjoint sets of the exemplar's smallest crops at tap
            ``t``. 0 (default) weighs every tap alike, so the finest taps, whose distances are
            about 100x smaller, barely count; 1 makes every tap count alike relative to the
            exemplar's own variation.
        chunk: crops per extractor call while caching the targets.
        target_sampling: how exemplar crops larger than ``patch`` shrink: ``"area"`` (antialiased)
            or ``"point"`` (a texel per pixel, as renders sample the decoder: then detail finer
            than a pixel aliases alike in both, instead of averaging out in the target only).

    ``forward(images (B, K, H, W), generator=None, iteration=0)`` returns a scalar: the mean over
    views (the maps + one pseudo-target mix) x scales x taps of the batch-mean distance. The mix
    is drawn from ``generator`` when given, else ``iteration % pseudo_targets``. Any render size
    with H, W >= 16 works since crops are resized to ``patch``.
    """

    def __init__(
        self,
        exemplar: torch.Tensor,
        extractor: nn.Module,
        distance: str = "emd",
        patch: int = 256,
        samples: int = 1024,
        pseudo_targets: int = 10,
        target_crops: int = 16,
        seed: int = 0,
        map_slices: Sequence[slice] | None = None,
        scales: Sequence[int] = (1, 2, 4),
        wrap: bool = True,
        projections: int = 64,
        target_pool: int | None = None,
        autocorr_weight: float = 0.0,
        moment_weight: float = 1.0,
        tap_balance: float = 0.0,
        zoom: float = 1.0,
        chunk: int = 8,
        target_sampling: str = "area",
    ):
        super().__init__()
        ex = torch.as_tensor(exemplar)
        if ex.dim() == 4 and ex.shape[0] == 1:
            ex = ex[0]
        if ex.dim() != 3:
            raise ValueError(f"exemplar must be (K, H, W), got {tuple(ex.shape)}")
        if not ex.is_floating_point():
            raise ValueError("exemplar must be a float tensor in [0, 1]")
        if distance not in DISTANCES:
            raise ValueError(f"unknown distance '{distance}'; use one of {DISTANCES}")
        if patch < 8 or samples < 2 or target_crops < 1 or not scales:
            raise ValueError("patch must be >= 8, samples >= 2, target_crops >= 1 and scales non-empty")
        if zoom < 1:
            raise ValueError(f"zoom must be >= 1, got {zoom}")
        if target_sampling not in RESAMPLINGS:
            raise ValueError(f"unknown target_sampling '{target_sampling}'; use one of {RESAMPLINGS}")
        k = ex.shape[0]
        raw = _default_map_slices(k) if map_slices is None else list(map_slices)
        slices = [slice(*s.indices(k)) for s in raw]
        for s in slices:
            if s.step != 1 or s.stop - s.start not in (1, 3):
                raise ValueError(f"map slice {s} must cover 1 or 3 consecutive channels of K={k}")
        self.channels = k
        self.map_slices = slices
        self.extractor = extractor
        self.distance = distance
        self.patch = int(patch)
        self.samples = int(samples)
        self.scales = tuple(int(s) for s in scales)
        if min(self.scales) < 1:
            raise ValueError(f"scales must be >= 1, got {self.scales}")
        self.wrap = bool(wrap)
        self.projections = int(projections)
        self.target_crops = int(target_crops)
        self.target_pool = int(target_pool) if target_pool is not None else 4 * self.samples
        self.autocorr_weight = float(autocorr_weight)
        self.moment_weight = float(moment_weight)
        self.tap_balance = float(tap_balance)
        self.zoom = float(zoom)
        self.target_sampling = target_sampling
        # the auto-correlation term compares full views (scale 1) only
        self._ac_scale = self.scales.index(1) if (1 in self.scales and autocorr_weight > 0) else None
        self.n_mixes = int(pseudo_targets) if len(slices) > 1 else 0
        gen = torch.Generator().manual_seed(int(seed))
        if self.n_mixes:
            mix_w, mix_b = _random_mixes(self.n_mixes, k, gen)
        else:
            mix_w, mix_b = torch.zeros(0, 3, k), torch.zeros(0, 3)
        dev = next((p.device for p in extractor.parameters()), None)
        dev = dev if dev is not None else next((b.device for b in extractor.buffers()), ex.device)
        self.register_buffer("mix_weight", mix_w.to(dev), persistent=False)
        self.register_buffer("mix_bias", mix_b.to(dev), persistent=False)
        self.register_buffer("exemplar", ex.detach().float().clamp(0, 1).to(dev), persistent=False)
        self._cache_targets(gen, max(1, int(chunk)))

    # ---- views ---------------------------------------------------------------------------

    @property
    def n_views(self) -> int:
        """Target views: the maps, then the pseudo-target mixes."""
        return len(self.map_slices) + self.n_mixes

    def _view(self, x: torch.Tensor, v: int) -> torch.Tensor:
        """3-channel image of view ``v`` of ``x (N, K, H, W)``."""
        if v < len(self.map_slices):
            m = x[:, self.map_slices[v]]
            return m.expand(-1, 3, -1, -1) if m.shape[1] == 1 else m
        i = v - len(self.map_slices)
        return torch.einsum("ck,nkhw->nchw", self.mix_weight[i], x) + self.mix_bias[i].view(1, 3, 1, 1)

    def views_for(self, generator: torch.Generator | None = None, iteration: int = 0) -> list[int]:
        """Views compared in one call: every map, plus one pseudo-target mix when there are several maps."""
        views = list(range(len(self.map_slices)))
        if self.n_mixes:
            if generator is not None:
                mix = int(torch.randint(self.n_mixes, (1,), generator=generator, device=_gen_device(generator)))
            else:
                mix = int(iteration) % self.n_mixes
            views.append(len(self.map_slices) + mix)
        return views

    # ---- target cache --------------------------------------------------------------------

    @torch.no_grad()
    def _cache_targets(self, gen: torch.Generator, chunk: int) -> None:
        ex = self.exemplar.unsqueeze(0)
        _, _, h, w = ex.shape
        if int(min(h, w) / self.zoom) // max(self.scales) < 1:
            raise ValueError(f"exemplar {h}x{w} is too small for scale {max(self.scales)} at zoom {self.zoom:g}")
        counts = [1 if s == 1 and self.zoom == 1 else self.target_crops for s in self.scales]
        crops = multiscale_crops(ex, self.patch, gen, self.scales, wrap=False, counts=counts, extent=1 / self.zoom,
                                 resample=self.target_sampling)
        self.tap_count = 0
        offset = 0
        for si, count in enumerate(counts):
            scale_crops = torch.cat(crops[offset : offset + count], 0)  # (count, K, p, q)
            offset += count
            per_crop = math.ceil(self.target_pool / count)
            pools: list[list[torch.Tensor]] = []  # [tap][view] -> (P, C)
            autocorrs: list[list[torch.Tensor]] = []  # [tap][view] -> (C, h, w)
            for v in range(self.n_views):
                parts: list[list[torch.Tensor]] = []
                acs: list[list[torch.Tensor]] = []
                for c0 in range(0, count, chunk):
                    feats = self.extractor(self._view(scale_crops[c0 : c0 + chunk], v))
                    if not parts:
                        parts, acs = [[] for _ in feats], [[] for _ in feats]
                    for t, f in enumerate(feats):
                        parts[t].append(sample_vectors(f, per_crop, gen).reshape(-1, f.shape[1]))
                        if si == self._ac_scale:
                            acs[t].append(autocorrelation(f))
                if not pools:
                    pools, autocorrs = [[] for _ in parts], [[] for _ in parts]
                for t in range(len(parts)):
                    pool = torch.cat(parts[t], 0)
                    if pool.shape[0] > self.target_pool:
                        keep = _stratified_indices(pool.shape[0], self.target_pool, 1, gen, pool.device)[0]
                        pool = pool[keep]
                    pools[t].append(pool)
                    if si == self._ac_scale:
                        autocorrs[t].append(torch.cat(acs[t], 0).mean(0))
            self.tap_count = len(pools)
            for t in range(len(pools)):
                # every view sees the same crops, so the pools have the same size: stack them
                self.register_buffer(f"_target_{si}_{t}", torch.stack(pools[t]).contiguous(), persistent=False)
                if si == self._ac_scale:
                    self.register_buffer(f"_autocorr_{t}", torch.stack(autocorrs[t]), persistent=False)
        # the smallest crops (last scale) give the exemplar's own crop-to-crop distance per tap
        self.register_buffer("tap_weights", self._tap_weights(scale_crops, gen), persistent=False)

    def _tap_weights(self, crops: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """Per-tap loss weights ``(T,)`` from two disjoint halves of ``crops (N, K, p, q)`` (see ``tap_balance``)."""
        if self.tap_balance == 0 or crops.shape[0] < 2:
            return torch.ones(self.tap_count, device=crops.device)
        half = crops.shape[0] // 2
        first, second = (self.extractor(self._view(c, 0)) for c in (crops[:half], crops[half : 2 * half]))
        base = torch.stack([
            self._distance(sample_vectors(a, self.samples, gen).reshape(1, -1, a.shape[1]),
                           sample_vectors(b, self.samples, gen).reshape(1, -1, b.shape[1]), gen)[0]
            for a, b in zip(first, second)
        ]).clamp_min(1e-6)
        return (base.mean() / base).pow(self.tap_balance)

    def target_vectors(self, view: int, scale_index: int, tap: int) -> torch.Tensor:
        """Cached exemplar feature vectors ``(P, C)`` for one view, scale and tap."""
        return getattr(self, f"_target_{scale_index}_{tap}")[view]

    # ---- loss ----------------------------------------------------------------------------

    def _distance(self, x: torch.Tensor, y: torch.Tensor, generator) -> torch.Tensor:
        if self.distance == "emd":
            return relaxed_emd(x, y, self.moment_weight)
        return sliced_wasserstein(x, y, self.projections, generator)

    def _sample_render(self, f: torch.Tensor, n_views: int, batch: int, generator) -> list[torch.Tensor]:
        """Sample vectors of every (view, scale, render) from one tap with ONE index op.

        ``f`` is ``(V * n_crops * B, C, h, w)`` ordered view, crop (scale by scale), render.
        The crops of one scale of a render are pooled. Returns per scale ``(V, B, n_s, C)``.
        """
        n_img, c, h, w = f.shape
        hw = h * w
        n_crops = sum(map(crop_count, self.scales))
        dev = f.device
        vb = torch.arange(n_views, device=dev).view(-1, 1, 1) * n_crops * batch + torch.arange(batch, device=dev).view(
            1, -1, 1
        )  # image index of crop 0
        imgs, pixels, sizes = [], [], []
        start = 0
        for s in self.scales:
            total = crop_count(s) * hw
            n = min(self.samples, total)
            q = _stratified_indices(total, n, n_views * batch, generator, dev).view(n_views, batch, n)
            imgs.append((vb + (start + torch.div(q, hw, rounding_mode="floor")) * batch).reshape(-1))
            pixels.append((q % hw).reshape(-1))
            sizes.append(n)
            start += crop_count(s)
        vecs = f.reshape(n_img, c, hw)[torch.cat(imgs), :, torch.cat(pixels)]  # (L, C)
        parts = vecs.split([n_views * batch * n for n in sizes], dim=0)
        return [p.view(n_views, batch, n, c) for p, n in zip(parts, sizes)]

    def forward(
        self, images: torch.Tensor, generator: torch.Generator | None = None, iteration: int = 0
    ) -> torch.Tensor:
        """Loss of full renders ``(B, K, H, W)``: crops them with :func:`multiscale_crops`, then :meth:`score`."""
        if images.dim() != 4 or images.shape[1] != self.channels:
            raise ValueError(f"expected renders (B, {self.channels}, H, W), got {tuple(images.shape)}")
        h, w = images.shape[-2:]
        if min(h, w) // max(self.scales) < 1:
            raise ValueError(f"render {h}x{w} is too small for scale {max(self.scales)}")
        crops = multiscale_crops(images, self.patch, generator, self.scales, wrap=self.wrap)
        return self.score(crops, generator, iteration)

    def score(
        self, crops: Sequence[torch.Tensor], generator: torch.Generator | None = None, iteration: int = 0
    ) -> torch.Tensor:
        """Loss of ready-made crops in :func:`multiscale_crops` layout.

        ``crops``: for each scale ``s`` in ``self.scales``, ``crop_count(s)`` tensors ``(B, K, p, q)`` covering
        ``1/s`` of the texture (normally ``p = q = patch``; all the same size). Returns a scalar.
        """
        n_crops = sum(map(crop_count, self.scales))
        if len(crops) != n_crops:
            raise ValueError(f"expected {n_crops} crops (scales {self.scales}), got {len(crops)}")
        shape = tuple(crops[0].shape)
        if len(shape) != 4 or shape[1] != self.channels or any(tuple(c.shape) != shape for c in crops):
            raise ValueError(
                f"crops must all be (B, {self.channels}, p, q) of one size, got {[tuple(c.shape) for c in crops]}"
            )
        b = shape[0]
        views = self.views_for(generator, iteration)
        nv = len(views)
        x = torch.cat(list(crops), 0)  # (n_crops * B, K, p, q), crop-major
        feats = self.extractor(torch.cat([self._view(x, v) for v in views], 0))
        view_index = torch.tensor(views, device=self.mix_weight.device)

        terms, ac_terms = [], []
        for t, f in enumerate(feats):
            for si, xs in enumerate(self._sample_render(f, nv, b, generator)):
                pool = getattr(self, f"_target_{si}_{t}").index_select(0, view_index)  # (V, P, C)
                if pool.shape[1] > self.samples:
                    idx = _stratified_indices(pool.shape[1], self.samples, nv, generator, pool.device)
                    pool = torch.gather(pool, 1, idx.unsqueeze(-1).expand(-1, -1, pool.shape[2]))
                d = self._distance(xs, pool.unsqueeze(1).to(xs.dtype), generator)  # (V, B)
                terms.append(d.mean(1) * self.tap_weights[t])
            if self._ac_scale is not None:
                start = sum(map(crop_count, self.scales[: self._ac_scale]))
                full = f.view(nv, n_crops, b, *f.shape[1:])[:, start]  # (V, B, C, h, w)
                target = getattr(self, f"_autocorr_{t}").index_select(0, view_index).unsqueeze(1)
                ac_terms.append(_autocorr_l1(autocorrelation(full), target))
        loss = torch.cat(terms).mean()
        if ac_terms:
            loss = loss + self.autocorr_weight * torch.stack(ac_terms).mean()
        return loss
