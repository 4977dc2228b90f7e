"""The files a command writes from a grown model: the volume export (volume), a texture bake's
staged map files (maps) and a textured mesh's files (mesh)."""
