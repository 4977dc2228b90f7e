"""Reading user meshes (OBJ, PLY, STL, OFF, GLB, glTF) into one clean triangle mesh."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class SurfaceMesh:
    """A triangle mesh in object space.

    vertices (V, 3) float64; faces (F, 3) int64, counter-clockwise seen from outside;
    uv (V, 2) float64 per vertex (OpenGL convention: v = 0 is the bottom row of an image) or
    None; vertices are duplicated along UV seams, so `uv` is per vertex.
    """

    vertices: np.ndarray
    faces: np.ndarray
    uv: np.ndarray | None = None
    name: str = "mesh"
