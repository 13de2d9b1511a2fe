"""Images streamed from HDF5 files as `tf.data` pipelines, for sets larger than memory."""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np
import tensorflow as tf

from saliency_detect._validation import check_images, check_positive_int


def hdf5_dataset(
    path: str | os.PathLike[str],
    key: str = "x",
    *,
    label: int | None = None,
    block_size: int = 1024,
    clip_range: tuple[float, float] | None = (0.0, 1.0),
) -> tf.data.Dataset:
    """Stream the images of one HDF5 dataset as a `tf.data.Dataset`, one image per element.

    The file is read `block_size` images at a time and each block is validated (rank,
    float dtype, NaN, `clip_range`) as it is read, so memory holds one block whatever
    the number of images. Works on the library's adversarial sets (`key="x_adv"`) and
    on any file holding float images (N, H, W, C) in [0, 1]. Batch, shuffle (with a
    bounded buffer) and interleave the result with `tf.data` as usual; `SaliencyDetector.fit`,
    `decision_function` and the saliency methods take such datasets.

    Args:
        path: the HDF5 file.
        key: the name of the image dataset inside the file.
        label: if given, every element is `(image, label)` with this float32 label
            (e.g. 0 for clean and 1 for adversarial images, the detector's training pairs).
        block_size: images read from disk at a time.
        clip_range: the range pixel values must lie in, or None to skip the check.

    Returns:
        A `tf.data.Dataset` of float32 images (H, W, C), or of `(image, label)` pairs.

    Raises:
        FileNotFoundError: if there is no file at `path`.
        ValueError: if the file has no dataset `key`, or it does not hold a batch of
            float images; values outside `clip_range` or NaN are reported when their
            block is read.

    Examples:
        >>> import h5py, numpy as np, os, tempfile
        >>> from saliency_detect.data import hdf5_dataset
        >>> path = os.path.join(tempfile.mkdtemp(), "images.h5")
        >>> with h5py.File(path, "w") as f:
        ...     f["x"] = np.zeros((5, 28, 28, 1), np.float32)
        >>> images, labels = next(iter(hdf5_dataset(path, label=1).batch(5)))
        >>> images.shape, labels.numpy().tolist()
        (TensorShape([5, 28, 28, 1]), [1.0, 1.0, 1.0, 1.0, 1.0])
    """
    path = Path(path)
    block_size = check_positive_int(block_size, "block_size")
    if not path.is_file():
        raise FileNotFoundError(f"No HDF5 file at '{path}'.")
    try:
        with h5py.File(path, "r") as file:
            if key not in file or not isinstance(file[key], h5py.Dataset):
                names = sorted(name for name in file if isinstance(file[name], h5py.Dataset))
                raise ValueError(f"'{path}' has no dataset {key!r}; it holds {names}.")
            n, shape = len(file[key]), file[key].shape[1:]
            # The first block is checked now, so a wrong file fails here, not mid-training.
            check_images(file[key][: min(n, block_size)], name=f"'{path}'[{key!r}]", clip_range=clip_range)
    except OSError as error:
        raise ValueError(f"'{path}' is not a readable HDF5 file ({error}).") from error

    def blocks():
        with h5py.File(path, "r") as file:
            data = file[key]
            for start in range(0, n, block_size):
                stop = min(start + block_size, n)
                yield check_images(
                    data[start:stop], name=f"'{path}'[{key!r}][{start}:{stop}]", clip_range=clip_range
                )

    spec = tf.TensorSpec((None, *shape), tf.float32)
    images = tf.data.Dataset.from_generator(blocks, output_signature=spec).unbatch()
    images = images.apply(tf.data.experimental.assert_cardinality(n))
    if label is None:
        return images
    value = np.float32(label)
    return images.map(lambda image: (image, value))
