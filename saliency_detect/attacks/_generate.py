"""Adversarial sets cached in HDF5: written batch by batch, resumable, renamed into place when done."""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import inspect
import json
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import h5py
import keras
import numpy as np
import tensorflow as tf
from numpy.typing import ArrayLike

from saliency_detect._distribute import resolve_strategy
from saliency_detect._files import exclusive_lock
from saliency_detect._validation import (
    check_images,
    check_labels,
    check_positive_int,
    model_image_shape,
    validates_once,
)
from saliency_detect._version import __version__
from saliency_detect.attacks._registry import check_params, effective_params, resolve_attack
from saliency_detect.models._io import model_fingerprint
from saliency_detect.models._training import predict_labels

_FORMAT = "saliency_detect.adversarial_set/2"  # /2: a SHA-256 per chunk
# Per-image fields and their stored types; each chunk's checksum covers them in this order.
_FIELDS = {
    "x_adv": "float32",
    "y": "int64",
    "y_adv": "int64",
    "success": "bool",
    "l0": "int64",
    "l2": "float32",
    "linf": "float32",
}
_IDENTITY = ("format", "attack", "params", "model_fingerprint", "data_fingerprint", "chunk_size")


@dataclasses.dataclass(frozen=True, eq=False)
class AdversarialSet:
    """An adversarial set read back from its HDF5 file.

    Attributes:
        x_adv: adversarial images (N, H, W, C), float32.
        index: index of each image's clean original in the `x` given to the generator.
        y: the labels the attack used (true labels, targets, or the model's predictions).
        y_adv: the model's prediction on each adversarial image.
        success: whether the attack succeeded on each image (prediction changed away from
            `y`, or reached `y` for a targeted attack).
        l0: pixels changed (any channel), per image.
        l2: L2 norm of the perturbation, per image.
        linf: L-infinity norm of the perturbation, per image.
        attack: the attack's name.
        params: the attack's parameters.
        model_fingerprint: `models.model_fingerprint` of the model attacked.
    """

    x_adv: np.ndarray
    index: np.ndarray
    y: np.ndarray
    y_adv: np.ndarray
    success: np.ndarray
    l0: np.ndarray
    l2: np.ndarray
    linf: np.ndarray
    attack: str
    params: dict[str, Any]
    model_fingerprint: str

    @property
    def success_rate(self) -> float:
        """Share of images on which the attack succeeded."""
        return float(np.mean(self.success))

    def __repr__(self) -> str:
        return (
            f"AdversarialSet(attack={self.attack!r}, n={len(self.x_adv)}, "
            f"success_rate={self.success_rate:.3f}, params={self.params})"
        )


def _is_lazy(x: Any) -> bool:
    """Whether `x` is an on-disk array read slice by slice (HDF5 dataset, memory map)."""
    return isinstance(x, (h5py.Dataset, np.memmap))


def _chunks(x, chunk_size: int, start: int = 0):
    for begin in range(start, len(x), chunk_size):
        yield begin, min(begin + chunk_size, len(x))


def _data_fingerprint(x, y: np.ndarray | None, *, chunk_size: int, read) -> str:
    """SHA-256 of the images (float32 bytes, read chunk by chunk) and the labels."""
    digest = hashlib.sha256()
    for start, stop in _chunks(x, chunk_size):
        digest.update(np.ascontiguousarray(read(start, stop)).tobytes())
    digest.update(b"no labels" if y is None else np.ascontiguousarray(y).tobytes())
    return digest.hexdigest()


