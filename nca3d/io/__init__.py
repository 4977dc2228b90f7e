"""Readers and writers: model files, images, meshes, volumes. Every writer is atomic."""
