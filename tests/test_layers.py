"""The package's layering, read from its imports with `ast`: no import circle between modules, and no
module importing from a higher layer, as ARCHITECTURE.md's layer table says (the test reads the
table itself, so the document and the test cannot drift apart). Every import counts, at module
level or inside a function. The Blender add-on (blender_addon/) has no layer table; it is held to no
import circle (config at its bottom: where the backend is and where files go)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "nca3d"
ADDON = ROOT / "blender_addon"


def layer_table() -> list[tuple[int, str, list[str]]]:
    """(rank, name, paths) per row of ARCHITECTURE.md's layer table: | N name | `path`, ... | ... |."""
    rows = []
    for line in (ROOT / "ARCHITECTURE.md").read_text(encoding="utf-8").splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        match = re.fullmatch(r"(\d+) (.+)", cells[0]) if len(cells) >= 3 else None
        if match:
            rows.append((int(match.group(1)), match.group(2), re.findall(r"`(nca3d/[^`]*)`", cells[1])))
    return rows


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules(package: Path = PACKAGE) -> dict[str, Path]:
    return {module_name(path): path for path in sorted(package.rglob("*.py"))}


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The nca3d modules that `path` (module `name`) imports, anywhere in it."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            submodules = {f"{target}.{alias.name}" for alias in node.names if f"{target}.{alias.name}" in known}
            found |= submodules
            if len(submodules) < len(node.names):  # names defined in the package itself (not only submodules)
                found.add(target)
    return {module for module in found if module in known and module != name}


def graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    found = modules(package)
    return {name: imports(name, path, set(found)) for name, path in found.items()}


def rows_of(names) -> dict[str, tuple[int, str]]:
    """Each module's (rank, row name): the row whose path holds it most closely."""
    table = layer_table()
    placed = {}
    for name in names:
        path = name.replace(".", "/")
        best = None
        for rank, row, paths in table:
            for entry in paths:
                entry = entry.rstrip("/").removesuffix(".py")
                if path == entry or path.startswith(entry + "/") or (entry == "nca3d/__init__" and path == "nca3d"):
                    if best is None or len(entry) > best[0]:
                        best = (len(entry), rank, row)
        if best:
            placed[name] = best[1:]
    return placed


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on.add(node)
        for other in sorted(edges[node]):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return out


def test_the_layer_table_places_every_module():
    table = layer_table()
    assert len(table) >= 6, "ARCHITECTURE.md's layer table was not found"
    found = modules()
    placed = rows_of(found)
    assert sorted(set(found) - set(placed)) == [], "modules in no layer of ARCHITECTURE.md: place them in its table"
    listed = [entry for _, _, paths in table for entry in paths]
    assert [entry for entry in listed if not (ROOT / entry).exists()] == [], "ARCHITECTURE.md names paths that are gone"


def test_no_import_circles():
    assert cycles(graph()) == []


def test_no_import_circles_in_the_blender_addon():
    edges = graph(ADDON)
    assert "blender_addon.config" in edges and "blender_addon.backend" in edges["blender_addon.config"]
    assert cycles(edges) == []


def test_no_import_from_a_higher_layer_or_a_sibling_row():
    """A module imports its own row and the rows of lower rank; two rows of the same rank (the commands
    and the benches) do not import each other."""
    edges = graph()
    placed = rows_of(edges)
    wrong = [f"{a} ({placed[a][1]}) imports {b} ({placed[b][1]})"
             for a, targets in sorted(edges.items()) for b in sorted(targets)
             if placed[b][0] > placed[a][0] or (placed[b][0] == placed[a][0] and placed[b][1] != placed[a][1])]
    assert wrong == []


def test_the_checks_catch_a_circle_and_an_upward_import():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    placed = rows_of(["nca3d.core.model", "nca3d.cli"])
    assert placed["nca3d.core.model"][0] < placed["nca3d.cli"][0]
