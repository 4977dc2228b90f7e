"""User-facing errors: one clear line, no traceback (the CLI prints it and exits 2)."""


class NCA3DError(Exception):
    """A problem the user can fix: bad input, a missing optional dependency or file."""


def listed(text: str | None) -> list[str]:
    """The comma-separated entries of an option's text, stripped, empty ones dropped (None -> [])."""
    return [part.strip() for part in (text or "").split(",") if part.strip()]


def whole_numbers(text: str | None, example: str, option: str = "") -> list[int]:
    """The comma-separated whole numbers of an option's text (None or "" -> []), or one line naming
    the text (after `option` where given) and an example."""
    try:
        return [int(part) for part in listed(text)]
    except ValueError:
        raise NCA3DError(f"{option + ' ' if option else ''}'{text}' is not a comma-separated list of whole "
                         f"numbers, for example {example}") from None


def require(module: str, extra: str | None, purpose: str):
    """Import a dependency, or raise one line naming how to install it: the pip extra that provides
    it, or (extra None: a package nca3d installs itself) the package. Any failure to import counts
    (a missing module, a missing system library, a broken install)."""
    import importlib

    package = module.split(".")[0]
    try:
        return importlib.import_module(module)
    except Exception as exc:  # noqa: BLE001 - ImportError, OSError, ... all mean "not usable here"
        detail = " ".join(str(exc).split()) or type(exc).__name__
        how = f"pip install 'nca3d[{extra}]'" if extra else f"pip install {package} (nca3d depends on it)"
        raise NCA3DError(f"{purpose} needs the package '{package}' ({detail}); install it with: {how}") from None
