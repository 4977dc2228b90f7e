"""Relations between PBR maps: the normal a height field implies, and how far a normal map is from it.

Maps are tileable images: derivatives are periodic central differences. Normals are encoded
(0.5 + n / 2) in the OpenGL convention: x right, y up the image (rows run down), z out.
"""

from __future__ import annotations

import numpy as np


def height_gradient(height: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(dh/dx, dh/dy) per texel of a height (H, W), y up; periodic central differences."""
    height = np.asarray(height, dtype=np.float64)
    dx = (np.roll(height, -1, axis=1) - np.roll(height, 1, axis=1)) / 2
    dy = -(np.roll(height, -1, axis=0) - np.roll(height, 1, axis=0)) / 2
    return dx, dy


def normals_from_height(height: np.ndarray, strength: float) -> np.ndarray:
    """Encoded normals (H, W, 3) float32 of `strength` x height (H, W): n ∝ (-s h_x, -s h_y, 1)."""
    dx, dy = height_gradient(height)
    n = np.stack([-strength * dx, -strength * dy, np.ones_like(dx)], axis=-1)
    n /= np.linalg.norm(n, axis=-1, keepdims=True)
    return (0.5 + 0.5 * n).astype(np.float32)


def normal_height_agreement(normal: np.ndarray, height: np.ndarray) -> dict:
    """How well an encoded normal map (H, W, 3) agrees with a height map (H, W) or (H, W, 1).

    The height's units are unknown, so its strength s is fitted: the least-squares s with
    slopes(normal) ≈ s * gradient(height), slopes = -(n_x, n_y) / n_z. Returns the mean and median
    angle in degrees between the decoded normals and those s x height implies, the strength, and
    the correlation of the slopes with the gradient (x and y pooled). s <= 0 means the two
    contradict each other (an inverted height, or unrelated maps).
    """
    height = np.asarray(height, dtype=np.float64).reshape(np.shape(height)[:2])
    n = np.asarray(normal, dtype=np.float64)[..., :3] * 2.0 - 1.0
    n /= np.maximum(np.linalg.norm(n, axis=-1, keepdims=True), 1e-12)
    nz = np.maximum(n[..., 2], 0.05)
    slopes = np.stack([-n[..., 0] / nz, -n[..., 1] / nz]).reshape(2, -1)
    gradient = np.stack(height_gradient(height)).reshape(2, -1)
    energy = float((gradient ** 2).sum())
    strength = float((slopes * gradient).sum() / energy) if energy > 0 else 0.0
    implied = normals_from_height(height, strength).astype(np.float64) * 2.0 - 1.0
    cosine = np.clip((implied * n).sum(axis=-1), -1.0, 1.0)
    angles = np.degrees(np.arccos(cosine))
    s, g = slopes.ravel() - slopes.mean(), gradient.ravel() - gradient.mean()
    correlation = float((s * g).sum() / np.sqrt((s * s).sum() * (g * g).sum())) if energy > 0 else 0.0
    return {"mean_angle_deg": float(angles.mean()), "median_angle_deg": float(np.median(angles)),
            "strength": strength, "slope_correlation": correlation}


# --- deriving missing maps ----------------------------------------------------------------------
# Published kinds of method, each in its plain form:
# - height from a normal map: Frankot & Chellappa (1988), the least-squares integrable surface of
#   the normal's slopes, solved in the Fourier domain (maps tile, so the periodic form is exact);
# - ambient occlusion from height: horizon-based AO (Bavoil, Sainz & Dimitrov 2008), the mean
#   sine of the horizon angle over directions, marched on the height field itself;
# - height from one photo: frequency-separated luminance ("shape from shading" as texture tools do
#   it): the band between texel noise and lighting gradients, bright read as high;
# - roughness from one photo: local albedo statistics: dark, busy texels rougher than bright, even
#   ones (the heuristic of photo-to-material tools), spread over a plausible dielectric range.

DERIVED_RELIEF = 0.3  # mean normal tilt |n_xy| given to a height derived from an albedo alone
AO_DIRECTIONS, AO_RADIUS = 8, 16  # horizon search: directions, and reach in texels


def normal_slopes(normal: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The height slopes (h_x, h_y), y up, that an encoded normal map (H, W, 3) stands for."""
    n = np.asarray(normal, dtype=np.float64)[..., :3] * 2.0 - 1.0
    nz = np.maximum(n[..., 2], 0.05)
    return -n[..., 0] / nz, -n[..., 1] / nz


def _normalise(values: np.ndarray) -> np.ndarray:
    low, high = float(values.min()), float(values.max())
    return ((values - low) / max(high - low, 1e-12)).astype(np.float32)


def height_from_normal(normal: np.ndarray) -> tuple[np.ndarray, float]:
    """Frankot-Chellappa integration of an encoded normal map (H, W, 3): the height (H, W) in [0, 1]
    whose central-difference gradient best fits the normal's slopes, and the strength s that
    turns it back into those slopes (normals_from_height(height, s) ≈ normal)."""
    slope_x, slope_y = normal_slopes(normal)
    h, w = slope_x.shape
    # height_gradient in Fourier terms: d/dx -> i sin(u), d/dy (y up, rows down) -> -i sin(v)
    sin_u = np.sin(2 * np.pi * np.fft.fftfreq(w))[None, :]
    sin_v = np.sin(2 * np.pi * np.fft.fftfreq(h))[:, None]
    denominator = sin_u ** 2 + sin_v ** 2
    denominator[denominator < 1e-12] = np.inf  # the mean and the Nyquist rows: unknowable, set to 0
    spectrum = (-1j * sin_u * np.fft.fft2(slope_x) + 1j * sin_v * np.fft.fft2(slope_y)) / denominator
    height = np.real(np.fft.ifft2(spectrum))
    span = float(height.max() - height.min())
    return _normalise(height), span


def _luminance(albedo: np.ndarray) -> np.ndarray:
    albedo = np.asarray(albedo, dtype=np.float64)
    return albedo[..., :3] @ np.array([0.2126, 0.7152, 0.0722]) if albedo.ndim == 3 else albedo


def _blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """Periodic Gaussian blur of (H, W) by `sigma` texels (in the Fourier domain)."""
    h, w = image.shape
    fy, fx = np.fft.fftfreq(h)[:, None], np.fft.fftfreq(w)[None, :]
    kernel = np.exp(-2 * (np.pi * sigma) ** 2 * (fx ** 2 + fy ** 2))
    return np.real(np.fft.ifft2(np.fft.fft2(image) * kernel))


def height_from_albedo(albedo: np.ndarray, dark_is_high: bool = False) -> np.ndarray:
    """A height (H, W) in [0, 1] from an albedo (H, W, 3): its luminance band-passed between texel
    noise (sigma 1) and lighting (sigma 1/8 of the size), bright read as high (or, `dark_is_high`,
    dark: light mortar or grout in the recesses)."""
    luminance = _luminance(albedo)
    band = _blur(luminance, 1.0) - _blur(luminance, max(luminance.shape) / 8)
    return _normalise(-band if dark_is_high else band)


def strength_for_relief(height: np.ndarray, tilt: float = DERIVED_RELIEF) -> float:
    """The strength that gives normals_from_height(height, s) a mean tilt |n_xy| of `tilt`."""
    dx, dy = height_gradient(height)
    magnitude = np.hypot(dx, dy)
    low, high = 0.0, 1e4
    for _ in range(60):  # tilt grows with s: bisect
        s = (low + high) / 2
        mean_tilt = float(np.mean(s * magnitude / np.sqrt(1 + (s * magnitude) ** 2)))
        low, high = (s, high) if mean_tilt < tilt else (low, s)
    return (low + high) / 2


def ambient_occlusion(height: np.ndarray, strength: float, directions: int = AO_DIRECTIONS,
                      radius: int = AO_RADIUS) -> np.ndarray:
    """Horizon-based AO (H, W) in [0, 1] (1: open) of a tileable height (H, W) whose slope per
    texel is `strength` x its gradient: 1 - the mean sine of the horizon's elevation."""
    height = np.asarray(height, dtype=np.float64) * strength
    occlusion = np.zeros_like(height)
    steps = np.unique(np.round(np.geomspace(1, radius, 8)).astype(int))
    for angle in np.arange(directions) * 2 * np.pi / directions:
        horizon = np.zeros_like(height)  # tangent of the highest elevation seen so far
        for t in steps:
            dx, dy = int(round(t * np.cos(angle))), int(round(t * np.sin(angle)))
            ahead = np.roll(height, (dy, -dx), axis=(0, 1))  # the texel t away, y up
            horizon = np.maximum(horizon, (ahead - height) / t)
        occlusion += horizon / np.sqrt(1 + horizon ** 2)
    return (1.0 - occlusion / directions).astype(np.float32)


def roughness_from_albedo(albedo: np.ndarray) -> np.ndarray:
    """Roughness (H, W) in [0.35, 0.95] from local albedo statistics: darker and busier (local
    luminance deviation over 4 texels) reads rougher."""
    luminance = _luminance(albedo)
    local_mean = _blur(luminance, 4.0)
    busy = np.sqrt(np.maximum(_blur((luminance - local_mean) ** 2, 4.0), 0.0))
    score = _normalise(busy) - _normalise(local_mean)  # in [-1, 1]
    return (0.65 + 0.3 * np.clip(score, -1.0, 1.0)).astype(np.float32)


def derive_missing_maps(maps: dict[str, np.ndarray], dark_is_high: bool = False
                        ) -> tuple[dict[str, np.ndarray], list[str]]:
    """Fill every PBR map missing from `maps` (float32 in [0, 1]: albedo and normal (H, W, 3),
    others (H, W, 1); albedo required) from those present; a height from the albedo alone reads
    bright as high unless `dark_is_high`. Returns (all maps, one note per map derived)."""
    maps, notes = dict(maps), []
    albedo = maps["albedo"]
    if "height" not in maps:
        if "normal" in maps:
            height, _ = height_from_normal(maps["normal"])
            notes.append("height: integrated from the normal map (Frankot-Chellappa)")
        else:
            height = height_from_albedo(albedo, dark_is_high)
            notes.append(f"height: band-passed luminance of the albedo ({'dark' if dark_is_high else 'bright'} = high"
                         f"{'' if dark_is_high else '; --dark-is-high if light grout or mortar sits in the recesses'})")
        maps["height"] = height[..., None]
    height = maps["height"][..., 0]
    if "normal" in maps:
        # signed: a height whose sign contradicts the normal (high where the normal says low) gets a
        # negative strength, so the AO below follows the relief the normal shows
        strength = normal_height_agreement(maps["normal"], height)["strength"] or strength_for_relief(height)
    else:
        strength = strength_for_relief(height)
        maps["normal"] = normals_from_height(height, strength)
        notes.append(f"normal: from the height's gradient (mean tilt {DERIVED_RELIEF:g})")
    if "roughness" not in maps:
        maps["roughness"] = roughness_from_albedo(albedo)[..., None]
        notes.append("roughness: from local albedo statistics (dark, busy = rough)")
    if "ao" not in maps:
        maps["ao"] = ambient_occlusion(height, strength)[..., None]
        notes.append(f"ao: horizon-based, from the height ({AO_DIRECTIONS} directions, {AO_RADIUS} texels)")
    return maps, notes


def mean_normal_angle(a: np.ndarray, b: np.ndarray) -> float:
    """Mean angle in degrees between two encoded normal maps (H, W, 3)."""
    a, b = (np.asarray(m, dtype=np.float64)[..., :3] * 2.0 - 1.0 for m in (a, b))
    cosine = (a * b).sum(-1) / np.maximum(np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1), 1e-12)
    return float(np.degrees(np.arccos(np.clip(cosine, -1.0, 1.0))).mean())


