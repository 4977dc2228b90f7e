"""Renderers: ray-marched volumes (training and previews)."""
