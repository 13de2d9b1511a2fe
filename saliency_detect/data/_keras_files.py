"""MNIST and CIFAR-10 in the layouts Keras caches, and the embedded MNIST sample."""

from __future__ import annotations

import os
import zipfile
from importlib import resources
from pathlib import Path

import keras
import numpy as np

from saliency_detect.data._dataset import CIFAR10_CLASSES, MNIST_CLASSES, Dataset, from_uint8

ENV_VAR = "SALIENCY_DETECT_DATA"
_KEYS = ("x_train", "y_train", "x_test", "y_test")
_EXPECTED = {
    # name: (files to look for, image shape, class names, what to tell the user)
    "mnist": (
        ("mnist.npz",),
        (28, 28),
        MNIST_CLASSES,
        "mnist.npz (the file keras.datasets.mnist.load_data() caches)",
    ),
    "cifar10": (
        ("cifar10.npz", "cifar10-subset.npz", "cifar-10-batches-py", "cifar-10-batches-py-target"),
        (32, 32, 3),
        CIFAR10_CLASSES,
        "cifar10.npz or cifar10-subset.npz (uint8 arrays x_train, y_train, x_test, y_test), "
        "or the cifar-10-batches-py folder of cifar-10-python.tar.gz",
    ),
}


class DatasetNotFoundError(FileNotFoundError):
    """A data set is in none of the places searched and could not be downloaded."""


def keras_cache_dir() -> Path:
    """Return the folder where Keras caches data sets (`$KERAS_HOME/datasets`)."""
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return Path(home) / "datasets"


def search_dirs(data_dir: str | os.PathLike[str] | None) -> list[tuple[str, Path]]:
    """Return the folders searched, in order, each with a description of where it came from."""
    dirs: list[tuple[str, Path]] = []
    if data_dir is not None:
        dirs.append(("data_dir", Path(data_dir).expanduser()))
    if os.environ.get(ENV_VAR):
        dirs.append((f"${ENV_VAR}", Path(os.environ[ENV_VAR]).expanduser()))
    dirs.append(("Keras's cache", keras_cache_dir()))
    return dirs


def load_mnist_sample() -> Dataset:
    """Load the MNIST subset shipped inside the package."""
    ref = resources.files("saliency_detect.data").joinpath("mnist_sample.npz")
    with resources.as_file(ref) as path:
        return from_uint8("mnist-sample", _read_npz(Path(path), "mnist"), MNIST_CLASSES, str(path))


def load_keras_dataset(name: str, *, data_dir: str | os.PathLike[str] | None, download: bool) -> Dataset:
    """Find `name` ("mnist" or "cifar10") in the search folders, else let Keras download it."""
    filenames, _, class_names, what = _EXPECTED[name]
    searched = []
    for origin, folder in search_dirs(data_dir):
        for filename in filenames:
            path = folder / filename
            searched.append(f"{path} ({origin})")
            if path.exists():
                return from_uint8(name, _read(path, name), class_names, str(path))
    download_error = "download=False"
    if download:
        loader = keras.datasets.mnist.load_data if name == "mnist" else keras.datasets.cifar10.load_data
        try:
            (x_train, y_train), (x_test, y_test) = loader()
        except Exception as e:  # Keras raises a bare Exception when the download fails.
            download_error = f"Keras's download failed: {type(e).__name__}: {e}"
        else:
            arrays = {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}
            return from_uint8(name, arrays, class_names, f"downloaded by keras.datasets.{name}")
    places = "\n".join(f"  - {s}" for s in searched)
    raise DatasetNotFoundError(
        f"Could not find the {name!r} data set. Searched, in order:\n{places}\n"
        f"and did not download it ({download_error}).\n"
        f"To provide it, put {what} in one of those folders: pass `data_dir=...` "
        f"(`--data-dir` on the command line), or set the {ENV_VAR} environment variable "
        "to the folder that holds it, or copy it into Keras's cache, or connect to the "
        "internet so Keras can download it."
    )


def _read(path: Path, name: str) -> dict[str, np.ndarray]:
    if path.is_dir():
        return _read_cifar_batches(path)
    return _read_npz(path, name)


def _read_npz(path: Path, name: str) -> dict[str, np.ndarray]:
    image_shape = _EXPECTED[name][1]
    try:
        f = np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise ValueError(f"{path} is not a readable .npz file ({type(e).__name__}: {e}).") from e
    if not isinstance(f, np.lib.npyio.NpzFile):
        raise ValueError(f"{path} is a single .npy array, not a .npz archive of {list(_KEYS)}.")
    with f:
        missing = [k for k in _KEYS if k not in f.files]
        if missing:
            raise ValueError(
                f"{path} is not a {name} file in the Keras layout: it lacks the arrays "
                f"{missing}. Expected arrays {list(_KEYS)}; found {f.files}."
            )
        try:
            arrays = {k: f[k] for k in _KEYS}
        except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
            raise ValueError(f"{path} is a damaged .npz file ({type(e).__name__}: {e}).") from e
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if x.shape[1:] != image_shape or x.dtype != np.uint8 or len(y) != len(x):
            raise ValueError(
                f"{path} does not hold {name} images: expected uint8 x_{split} of shape "
                f"(N, {', '.join(map(str, image_shape))}) with N labels. Received x_{split} "
                f"{x.dtype}{x.shape} and {len(y)} labels."
            )
    return arrays


def _read_cifar_batches(path: Path) -> dict[str, np.ndarray]:
    # Keras 3 extracts the archive to cifar-10-batches-py-target/cifar-10-batches-py.
    if (path / "cifar-10-batches-py").is_dir():
        path = path / "cifar-10-batches-py"
    # Keras's own reader, which unpickles with a restricted unpickler (no arbitrary code).
    from keras.src.datasets.cifar import load_batch

    try:
        parts = [load_batch(str(path / f"data_batch_{i}")) for i in range(1, 6)]
        x_test, y_test = load_batch(str(path / "test_batch"))
    except (OSError, KeyError, ValueError, EOFError) as e:
        raise ValueError(
            f"{path} is not a readable CIFAR-10 batches folder: expected data_batch_1 … "
            f"data_batch_5 and test_batch from cifar-10-python.tar.gz ({type(e).__name__}: {e})."
        ) from e
    x_train = np.concatenate([p[0] for p in parts]).transpose(0, 2, 3, 1)
    y_train = np.concatenate([np.asarray(p[1]) for p in parts])
    return {
        "x_train": x_train,
        "y_train": y_train,
        "x_test": np.asarray(x_test).transpose(0, 2, 3, 1),
        "y_test": np.asarray(y_test),
    }
