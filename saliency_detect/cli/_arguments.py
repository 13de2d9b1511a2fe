"""Argument types shared by the subcommands: counts, seeds, sizes and output paths checked as parsed.

A value out of range stops `argparse` with the usage line and a message naming the
option, exit status 2, before any work starts (`--size -3` used to attack 1,997 of 2,000
images and exit 0).
"""

from __future__ import annotations

import argparse
import math
import os
from pathlib import Path


def _number(text: str, kind, what: str):
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if kind is float and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
    return value


def positive_int(text: str) -> int:
    """An integer >= 1 (a count of images, epochs, a batch size)."""
    value = _number(text, int, "a positive integer")
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def random_seed(text: str) -> int:
    """A random seed: an integer >= 0."""
    value = _number(text, int, "a seed, an integer >= 0")
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a seed, an integer >= 0, got {text!r}")
    return value


def positive_float(text: str) -> float:
    """A finite number > 0 (a perturbation size, a learning rate)."""
    value = _number(text, float, "a positive number")
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def fraction(text: str) -> float:
    """A number in [0, 1) (label smoothing)."""
    value = _number(text, float, "a number in [0, 1)")
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1), got {text!r}")
    return value


def non_negative_float(text: str) -> float:
    """A finite number >= 0 (weight decay)."""
    value = _number(text, float, "a number >= 0")
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}")
    return value


def _writable_parent(path: Path, text: str) -> None:
    parent = next((p for p in path.absolute().parents if p.exists()), None)
    if parent is None:  # pragma: no cover - the root always exists
        return
    if not parent.is_dir():
        raise argparse.ArgumentTypeError(
            f"cannot write {text!r}: {str(parent)!r} is a file, not a folder; choose another path"
        )
    if not os.access(parent, os.W_OK | os.X_OK):
        raise argparse.ArgumentTypeError(
            f"cannot write {text!r}: the folder {str(parent)!r} is not writable; choose another path"
        )


def output_file(text: str) -> str:
    """A file the command will write: not a folder, under a writable folder (checked before any work)."""
    path = Path(text).expanduser()
    if path.is_dir():
        raise argparse.ArgumentTypeError(
            f"{text!r} is a folder; expected a file path (e.g. {str(path / 'out')!r} with its suffix)"
        )
    if path.exists() and not os.access(path, os.W_OK):
        raise argparse.ArgumentTypeError(f"cannot write {text!r}: the file is read-only; choose another path")
    _writable_parent(path, text)
    return text


def output_folder(text: str) -> str:
    """A folder the command will write into: not a file, under a writable folder."""
    path = Path(text).expanduser()
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(
            f"{text!r} is a file; expected a folder (or a path that does not exist yet)"
        )
    if path.is_dir() and not os.access(path, os.W_OK | os.X_OK):
        raise argparse.ArgumentTypeError(
            f"cannot write into {text!r}: the folder is not writable; choose another"
        )
    _writable_parent(path, text)
    return text
