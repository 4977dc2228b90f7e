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
