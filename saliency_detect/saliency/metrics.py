"""Measures that compare and describe saliency maps, one value per image.

Every function takes maps of shape (N, H, W) or (N, H, W, C), works on the
unnormalised values (absolute values where a measure needs mass), and returns a float64
NumPy vector of length N. These are the measures the attention analysis uses to test
whether adversarial images move or diffuse a classifier's attention.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
from numpy.typing import ArrayLike
from scipy.stats import rankdata

__all__ = ["entropy", "gini", "mass_in_mask", "spearman", "ssim", "top_k_intersection"]


def _maps(a, name: str = "maps") -> np.ndarray:
    if hasattr(a, "numpy") and not isinstance(a, np.ndarray):
        a = a.numpy()
    a = np.asarray(a, dtype=np.float64)
    if a.ndim not in (3, 4):
        raise ValueError(
            f"`{name}` must be saliency maps (N, H, W) or (N, H, W, C). Received: shape={a.shape}"
        )
    if a.shape[0] == 0:
        raise ValueError(f"`{name}` is an empty batch of maps.")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"`{name}` holds NaN or infinite values.")
    return a


def _pair(a, b) -> tuple[np.ndarray, np.ndarray]:
    a, b = _maps(a, "a"), _maps(b, "b")
    if a.shape != b.shape:
        raise ValueError(f"`a` and `b` must have the same shape. Received: {a.shape} and {b.shape}")
    return a.reshape(len(a), -1), b.reshape(len(b), -1)


def spearman(a, b) -> np.ndarray:
    """Spearman rank correlation between two maps of each image (ties share their rank).

    A constant map has no ranking: its correlation is NaN.

    Examples:
        >>> import numpy as np
        >>> from saliency_detect.saliency.metrics import spearman
        >>> a = np.arange(8.0).reshape(1, 2, 4)
        >>> spearman(a, a ** 2).round(6).tolist(), spearman(a, -a).round(6).tolist()
        ([1.0], [-1.0])
    """
    a, b = _pair(a, b)
    ra, rb = rankdata(a, axis=1), rankdata(b, axis=1)
    ra -= ra.mean(axis=1, keepdims=True)
    rb -= rb.mean(axis=1, keepdims=True)
    denominator = np.sqrt((ra**2).sum(axis=1) * (rb**2).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, (ra * rb).sum(axis=1) / denominator, np.nan)


def top_k_intersection(a, b, k: int) -> np.ndarray:
    """Share of the `k` largest-magnitude pixels of `a` that are also among those of `b`.

    Examples:
        >>> import numpy as np
        >>> from saliency_detect.saliency.metrics import top_k_intersection
        >>> a = np.array([[[5.0, 4.0, 0.0, 0.0]]]); b = np.array([[[5.0, 0.0, 4.0, 0.0]]])
        >>> top_k_intersection(a, b, k=2).tolist()
        [0.5]
    """
    a, b = _pair(a, b)
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= a.shape[1]:
        raise ValueError(f"`k` must be an integer in [1, {a.shape[1]}] (pixels per map). Received: k={k!r}")
    top_a = np.argpartition(-np.abs(a), k - 1, axis=1)[:, :k]
    top_b = np.argpartition(-np.abs(b), k - 1, axis=1)[:, :k]
    return np.array([len(np.intersect1d(x, y)) / k for x, y in zip(top_a, top_b, strict=True)])


def ssim(a, b, *, filter_size: int = 11) -> np.ndarray:
    """Structural similarity of two maps of each image (`tf.image.ssim`).

    Maps are compared on their own scale: both are divided by their joint largest
    magnitude, which is the data range SSIM's constants refer to (no shift, no
    per-map normalisation). The Gaussian window shrinks to fit maps smaller than
    `filter_size`.

    Examples:
        >>> import numpy as np
        >>> from saliency_detect.saliency.metrics import ssim
        >>> a = np.random.default_rng(0).random((2, 16, 16))
        >>> ssim(a, a).round(6).tolist()
        [1.0, 1.0]
    """
    a, b = _maps(a, "a"), _maps(b, "b")
    if a.shape != b.shape:
        raise ValueError(f"`a` and `b` must have the same shape. Received: {a.shape} and {b.shape}")
    if a.ndim == 3:
        a, b = a[..., None], b[..., None]
    scale = np.maximum(
        np.abs(a).max(axis=(1, 2, 3), keepdims=True), np.abs(b).max(axis=(1, 2, 3), keepdims=True)
    )
    scale = np.where(scale > 0, scale, 1.0)
    size = int(min(filter_size, a.shape[1], a.shape[2]))
    values = tf.image.ssim(
        tf.constant(a / scale, tf.float32), tf.constant(b / scale, tf.float32), max_val=1.0,
        filter_size=size, filter_sigma=1.5 * size / 11,
    )  # fmt: skip
    return values.numpy().astype(np.float64)


def entropy(maps) -> np.ndarray:
    """Shannon entropy, in bits, of each map's absolute values taken as a distribution.

    High entropy is diffuse attention; log2(H*W*C) is the most diffuse. An all-zero map
    has no distribution: its entropy is NaN.

    Examples:
        >>> import numpy as np
        >>> from saliency_detect.saliency.metrics import entropy
        >>> entropy(np.ones((1, 4, 4))).tolist(), entropy(np.eye(4)[None] * [1, 0, 0, 0]).tolist()
        ([4.0], [0.0])
    """
    m = np.abs(_maps(maps))
    m = m.reshape(len(m), -1)
    total = m.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = m / total
        logs = np.where(p > 0, np.log2(np.where(p > 0, p, 1.0)), 0.0)
    return np.where(total[:, 0] > 0, 0.0 - (p * logs).sum(axis=1), np.nan)  # 0.0 - x: no -0.0


def gini(maps) -> np.ndarray:
    """Gini coefficient of each map's absolute values: 0 when spread evenly, near 1 when concentrated.

    An all-zero map is NaN.

    Examples:
        >>> import numpy as np
        >>> from saliency_detect.saliency.metrics import gini
        >>> spike = np.zeros((1, 10, 10)); spike[0, 3, 3] = 1.0
        >>> gini(np.ones((1, 10, 10))).round(6).tolist(), gini(spike).round(6).tolist()
        ([0.0], [0.99])
    """
    m = np.sort(np.abs(_maps(maps)).reshape(len(maps), -1), axis=1)
    n = m.shape[1]
    total = m.sum(axis=1)
    ranks = np.arange(1, n + 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        value = (2 * (ranks * m).sum(axis=1)) / (n * total) - (n + 1) / n
    return np.where(total > 0, value, np.nan)


def mass_in_mask(maps: ArrayLike, mask: ArrayLike) -> np.ndarray:
    """Share of each map's absolute mass that lies inside a mask (e.g. near perturbed pixels).

    Args:
        maps: saliency maps (N, H, W) or (N, H, W, C).
        mask: boolean (N, H, W), or (H, W) for the same mask on every image; broadcast
            over channels.

    Returns:
        Values in [0, 1]; NaN for an all-zero map.

    Examples:
        >>> import numpy as np
        >>> from saliency_detect.saliency.metrics import mass_in_mask
        >>> maps = np.ones((1, 4, 4)); mask = np.zeros((4, 4), bool); mask[:2] = True
        >>> mass_in_mask(maps, mask).tolist()
        [0.5]
    """
    m = np.abs(_maps(maps))
    mask = np.asarray(mask)
    if mask.dtype != bool:
        raise ValueError(f"`mask` must be a boolean array. Received: dtype={mask.dtype}")
    spatial = m.shape[1:3]
    if mask.shape == spatial:
        mask = np.broadcast_to(mask, (len(m), *spatial))
    if mask.shape != (len(m), *spatial):
        raise ValueError(
            f"`mask` must have shape (N, H, W) = {(len(m), *spatial)} or (H, W) = {spatial}. "
            f"Received: {mask.shape}"
        )
    if m.ndim == 4:
        mask = np.broadcast_to(mask[..., None], m.shape)
    total = m.reshape(len(m), -1).sum(axis=1)
    inside = np.where(mask, m, 0.0).reshape(len(m), -1).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, inside / total, np.nan)
