"""`data.read_images`: files, folders and `.npz` to score; bad files skipped with their reason."""

from __future__ import annotations

import re

import numpy as np
import pytest


def test_read_images_converts_resizes_and_reports(tmp_path):
    import keras

    from saliency_detect.data import read_images

    rgb = np.zeros((40, 30, 3), np.uint8)
    rgb[..., 0] = 255
    keras.utils.save_img(tmp_path / "red.png", rgb, scale=False)
    names, images, errors = read_images(tmp_path / "red.png", (28, 28, 1))
    assert names == ["red.png"] and images.shape == (1, 28, 28, 1) and errors == []
    assert np.allclose(images, images.flat[0]) and 0.2 < images.flat[0] < 0.4  # luminance of pure red
    _, rgb_read, _ = read_images(tmp_path / "red.png", (32, 32, 3))
    assert rgb_read.shape == (1, 32, 32, 3) and np.allclose(rgb_read[..., 0], 1.0)
    for name, array, reason in [
        ("shape.npz", np.zeros((2, 27, 27), np.uint8), r"expected images of shape \(N, 28, 28, 1\)"),
        ("range.npz", np.full((2, 28, 28, 1), 2.0, np.float32), r"must be finite and lie in \[0, 1\]"),
        ("nan.npz", np.full((2, 28, 28, 1), np.nan, np.float32), r"must be finite"),
    ]:
        np.savez(tmp_path / name, x=array)
        names, images, errors = read_images(tmp_path / name, (28, 28, 1))
        assert names == [] and images.shape == (0, 28, 28, 1)
        assert errors[0][0] == name and re.search(reason, errors[0][1]), errors
    np.savez(tmp_path / "two.npz", a=np.zeros((1, 28, 28)), b=np.zeros((1, 28, 28)))
    assert "expected one array" in read_images(tmp_path / "two.npz", (28, 28, 1))[2][0][1]
    (tmp_path / "corrupt.npz").write_bytes(b"PK\x03\x04 broken")
    assert read_images(tmp_path / "corrupt.npz", (28, 28, 1))[2][0][0] == "corrupt.npz"
    (tmp_path / "doc.txt").write_text("x")
    with pytest.raises(ValueError, match="Expected an image file"):
        read_images(tmp_path / "doc.txt", (28, 28, 1))


def _png_claiming(path, width, height):
    """A 1x1 PNG whose header claims `width` x `height` pixels (a decompression bomb's header)."""
    import io
    import struct
    import zlib

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("L", (1, 1)).save(buffer, format="PNG")
    data = bytearray(buffer.getvalue())
    start = data.index(b"IHDR")
    data[start + 4 : start + 12] = struct.pack(">II", width, height)
    data[start + 17 : start + 21] = struct.pack(">I", zlib.crc32(bytes(data[start : start + 17])))
    path.write_bytes(bytes(data))


def test_read_images_skips_a_decompression_bomb_and_reads_the_rest(tmp_path):
    import keras

    from saliency_detect.data import read_images

    keras.utils.save_img(tmp_path / "good.png", np.zeros((28, 28, 1), np.uint8), scale=False)
    _png_claiming(tmp_path / "bomb.png", 100_000, 100_000)
    (tmp_path / "empty.png").write_bytes(b"")
    names, images, errors = read_images(tmp_path, (28, 28, 1))
    assert names == ["good.png"] and images.shape == (1, 28, 28, 1)
    reasons = dict(errors)
    assert set(reasons) == {"bomb.png", "empty.png"}
    assert "DecompressionBombError" in reasons["bomb.png"]
