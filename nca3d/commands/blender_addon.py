"""`nca3d blender-addon --zip DIR`: build the installable Blender extension zip.

The add-on's source is the `blender_addon/` folder of a checkout, shipped inside the installed
package as `nca3d/blender_addon`. The zip holds its files at the top level (blender_manifest.toml,
__init__.py, ...), without caches or hidden files, with fixed timestamps and permissions, so the
same source always gives the same bytes. Install it in Blender 4.2+ by dragging it onto the
window or with Preferences > Get Extensions > Install from Disk.
"""

from __future__ import annotations

import os
import re
import zipfile
from pathlib import Path

from ..errors import NCA3DError

MANIFEST = "blender_manifest.toml"
EXCLUDED_DIRS = {"__pycache__"}
EXCLUDED_SUFFIXES = (".pyc", ".pyo", ".zip", ".blend1")
ZIP_DATE = (1980, 1, 1, 0, 0, 0)


def addon_folders() -> list[Path]:
    """Where the add-on's source may be: inside the installed package, then the checkout."""
    package = Path(__file__).resolve().parent.parent  # nca3d/
    return [package / "blender_addon", package.parent / "blender_addon"]


def addon_source() -> Path:
    for folder in addon_folders():
        if (folder / MANIFEST).is_file():
            return folder
    raise NCA3DError("the Blender add-on's files are missing from this installation "
                     f"(looked in {', '.join(str(f) for f in addon_folders())}); reinstall nca3d")


def read_manifest(source: Path) -> dict:
    """The manifest's top-level `key = "value"` strings (enough for id and version)."""
    values = {}
    for line in (source / MANIFEST).read_text(encoding="utf-8").splitlines():
        if line.lstrip().startswith("["):
            break
        match = re.match(r'\s*([A-Za-z_]+)\s*=\s*"([^"]*)"', line)
        if match:
            values[match.group(1)] = match.group(2)
    for key in ("id", "version", "schema_version"):
        if key not in values:
            raise NCA3DError(f"'{source / MANIFEST}' has no {key}; the add-on source is damaged")
    return values


def addon_files(source: Path) -> list[Path]:
    """The files that go into the zip, sorted by their posix path."""
    found = []
    for root, dirs, files in os.walk(source):
        dirs[:] = sorted(d for d in dirs if d not in EXCLUDED_DIRS and not d.startswith("."))
        for name in files:
            if name.startswith(".") or name.endswith(EXCLUDED_SUFFIXES):
                continue
            found.append(Path(root) / name)
    return sorted(found, key=lambda p: p.relative_to(source).as_posix())


def build_zip(out_dir, source: Path | None = None) -> Path:
    """Write `<id>-<version>.zip` into out_dir (created if needed) and return its path."""
    source = Path(source) if source is not None else addon_source()
    manifest = read_manifest(source)
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise NCA3DError(f"cannot create the folder '{out}': {exc.strerror or exc}") from None
    target = out / f"{manifest['id']}-{manifest['version']}.zip"
    partial = target.with_name(f".{target.name}.partial")
    try:
        with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
            for path in addon_files(source):
                info = zipfile.ZipInfo(path.relative_to(source).as_posix(), date_time=ZIP_DATE)
                info.compress_type = zipfile.ZIP_DEFLATED
                info.external_attr = (0o100644 << 16)
                info.create_system = 3  # unix, for the permission bits
                archive.writestr(info, path.read_bytes(), compresslevel=9)
        os.replace(partial, target)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise NCA3DError(f"cannot write '{target}': {exc.strerror or exc}") from None
    return target


def add_arguments(parser):
    parser.add_argument("--zip", required=True, metavar="DIR",
                        help="folder to write nca3d-VERSION.zip into (install it in Blender 4.2+ by "
                             "drag-and-drop or Install from Disk)")
    parser.set_defaults(run=run)
    return parser


def run(args) -> int:
    print(build_zip(args.zip))
    return 0
