"""Class-per-subfolder image directories, read with Keras's image utilities."""

from __future__ import annotations

import re
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

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
    every_file = sorted(set(train.file_paths) | set(test.file_paths))
    x_train, y_train = _to_numpy(train, root, every_file)
    x_test, y_test = _to_numpy(test, root, every_file)
    return Dataset(
        name=f"folder:{path}",
        x_train=x_train,
        y_train=y_train,
        x_test=x_test,
        y_test=y_test,
        class_names=tuple(train.class_names),
        source=str(root),
    )


def _to_numpy(dataset, root: Path, every_file: list[str]) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = [], []
    try:
        for x, y in dataset:
            xs.append(x.numpy() / np.float32(255.0))
            ys.append(y.numpy())
    except tf.errors.OpError as e:
        # TensorFlow's decoder does not say which file failed: find them, one by one.
        bad = _undecodable(every_file)
        if not bad:
            raise ValueError(f"Could not read an image data set from {root}: {_tf_message(e)}") from e
        listed = "; ".join(f"{name} ({reason})" for name, reason in bad[:5])
        more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
        raise ValueError(
            f"{root} holds {len(bad)} image file(s) that cannot be decoded: {listed}{more}. Remove or "
            "replace them (an empty file or one that is not an image)."
        ) from None
    if not xs:
        raise ValueError(f"{root} holds no images in one of its splits: add images or lower `test_fraction`.")
    return np.concatenate(xs).astype(np.float32), np.concatenate(ys).astype(np.int64)


def _undecodable(paths) -> list[tuple[str, str]]:
    """`(path, reason)` for each file TensorFlow cannot decode as an image."""
    bad = []
    for path in paths:
        try:
            data = tf.io.read_file(path)
            if int(tf.strings.length(data)) == 0:
                bad.append((path, "empty file"))
                continue
            tf.io.decode_image(data, expand_animations=False)
        except tf.errors.OpError as e:
            bad.append((path, _tf_message(e)))
    return bad


def _tf_message(error: tf.errors.OpError) -> str:
    """An op error's message without TensorFlow's node and op decorations."""
    text = re.sub(r"\{\{.*?\}\}\s*", "", error.message.split("\n")[0])
    return re.sub(r"\s*\[Op:.*$", "", text).strip()
