"""The `simclrv2` command line (`simclrv2.cli.main.main` is the entry point)."""

from simclrv2.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
