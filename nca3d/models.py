"""The bundled model library: `--model` takes a library name (e.g. `volume_default`) or a path."""

from __future__ import annotations

from pathlib import Path

from .errors import NCA3DError


def library_folders() -> list[Path]:
    """Where bundled models live, in order: inside the installed package, then the checkout's assets/."""
    package = Path(__file__).resolve().parent
    return [package / "assets" / "models", package.parent / "assets" / "models"]


def library_models() -> dict[str, Path]:
    """Bundled model names -> files (the first folder that has a name wins)."""
    found: dict[str, Path] = {}
    for folder in library_folders():
        for path in sorted(folder.glob("*.nca3d")) if folder.is_dir() else []:
            found.setdefault(path.stem, path)
    return found


def resolve_model(name_or_path: str) -> Path:
    """A model file path, or a library name -> its path; one clear error line otherwise."""
    path = Path(name_or_path)
    if path.exists() or path.suffix == ".nca3d" or len(path.parts) > 1:
        return path  # load_model reports a missing or bad file itself
    library = library_models()
    if name_or_path in library:
        return library[name_or_path]
    names = ", ".join(sorted(library)) or "none installed"
    raise NCA3DError(f"'{name_or_path}' is neither a model file nor a bundled model ({names}); "
                     f"pass a .nca3d path or one of those names")