def derivation_figures(maps: dict[str, np.ndarray]) -> dict[str, float]:
    """How close the derived maps come to a real set's (albedo and normal, maybe height): for the
    normal derived from the albedo alone, its mean angle to the real normal (beside a flat
    normal's, the baseline) and the correlation of its slopes with the real ones; with a real
    height, the correlation with it of the height integrated from the normal and of the height
    from the albedo, and the angle between the real normal and the normal of its integral."""
    albedo_height = height_from_albedo(maps["albedo"])
    albedo_normal = normals_from_height(albedo_height, strength_for_relief(albedo_height))
    flat = np.broadcast_to(np.array([0.5, 0.5, 1.0]), maps["normal"].shape)
    derived, real = (np.concatenate([s.ravel() for s in normal_slopes(n)]) for n in (albedo_normal, maps["normal"]))
    figures = {"albedo_normal_angle_deg": mean_normal_angle(albedo_normal, maps["normal"]),
               "flat_normal_angle_deg": mean_normal_angle(flat, maps["normal"]),
               "albedo_slope_corr": float(np.corrcoef(derived, real)[0, 1])}
    if "height" in maps:
        real_height = np.asarray(maps["height"], dtype=np.float64)[..., 0].ravel()
        integrated, strength = height_from_normal(maps["normal"])
        figures["normal_height_corr"] = float(np.corrcoef(integrated.ravel(), real_height)[0, 1])
        figures["albedo_height_corr"] = float(np.corrcoef(albedo_height.ravel(), real_height)[0, 1])
        figures["normal_roundtrip_angle_deg"] = mean_normal_angle(normals_from_height(integrated, strength),
                                                                  maps["normal"])
    return figures
