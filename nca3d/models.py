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


def load_named_model(name_or_path: str, device: str = "auto", domains: tuple[str, ...] = (), refusal: str = ""):
    """The model a command names (a .nca3d path or a bundled name, see resolve_model), loaded on
    the resolved device in eval mode. With `domains`, a model of any other domain is refused in one
    line: "'NAME' is a DOMAIN model; REFUSAL"."""
    from .device import resolve_device
    from .io.model_file import load_model

    model = load_model(resolve_model(name_or_path), device=resolve_device(device)).eval()
    domain = model.config.domain
    if domains and domain not in domains:
        raise NCA3DError(f"'{name_or_path}' is a {'2D' if domain == '2d' else domain} model; {refusal}")
    return model


# --------------------------------------------------------------------------- listing (`nca3d models`)

PROVENANCE_KEYS = ("exemplar", "license", "credit", "iterations", "final_loss", "scale")


def preview_path(model_path: Path) -> Path | None:
    """The gallery image of a bundled model: previews/NAME.png beside its models/ folder, if any."""
    path = Path(model_path).parent.parent / "previews" / f"{Path(model_path).stem}.png"
    return path if path.is_file() else None


def model_entry(name: str, path: Path) -> dict:
    """One library row from a model file's header (no weights are loaded): name, path, domain,
    outputs (the preset), channels (output names), lattice (its kind and grid size or icosphere
    frequency), the provenance keys (scale: the training's lattice and zoom choice) and the preview path.
    A file whose header cannot be read gets an `error` field instead of failing the listing."""
    from .io.model_file import read_header

    entry: dict = {"name": name, "path": str(path)}
    try:
        header, _ = read_header(path)
    except NCA3DError as exc:
        entry["error"] = str(exc)
        return entry
    provenance = header.get("provenance") or {}
    entry.update(domain=header.get("domain"), outputs=(header.get("config") or {}).get("outputs"),
                 channels=[o.get("name") for o in header.get("outputs") or []], lattice=header.get("lattice"))
    entry.update({key: provenance.get(key) for key in PROVENANCE_KEYS})
    material = (provenance.get("config") or {}).get("material")
    if material and entry["exemplar"]:  # a material folder's albedo: name the folder
        entry["exemplar"] = f"{Path(material).name}/{entry['exemplar']}"
    preview = preview_path(path)
    entry["preview"] = str(preview) if preview else None
    return entry


def library_entries() -> list[dict]:
    """Every bundled model as a row (see model_entry), sorted by name."""
    return [model_entry(name, path) for name, path in sorted(library_models().items())]


def _cell(value, digits: int = 3) -> str:
    if value is None or value == "":
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def format_library(entries: list[dict]) -> str:
    """A plain-text table of library rows (what `nca3d models` prints)."""
    if not entries:
        folders = " or ".join(f"'{f}'" for f in library_folders())
        return f"no bundled models installed (looked in {folders})"
    columns = ("name", "domain", "outputs", "exemplar", "license", "credit", "iterations", "final_loss", "preview")
    titles = ("NAME", "DOMAIN", "OUTPUTS", "EXEMPLAR", "LICENCE", "CREDIT", "ITERS", "LOSS", "PREVIEW")
    rows = []
    for entry in entries:
        if "error" in entry:
            rows.append([entry["name"], "unreadable: " + entry["error"]] + [""] * (len(columns) - 2))
            continue
        row = [_cell(entry.get(key)) for key in columns]
        channels = entry.get("channels") or []
        row[2] = f"{row[2]} ({'+'.join(channels)})" if channels else row[2]
        rows.append(row)
    # long cells (a long credit line) overflow their column rather than widening it for every row
    widths = [max([len(titles[i])] + [len(r[i]) for r in rows if len(r[i]) < 60]) for i in range(len(columns))]
    lines = ["  ".join(t.ljust(w) for t, w in zip(titles, widths)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
    return "\n".join(lines)
