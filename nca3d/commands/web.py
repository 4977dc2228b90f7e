"""`nca3d web`: write a self-contained page that grows models live in the browser (WebGL2), and
optionally serve it on 127.0.0.1. The page itself is nca3d.export.web's."""

from __future__ import annotations

import sys
from pathlib import Path

from ..errors import NCA3DError, listed
from ..progress import Progress


def add_arguments(parser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", help="a .nca3d file or bundled model name; several joined by commas (a model picker)")
    source.add_argument("--library", action="store_true", help="every bundled model (see `nca3d models`)")
    parser.add_argument("--mesh", default="", help="mesh models grow on this mesh: rock, torus, capsule or a mesh file, "
                                                   "remeshed to the model's cell count (default: the model's "
                                                   "training icosphere)")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder (open DIR/index.html)")
    parser.add_argument("--serve", action="store_true", help="then serve DIR on 127.0.0.1 until Ctrl-C")
    parser.add_argument("--port", type=int, default=8000, help="the --serve port (default 8000; 0: any free port)")
    parser.add_argument("--progress", default="bar", choices=["bar", "json", "none"],
                        help="bar (stderr), json (JSON lines on stdout) or none")
    parser.set_defaults(run=run)


def model_sources(model: str | None, library: bool) -> list[tuple[str, str]]:
    """[(name, path)] of the models to export; one line naming the problem otherwise."""
    from ..models import library_models, resolve_model

    if library:
        found = library_models()
        if not found:
            raise NCA3DError("no bundled models are installed, so --library has nothing to export; "
                             "pass --model PATH instead")
        return [(name, str(path)) for name, path in sorted(found.items())]
    names = listed(model)
    if not names:
        raise NCA3DError("--model is empty; pass a model name or path (several joined by commas)")
    sources = []
    for name in names:
        path = resolve_model(name)
        if not path.is_file():
            raise NCA3DError(f"model file '{path}' not found; check the path, or use a bundled name "
                             f"(see `nca3d models`)")
        sources.append((path.stem if path == Path(name) else name, str(path)))  # a file: its stem
    return sources


def check_mesh(mesh: str) -> None:
    from ..ops.demo_meshes import DEMO_MESHES

    if mesh and mesh not in DEMO_MESHES and not Path(mesh).is_file():
        raise NCA3DError(f"mesh '{mesh}' is neither a mesh file nor a demo mesh; pass a mesh path or one of "
                         f"{', '.join(DEMO_MESHES)}")


def check_port(port: int) -> None:
    if not 0 <= port <= 65535:
        raise NCA3DError(f"--port {port} is not a port number; use 1024-65535 (or 0 for any free port)")


def run(args) -> int:
    from ..export.web import export_web, page_size

    check_port(args.port)
    check_mesh(args.mesh)
    sources = model_sources(args.model, args.library)
    server = open_server(args.out, args.port) if args.serve else None  # a busy port fails before the export
    try:
        progress = Progress(args.progress)
        files = export_web(sources, args.out, args.mesh or None, progress)
        progress.done(files)
        if args.progress != "json":
            print(f"nca3d web: {len(sources)} model(s), {page_size(files) / 1024:.0f} kB in {args.out}; "
                  f"open {Path(args.out).resolve() / 'index.html'}", file=sys.stderr)
        if server is not None:
            serve(server)
    finally:
        if server is not None:
            server.server_close()
    return 0


def open_server(folder: str, port: int):
    """An HTTP server for `folder` bound to 127.0.0.1:port (not yet serving)."""
    import functools
    import http.server

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format, *args):
            pass

    handler = functools.partial(Quiet, directory=str(Path(folder).resolve()))
    try:
        return http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
    except OSError as exc:
        raise NCA3DError(f"cannot serve on 127.0.0.1:{port} ({exc.strerror or exc}); choose another --port "
                         f"(0 picks a free one)") from None


def serve(server) -> None:
    """Serve until Ctrl-C, printing the address first."""
    host, port = server.server_address[:2]
    print(f"serving on http://{host}:{port}/ (Ctrl-C to stop)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("stopped", flush=True)
