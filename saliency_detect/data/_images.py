"""`read_images`: image files, folders and `.npz` arrays to scoring-ready batches.

Used by `saliency-detect detect`. A file that cannot be read is reported, never fatal:
the caller gets the images that could be read and a list of `(file, reason)` for the rest.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np

#: Suffixes read as image files (PIL decodes them).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
_NPZ_KEYS = ("x", "images", "x_test", "x_adv")


def _image_file(path: Path, image_shape: tuple[int, int, int]) -> np.ndarray:
    import keras

    height, width, channels = image_shape
    mode = {1: "grayscale", 3: "rgb", 4: "rgba"}.get(channels)
    if mode is None:
        raise ValueError(f"image files can fill 1, 3 or 4 channels, the detector takes {channels}")
    image = keras.utils.load_img(path, color_mode=mode, target_size=(height, width), interpolation="bilinear")
    return keras.utils.img_to_array(image, dtype="float32") / 255.0


def _npz_images(path: Path, image_shape: tuple[int, int, int]) -> np.ndarray:
    with np.load(path, allow_pickle=False) as archive:
        named = [k for k in _NPZ_KEYS if k in archive.files]
        if not named and len(archive.files) != 1:
            raise ValueError(f"expected one array or one named {list(_NPZ_KEYS)}, found {archive.files}")
        images = archive[(named or archive.files)[0]]
    if images.ndim == len(image_shape) and image_shape[-1] == 1:
        images = images[..., None]
    if images.shape[1:] != tuple(image_shape):
        raise ValueError(
            f"expected images of shape (N, {', '.join(map(str, image_shape))}), found {images.shape}"
        )
    if np.issubdtype(images.dtype, np.integer):
        if images.min(initial=0) < 0 or images.max(initial=0) > 255:
            raise ValueError("integer images must lie in 0..255")
        return images.astype(np.float32) / 255.0
    if not np.issubdtype(images.dtype, np.floating):
        raise ValueError(f"expected integer (0..255) or float ([0, 1]) images, found dtype {images.dtype}")
    images = images.astype(np.float32)
    if not np.isfinite(images).all() or images.min(initial=0) < 0 or images.max(initial=0) > 1:
        raise ValueError("float images must be finite and lie in [0, 1]")
    return images


def read_images(
    path: str | os.PathLike[str], image_shape: tuple[int, int, int]
) -> tuple[list[str], np.ndarray, list[tuple[str, str]]]:
    """Read images to score from a file, a folder or an `.npz` archive.

    Image files (PNG, JPEG, BMP, GIF, WebP) are decoded to `image_shape`'s channels
    (grayscale, RGB or RGBA) and resized to its height and width; a folder is searched
    recursively for them, in sorted order. An `.npz` archive holds one array (or one
    named `x`, `images`, `x_test` or `x_adv`) of images of `image_shape`, uint8 in
    0..255 or float in [0, 1]; its images are named `archive.npz[i]`.

    Args:
        path: an image file, a folder or an `.npz` file.
        image_shape: `(height, width, channels)` the images are read to.

    Returns:
        `(names, images, errors)`: the names of the images read, a float32 array
        (N, H, W, C) in [0, 1], and `(name, reason)` for every file that could not be read.

    Raises:
        FileNotFoundError: if `path` does not exist.
        ValueError: if `path` is a file of another kind, or a folder without images.

    Examples:
        >>> import numpy as np, os, tempfile
        >>> from saliency_detect.data import read_images
        >>> path = os.path.join(tempfile.mkdtemp(), "x.npz")
        >>> np.savez(path, x=np.zeros((2, 28, 28), np.uint8))
        >>> names, images, errors = read_images(path, (28, 28, 1))
        >>> names, images.shape, errors
        (['x.npz[0]', 'x.npz[1]'], (2, 28, 28, 1), [])
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"No image file, folder or .npz at {path}")
    shape = tuple(int(v) for v in image_shape)
    empty = np.zeros((0, *shape), np.float32)
    if path.is_file() and path.suffix.lower() == ".npz":
        try:
            images = _npz_images(path, shape)
        except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
            return [], empty, [(path.name, str(e))]
        return [f"{path.name}[{i}]" for i in range(len(images))], images, []
    if path.is_file():
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            raise ValueError(
                f"Expected an image file ({', '.join(IMAGE_SUFFIXES)}), a folder or an .npz; got {path}"
            )
        files, root = [path], path.parent
    else:
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        root = path
        if not files:
            raise ValueError(f"No image files ({', '.join(IMAGE_SUFFIXES)}) in the folder {path}")
    from PIL import Image  # Keras's `load_img` decodes with PIL

    names, images, errors = [], [], []
    for file in files:
        name = file.relative_to(root).as_posix()
        try:
            images.append(_image_file(file, shape))
            names.append(name)
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
            # PIL raises the first three for damaged files, the last for a header claiming an
            # enormous size: the file is skipped with its reason, the others are still scored.
            errors.append((name, f"{type(e).__name__}: {e}"))
    return names, (np.stack(images) if images else empty), errors
