"""`load_dataset`: a data set by name, from the loader that knows where its files are."""

from __future__ import annotations

import os

from saliency_detect.data import _folder, _keras_files
from saliency_detect.data._dataset import Dataset


def available_datasets() -> tuple[str, ...]:
    """Return the names `load_dataset` accepts (`folder:PATH` stands for any folder)."""
    return ("mnist", "mnist-sample", "cifar10", "folder:PATH")


def load_dataset(
    name: str,
    *,
    data_dir: str | os.PathLike[str] | None = None,
    train_size: int | None = None,
    test_size: int | None = None,
    download: bool = True,
    image_size: tuple[int, int] = (224, 224),
    color_mode: str = "rgb",
    test_fraction: float = 0.2,
    random_state: int = 0,
) -> Dataset:
    """Load a data set as float32 images in [0, 1] with integer labels.

    `mnist` and `cifar10` are looked for, in this order, in `data_dir`, in the folder
    named by the `SALIENCY_DETECT_DATA` environment variable, and in Keras's cache
    (`$KERAS_HOME/datasets`, by default `~/.keras/datasets`); only when none holds them
    does Keras's downloader run (unless `download=False`). MNIST is the `mnist.npz`
    that `keras.datasets.mnist.load_data()` caches; CIFAR-10 is `cifar10.npz` or
    `cifar10-subset.npz` (arrays `x_train`, `y_train`, `x_test`, `y_test`) or Keras's
    `cifar-10-batches-py` folder. Nothing else is ever substituted for a missing file.

    Args:
        name: `"mnist"`, `"cifar10"`, `"mnist-sample"` (10,000 training and 2,000 test
            MNIST images shipped inside the package: no network needed), or
            `"folder:PATH"`, a folder with one sub-folder of images per class (or
            `train/` and `test/` folders laid out that way).
        data_dir: a folder to search first for the data set's file.
        train_size: keep only the first `train_size` training images.
        test_size: keep only the first `test_size` test images.
        download: whether Keras may download MNIST or CIFAR-10 when no copy is found.
        image_size: `(height, width)` images of a folder are resized to.
        color_mode: `"rgb"` or `"grayscale"`, for a folder.
        test_fraction: for a folder without `train/` and `test/`, the share of images
            held out for testing.
        random_state: seed of the folder's train/test split.

    Returns:
        A `Dataset`.

    Raises:
        ValueError: for an unknown name or a file that is not the expected data set.
        DatasetNotFoundError: if MNIST or CIFAR-10 is in none of the places searched and
            cannot be downloaded; the message lists every place searched.
        FileNotFoundError: if a folder data set's path does not exist.

    Examples:
        >>> from saliency_detect.data import load_dataset
        >>> ds = load_dataset("mnist-sample", train_size=1000)
        >>> ds.x_train.shape, ds.x_train.dtype, ds.num_classes
        ((1000, 28, 28, 1), dtype('float32'), 10)
        >>> [int(v) for v in ds.y_train[:5]]
        [5, 0, 4, 1, 9]
    """
    if not isinstance(name, str):
        raise TypeError(f"`name` must be a string naming a data set. Received: name={name!r}")
    if name == "mnist-sample":
        dataset = _keras_files.load_mnist_sample()
    elif name in ("mnist", "cifar10"):
        dataset = _keras_files.load_keras_dataset(name, data_dir=data_dir, download=download)
    elif name.startswith("folder:"):
        dataset = _folder.load_folder(
            name[len("folder:") :],
            image_size=image_size,
            color_mode=color_mode,
            test_fraction=test_fraction,
            random_state=random_state,
        )
    else:
        raise ValueError(f"Unknown data set {name!r}. Expected one of: {', '.join(available_datasets())}.")
    if train_size is not None or test_size is not None:
        dataset = dataset.subset(train_size, test_size)
    return dataset
