"""The `saliency-detect` command line: `saliency-detect --help` lists its subcommands."""

from saliency_detect.cli._main import build_parser, main

__all__ = ["build_parser", "main"]
