"""Class-per-subfolder image directories, read with Keras's image utilities."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np

from saliency_detect._validation import check_input_shape
from saliency_detect.data._dataset import Dataset

_TRAIN_NAMES = ("train",)
_TEST_NAMES = ("test", "val", "validation")


def load_folder(
    path: str,
    *,
    image_size: tuple[int, int],
    color_mode: str,
    test_fraction: float,
    random_state: int,
) -> Dataset:
    """Read `path/<class>/*.png|jpg|…` (or `path/train/<class>/…` and `path/test/<class>/…`)."""
    root = Path(path).expanduser()
    if not path or not root.is_dir():
        raise FileNotFoundError(
            f"`folder:PATH` must name an existing folder with one sub-folder of images per "
            f"class. Received: {path!r}, which is not a folder."
        )
    if color_mode not in ("rgb", "grayscale"):
        raise ValueError(f"`color_mode` must be 'rgb' or 'grayscale'. Received: color_mode={color_mode!r}")
    height, width, _ = check_input_shape((*tuple(image_size), 1), name="image_size")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"`test_fraction` must lie strictly between 0 and 1. Received: {test_fraction!r}")
    options = dict(
        labels="inferred",
        label_mode="int",
        color_mode=color_mode,
        image_size=(height, width),
        batch_size=256,
        shuffle=False,
        verbose=False,
    )
    train_dir = next((root / n for n in _TRAIN_NAMES if (root / n).is_dir()), None)
    test_dir = next((root / n for n in _TEST_NAMES if (root / n).is_dir()), None)
    try:
        if train_dir is not None and test_dir is not None:
            train = keras.utils.image_dataset_from_directory(train_dir, **options)
            test = keras.utils.image_dataset_from_directory(
                test_dir, class_names=train.class_names, **options
            )
        else:
            options.update(shuffle=True, seed=random_state)
            train, test = keras.utils.image_dataset_from_directory(
                root, validation_split=test_fraction, subset="both", **options
            )
    except ValueError as e:
        raise ValueError(f"Could not read an image data set from {root}: {e}") from e
    x_train, y_train = _to_numpy(train, root)
    x_test, y_test = _to_numpy(test, root)
    return Dataset(
        name=f"folder:{path}",
        x_train=x_train,
        y_train=y_train,
        x_test=x_test,
        y_test=y_test,
        class_names=tuple(train.class_names),
        source=str(root),
    )


def _to_numpy(dataset, root: Path) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = [], []
    for x, y in dataset:
        xs.append(x.numpy() / np.float32(255.0))
        ys.append(y.numpy())
    if not xs:
        raise ValueError(f"{root} holds no images in one of its splits: add images or lower `test_fraction`.")
    return np.concatenate(xs).astype(np.float32), np.concatenate(ys).astype(np.int64)
