"""User-facing errors: one clear line, no traceback (the CLI prints it and exits 2)."""


class NCA3DError(Exception):
    """A problem the user can fix: bad input, a missing optional dependency or file."""


def require(module: str, extra: str, purpose: str):
    """Import an optional dependency, or raise one line naming the pip extra that provides it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise NCA3DError(
            f"{purpose} needs the optional package '{module.split('.')[0]}' ({exc}); "
            f"install it with: pip install 'nca3d[{extra}]'"
        ) from None