def _norms(x: np.ndarray, x_adv: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    delta = (x_adv - x).reshape(len(x), -1, x.shape[-1])
    l0 = np.count_nonzero(np.any(np.abs(delta) > 0, axis=-1), axis=1)
    return l0.astype(np.int64), np.sqrt((delta**2).sum(axis=(1, 2))), np.abs(delta).max(axis=(1, 2))


def _check_identity(file: h5py.File, expected: dict[str, Any], path: Path) -> None:
    found = {key: file.attrs.get(key) for key in _IDENTITY}
    mismatched = [key for key in _IDENTITY if str(found[key]) != str(expected[key])]
    if mismatched:
        details = "; ".join(
            f"{key}: file has {found[key]!r}, this run {expected[key]!r}" for key in mismatched
        )
        raise ValueError(
            f"{path} was made by another model, data set or attack configuration ({details}). "
            "It is not reused: delete it or write to another path."
        )


@validates_once
def generate_adversarial_set(
    model: keras.Model,
    x: ArrayLike,
    y: ArrayLike,
    attack: str | Callable,
    params: dict[str, Any] | None,
    path: str | os.PathLike[str],
    *,
    chunk_size: int = 256,
    verbose: bool = True,
    strategy: tf.distribute.Strategy | None = None,
) -> Path:
    """Craft adversarial images for all of `x` and cache them in an HDF5 file.

    The file holds `x_adv`, the clean `index`, the labels `y` used, the adversarial
    prediction `y_adv`, `success` flags and the L0 (pixels), L2 and L-infinity norms of
    every perturbation; its attributes hold the attack, its parameters (JSON, completed
    with the attack's defaults), the model's and the data's fingerprints and the library
    version.

    Images are attacked and written `chunk_size` at a time into `PATH.partial`; a killed
    run called again with the same arguments resumes after the last written chunk and
    produces the same file as an uninterrupted run (for attacks that take `random_state`,
    each chunk is seeded from `params["random_state"]`, default 0, and the chunk's
    position). The finished file is renamed to `path` atomically. A finished or partial
    file made by another model, data, attack or parameters is refused, never silently
    reused.

    The cache checks its own content: every chunk is written with a SHA-256 of its
    values, and a file is marked completed only after every chunk has been read back and
    verified. A finished matching file is returned after the same check; chunks that
    fail it (flipped bytes, edited or NaN pixels) are recomputed, with a warning. A file
    too damaged to open (truncated) is refused with its path. While the set is written,
    `PATH.lock` is held, so a second run writing the same path stops with a clear error
    instead of interleaving its writes (this holds with HDF5's file locking switched
    off too); a lock left by a killed run of this machine is taken over.

    Sets larger than memory: pass `x` as an `h5py.Dataset` (or a `numpy.memmap`); it is
    read, validated and attacked `chunk_size` images at a time, so memory stays bounded
    by the chunk, whatever the number of images. Under a `tf.distribute.Strategy` with
    several local replicas (GPUs), each batch of the attack is split over them.

    Args:
        model: the Keras classifier attacked.
        x: clean images (N, H, W, C): an array, or an `h5py.Dataset` / `numpy.memmap`
            read chunk by chunk.
        y: true labels (N,), target classes for a targeted attack, or None for the model's
            predictions.
        attack: an attack name (see `available_attacks()`) or function.
        params: the attack's keyword parameters (e.g. `{"eps": 0.3}`).
        path: where to write the `.h5` file.
        chunk_size: images attacked and written per step.
        verbose: show a progress bar.
        strategy: the `tf.distribute.Strategy` the attack runs under; None takes the
            one the model was built under, else the current one.

    Returns:
        The path of the finished file.

    Raises:
        ValueError: for a file made with another configuration or too damaged to open,
            invalid images, labels or parameters.
        FileExistsError: if another live run is writing `path` (its lock file exists).
        OSError: if the written content does not read back as written (failing storage).

    Examples:
        >>> import numpy as np, tempfile, os
        >>> from saliency_detect.attacks import generate_adversarial_set, load_adversarial_set
        >>> from saliency_detect.models import mnist_net_f
        >>> x = np.random.default_rng(0).random((8, 28, 28, 1), dtype=np.float32)
        >>> path = os.path.join(tempfile.mkdtemp(), "fgsm.h5")
        >>> _ = generate_adversarial_set(mnist_net_f(), x, None, "fgsm", {"eps": 0.1}, path, verbose=False)
        >>> adv = load_adversarial_set(path)
        >>> adv.x_adv.shape, bool(adv.linf.max() <= 0.1 + 1e-6)
        ((8, 28, 28, 1), True)
    """
    name, fn = resolve_attack(attack)
    params = check_params(name, fn, dict(params or {}))
    chunk_size = check_positive_int(chunk_size, "chunk_size")
    clip_range = params.get("clip_range", (0.0, 1.0))
    strategy = resolve_strategy(strategy, model)
    expected_shape = model_image_shape(model)
    if _is_lazy(x):
        if len(x.shape) != 4 or len(x) == 0:
            raise ValueError(
                f"`x` must be a non-empty batch of images of rank 4 (N, H, W, C). Received: shape={x.shape}"
            )
    else:
        x = check_images(x, clip_range=clip_range, expected_shape=expected_shape)

    def read(start: int, stop: int) -> np.ndarray:
        """Images `x[start:stop]` as float32; a lazy `x` is read from disk and validated here."""
        if not _is_lazy(x):
            return x[start:stop]
        name = "x" if start == 0 and stop == len(x) else f"x[{start}:{stop}]"
        return check_images(x[start:stop], name=name, clip_range=clip_range, expected_shape=expected_shape)

    labels = None if y is None else check_labels(y, n=len(x), name="y")
    path = Path(path)
    expected = {
        "format": _FORMAT,
        "attack": name,
        "params": json.dumps(effective_params(fn, params), sort_keys=True, default=str),
        "model_fingerprint": model_fingerprint(model),
        "data_fingerprint": _data_fingerprint(x, labels, chunk_size=chunk_size, read=read),
        "chunk_size": chunk_size,
    }
    with exclusive_lock(path):
        return _write_set(path, expected, model, fn, params, x, read, labels, chunk_size, verbose, strategy)


def _write_set(
    path: Path, expected, model, fn, params, x, read, labels, chunk_size, verbose, strategy
) -> Path:
    """Make `path` hold the verified set: reuse it, repair its damaged chunks, or resume or start it."""
    partial = path.with_name(path.name + ".partial")
    n, n_chunks = len(x), -(-len(x) // chunk_size)
    redo: set[int] = set()
    if path.exists():
        with _open(path, "r") as file:
            _check_identity(file, expected, path)
            redo = set(_damaged_chunks(file, chunk_size))
        if not redo:
            return path
        warnings.warn(
            f"'{path}' is damaged: {len(redo)} of its {n_chunks} chunk(s) of {chunk_size} images do not "
            "match their checksums or hold invalid values. Recomputing those chunks.",
            stacklevel=3,
        )
        os.replace(path, partial)
    path.parent.mkdir(parents=True, exist_ok=True)
    if partial.exists():
        file = _open(partial, "r+")
        try:
            _check_identity(file, expected, partial)
            redo |= set(_damaged_chunks(file, chunk_size))
            if "completed" in file.attrs:
                del file.attrs["completed"]
        except BaseException:
            file.close()
            raise
    else:
        file = h5py.File(partial, "w")
        file.attrs.update(expected)
        file.attrs.update(n_done=0, n_total=n, saliency_detect_version=__version__)
        chunks = (min(chunk_size, n), *x.shape[1:])
        file.create_dataset("x_adv", shape=x.shape, dtype="float32", chunks=chunks, compression="gzip")
        file.create_dataset("index", data=np.arange(n, dtype=np.int64))
        for key, dtype in _FIELDS.items():
            if key != "x_adv":
                file.create_dataset(key, shape=(n,), dtype=dtype)
        file.create_dataset("chunk_sha256", shape=(n_chunks,), dtype="S64")
    takes_seed = "random_state" in inspect.signature(fn).parameters
    base_seed = int(params.get("random_state") or 0)
    with file:
        done = int(file.attrs["n_done"])
        todo = sorted(redo | set(range(-(-done // chunk_size), n_chunks)))
        bar = keras.utils.Progbar(n, unit_name="image") if verbose else None
        finished = n - sum(min(chunk_size, n - i * chunk_size) for i in todo)
        if bar is not None and finished:
            bar.update(finished)
        for i in todo:
            start, stop = i * chunk_size, min((i + 1) * chunk_size, n)
            x_chunk = read(start, stop)
            y_chunk = None if labels is None else labels[start:stop]
            call = dict(params)
            if takes_seed:
                call["random_state"] = base_seed + i
            with strategy.scope():
                x_adv = np.asarray(fn(model, x_chunk, y_chunk, **call), dtype=np.float32)
                predicted = predict_labels(model, x_adv, clip_range=None)
                used = predict_labels(model, x_chunk, clip_range=None) if y_chunk is None else y_chunk
            success = predicted == used if params.get("targeted") else predicted != used
            l0, l2, linf = _norms(x_chunk, x_adv)
            values = {
                "x_adv": x_adv,
                "y": used,
                "y_adv": predicted,
                "success": success,
                "l0": l0,
                "l2": l2,
                "linf": linf,
            }
            values = {key: np.asarray(value, dtype=_FIELDS[key]) for key, value in values.items()}
            for key, value in values.items():
                file[key][start:stop] = value
            # The checksum is written with its chunk, from the values written.
            file["chunk_sha256"][i] = _digest(values).encode("ascii")
            file.attrs["n_done"] = max(int(file.attrs["n_done"]), stop)
            file.flush()
            finished += stop - start
            if bar is not None:
                bar.update(finished)
        # The completed flag is set only on content read back and verified.
        still = _damaged_chunks(file, chunk_size)
        if still:
            raise OSError(
                f"'{partial}' does not read back as written (chunks {still} fail their checksums): the "
                "storage under it is unreliable. Write the set to another disk."
            )
        file.attrs["completed"] = datetime.datetime.now(datetime.timezone.utc).isoformat()
    os.replace(partial, path)
    return path


def _digest(values: dict[str, np.ndarray]) -> str:
    """SHA-256 of one chunk's fields, in `_FIELDS` order."""
    digest = hashlib.sha256()
    for key in _FIELDS:
        digest.update(np.ascontiguousarray(values[key]).tobytes())
    return digest.hexdigest()


def _damaged_chunks(file: h5py.File, chunk_size: int) -> list[int]:
    """Indices of the written chunks whose content is unreadable, invalid or fails its checksum."""
    n, done = len(file["index"]), int(file.attrs["n_done"])
    low, high = json.loads(file.attrs["params"]).get("clip_range", (0.0, 1.0)) or (-np.inf, np.inf)
    damaged = []
    for i in range(-(-done // chunk_size)):
        start, stop = i * chunk_size, min((i + 1) * chunk_size, n)
        try:
            values = {key: file[key][start:stop] for key in _FIELDS}
            stored = file["chunk_sha256"][i].decode("ascii")
        except (OSError, KeyError, ValueError, UnicodeDecodeError):
            damaged.append(i)
            continue
        x_adv = values["x_adv"]
        valid = np.isfinite(x_adv).all() and x_adv.min() >= low - 1e-6 and x_adv.max() <= high + 1e-6
        if not valid or _digest(values) != stored:
            damaged.append(i)
    return damaged


def _open(path: Path, mode: str) -> h5py.File:
    """Open a cached set, or raise naming the file and the fix when it cannot be read."""
    try:
        return h5py.File(path, mode)
    except OSError as e:
        raise ValueError(
            f"'{path}' is damaged and cannot be opened ({e}). Delete it and run again to recompute it."
        ) from e


def load_adversarial_set(path: str | os.PathLike[str]) -> AdversarialSet:
    """Read a finished file written by `generate_adversarial_set`.

    Raises:
        FileNotFoundError: if there is no file at `path` (a `.partial` file is unfinished:
            rerun the generator to complete it).
        ValueError: if the file is not an adversarial set, was written by another version,
            or is damaged (a chunk fails its checksum or holds NaN or out-of-range pixels).
    """
    path = Path(path)
    if not path.is_file():
        hint = (
            " An unfinished .partial file exists: rerun generate_adversarial_set."
            if Path(str(path) + ".partial").exists()
            else ""
        )
        raise FileNotFoundError(f"No adversarial set at '{path}'.{hint}")
    try:
        with h5py.File(path, "r") as file:
            if file.attrs.get("format") != _FORMAT:
                found = file.attrs.get("format")
                if isinstance(found, str) and found.startswith("saliency_detect.adversarial_set/"):
                    raise ValueError(
                        f"'{path}' was written by another version of saliency_detect ({found}, this one "
                        f"reads {_FORMAT}). Delete it and rerun the generator to recompute it."
                    )
                raise ValueError(f"'{path}' is not an adversarial set written by saliency_detect.")
            damaged = _damaged_chunks(file, int(file.attrs["chunk_size"]))
            if damaged:
                raise ValueError(
                    f"'{path}' is damaged: chunk(s) {damaged} do not match their checksums or hold invalid "
                    "values. Rerun generate_adversarial_set (or `saliency-detect attack`) with the same "
                    "arguments to recompute them."
                )
            arrays = {
                key: file[key][()] for key in ("x_adv", "index", "y", "y_adv", "success", "l0", "l2", "linf")
            }
            return AdversarialSet(
                **arrays,
                attack=str(file.attrs["attack"]),
                params=json.loads(file.attrs["params"]),
                model_fingerprint=str(file.attrs["model_fingerprint"]),
            )
    except (OSError, KeyError) as e:
        raise ValueError(f"'{path}' is not a readable adversarial set ({type(e).__name__}: {e}).") from e
