"""`python -m nca3d.volume ...`: the volume export command (nca3d.commands.volume), runnable as this module."""

if __name__ == "__main__":
    from .commands.volume import main

    raise SystemExit(main())
