"""The `Dataset` container and the `load_dataset` entry point."""

from __future__ import annotations

import dataclasses
import hashlib
import os

import numpy as np

from saliency_detect._validation import check_positive_int

MNIST_CLASSES = tuple(str(i) for i in range(10))
CIFAR10_CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
    """Images and labels of one data set, ready for a classifier.

    Images are float32, channels last (N, H, W, C), with values in `clip_range`
    (always `(0.0, 1.0)` for the built-in loaders); labels are int64 class indices.

    Attributes:
        name: the name the data set was loaded under (`"mnist"`, `"folder:/data/imagenette"`).
        x_train: training images, float32 (N, H, W, C).
        y_train: training labels, int64 (N,).
        x_test: test images, float32 (M, H, W, C).
        y_test: test labels, int64 (M,).
        class_names: one name per class, in label order.
        clip_range: the range of valid pixel values, `(low, high)`.
        source: the file or folder the images were read from.
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: tuple[str, ...]
    clip_range: tuple[float, float] = (0.0, 1.0)
    source: str = ""

    @property
    def num_classes(self) -> int:
        """The number of classes, `len(class_names)`."""
        return len(self.class_names)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """The shape of one image, (H, W, C)."""
        return tuple(self.x_train.shape[1:])  # type: ignore[return-value]

    def fingerprint(self) -> str:
        """Return a SHA-256 hex digest of the images and labels (training, then test).

        Two data sets share it exactly when their arrays hold the same values, wherever
        they were loaded from; a trained model's card records it to name its data.

        Examples:
            >>> from saliency_detect.data import load_dataset
            >>> ds = load_dataset("mnist-sample", train_size=10, test_size=5)
            >>> ds.fingerprint() == ds.subset(10, 5).fingerprint(), len(ds.fingerprint())
            (True, 64)
        """
        digest = hashlib.sha256()
        for array in (self.x_train, self.y_train, self.x_test, self.y_test):
            array = np.ascontiguousarray(array)
            digest.update(f"{array.dtype.str}{array.shape}".encode())
            digest.update(memoryview(array).cast("B"))
        return digest.hexdigest()

    def subset(self, train_size: int | None = None, test_size: int | None = None) -> Dataset:
        """Return a data set holding the first `train_size` / `test_size` images.

        Args:
            train_size: how many training images to keep; None keeps them all.
            test_size: how many test images to keep; None keeps them all.

        Returns:
            A new `Dataset` sharing memory with this one.

        Raises:
            ValueError: if a size is not a positive integer.
        """
        n_train = len(self.x_train) if train_size is None else check_positive_int(train_size, "train_size")
        n_test = len(self.x_test) if test_size is None else check_positive_int(test_size, "test_size")
        return dataclasses.replace(
            self,
            x_train=self.x_train[:n_train],
            y_train=self.y_train[:n_train],
            x_test=self.x_test[:n_test],
            y_test=self.y_test[:n_test],
        )

    def __repr__(self) -> str:
        return (
            f"Dataset(name={self.name!r}, train={len(self.x_train)}, test={len(self.x_test)}, "
            f"input_shape={self.input_shape}, num_classes={self.num_classes}, source={self.source!r})"
        )


def from_uint8(
    name: str,
    arrays: dict[str, np.ndarray],
    class_names: tuple[str, ...],
    source: str,
) -> Dataset:
    """Build a `Dataset` from Keras-layout uint8 arrays (`x_train`, `y_train`, `x_test`, `y_test`)."""

    def images(a: np.ndarray) -> np.ndarray:
        a = np.asarray(a)
        if a.ndim == 3:
            a = a[..., None]
        return a.astype(np.float32) / np.float32(255.0)

    def labels(a: np.ndarray) -> np.ndarray:
        return np.asarray(a).reshape(-1).astype(np.int64)

    return Dataset(
        name=name,
        x_train=images(arrays["x_train"]),
        y_train=labels(arrays["y_train"]),
        x_test=images(arrays["x_test"]),
        y_test=labels(arrays["y_test"]),
        class_names=class_names,
        source=source,
    )


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
    from saliency_detect.data import _folder, _keras_files

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
