"""Argument parsing and dispatch for `saliency-detect`.

Each subcommand lives in its own module with two functions: `add_parser(subparsers)`
declares its arguments and `run(args)` does the work and returns an exit code. The
heavy imports (TensorFlow) happen inside `run`, so `--help` is instant.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from saliency_detect._version import __version__
from saliency_detect.cli import _attack, _detect, _experiment, _train

_COMMANDS = (_experiment, _train, _attack, _detect)


def build_parser() -> argparse.ArgumentParser:
    """Return the `saliency-detect` argument parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="saliency-detect",
        description=(
            "Detect adversarial images by how they bend a classifier's saliency. "
            "Run `saliency-detect COMMAND --help` for a command's options."
        ),
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the full traceback when a command fails")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in _COMMANDS:
        command.add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run `saliency-detect` with `argv` (default: `sys.argv[1:]`) and return its exit code.

    A failure ends in one line on stderr naming what went wrong and exit status 2 (130
    after Ctrl-C); `saliency-detect --debug COMMAND ...` shows the traceback instead.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv  # the command line as given, for the records commands write (model cards)
    # Quiet TensorFlow's C++ start-up chatter for this process only, unless the user set it.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        return args.run(args)
    except KeyboardInterrupt:
        print(
            f"saliency-detect {args.command}: interrupted. Finished work was kept; "
            "rerun the same command to resume.",
            file=sys.stderr,
        )
        return 130
    except Exception as e:
        # A user's mistake (a bad file, path or argument) ends in one line, exit status 2.
        if args.debug:
            raise
        print(f"saliency-detect {args.command}: error: {_one_line(e)}", file=sys.stderr)
        return 2


def _one_line(error: Exception) -> str:
    """The error's message on one line; errors the library does not raise itself say how to see more."""
    text = " ".join(str(error).split()) or type(error).__name__
    if isinstance(error, (ValueError, TypeError, OSError)):
        return text
    return f"{type(error).__name__}: {text} (run with --debug for the traceback)"
