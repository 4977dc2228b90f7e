"""nca3d: self-organising neural textures for meshes, volumes and 2D maps."""

__version__ = "0.1.0"

from .core.model import Model, ModelConfig
from .core.nca import make_generator
from .device import resolve_device
from .errors import NCA3DError
from .io.model_file import load_model, save_model
from .lattices import Grid2D, Grid3D, MeshLattice, SurfacePoints, icosphere

__all__ = [
    "__version__", "NCA3DError", "resolve_device", "load_model", "save_model",
    "Grid2D", "Grid3D", "MeshLattice", "SurfacePoints", "icosphere", "Model", "ModelConfig",
    "make_generator",
]
