"""The `Dataset` container, the class names and the uint8 conversion every loader shares."""

from __future__ import annotations

import dataclasses
import hashlib

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
