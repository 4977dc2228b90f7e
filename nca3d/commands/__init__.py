"""The commands: one module per `nca3d` subcommand. Each parses and checks its arguments, calls the
layers below (core, io, ops, render, train, export) and reports; none imports another layer's
command or a bench.
"""

from __future__ import annotations

import argparse

from ..errors import NCA3DError


class Parser(argparse.ArgumentParser):
    """argparse that reports a usage error as one NCA3DError line (the CLI prints it and exits 2)."""

    def error(self, message):
        raise NCA3DError(f"{message} (see: {self.prog} --help)")
