"""Lattices of cells: each answers perceive(state) and locate(points)."""

from .base import Lattice, Located, cartesian_local, triangle_local
from .grid import Grid2D, Grid3D, GridLattice
from .mesh import MeshLattice, SurfacePoints, icosphere

__all__ = [
    "Lattice", "Located", "cartesian_local", "triangle_local",
    "Grid2D", "Grid3D", "GridLattice", "MeshLattice", "SurfacePoints", "icosphere",
]
