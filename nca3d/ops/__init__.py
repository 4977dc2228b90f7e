"""Geometry operations on user meshes: uniform lattice remeshing, UV unwrapping, texel baking."""
