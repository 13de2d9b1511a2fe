"""Feature Squeezing (Xu, Evans and Qi 2018), with the common detector contract.

From "Feature squeezing: detecting adversarial examples in deep neural networks". An
image is squeezed (its colour depth reduced, or median-smoothed), and the classifier's
softmax on the squeezed image is compared with its softmax on the original: a clean image
barely changes its prediction, an adversarial one, balanced on a small perturbation,
often does. The score is the largest L1 distance over the squeezers; the threshold is set
on clean images at a stated false-positive rate, as in the paper (the adversarial images
given to `fit` are not needed to fit; they are accepted for the common contract).

The squeezers are TensorFlow functions of the image, so the score runs in one compiled
step and a later adaptive attack can differentiate through them (median smoothing has a
gradient almost everywhere; bit-depth reduction needs BPDA, Athalye et al. 2018).
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import keras
import numpy as np
import tensorflow as tf
from numpy.typing import ArrayLike
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted

from saliency_detect._batching import map_batches
from saliency_detect._prepared import owner_function, prepare
from saliency_detect._validation import check_images, check_positive_int, model_image_shape
from saliency_detect.detector._base import BinaryDetectorMixin, split_fit_data
from saliency_detect.detector._baselines import check_classifier

#: The paper's squeezers per data set: MNIST (grayscale) 1-bit depth and 2x2 median
#: smoothing; CIFAR-10 and ImageNet (colour) 5-bit depth and 2x2 median smoothing (the
#: paper's third CIFAR-10 squeezer, non-local means, is not offered).
PAPER_SQUEEZERS = {1: (("bit_depth", 1), ("median", 2)), 3: (("bit_depth", 5), ("median", 2))}


def bit_depth(x: tf.Tensor, bits: int, clip_range: tuple[float, float] = (0.0, 1.0)) -> tf.Tensor:
    """Reduce each pixel to `bits` bits of depth: `round(v * (2**bits - 1)) / (2**bits - 1)` on [0, 1].

    Images in another clip range are mapped to [0, 1] and back.
    """
    low, high = float(clip_range[0]), float(clip_range[1])
    levels = float(2**bits - 1)
    unit = (x - low) / (high - low)
    return tf.round(unit * levels) / levels * (high - low) + low


def median_smoothing(x: tf.Tensor, size: int) -> tf.Tensor:
    """Median over a `size` x `size` window per pixel and channel, as `scipy.ndimage.median_filter`.

    The window spans offsets `-(size // 2)` to `size - 1 - size // 2` (for size 2: the
    pixel, its upper and left neighbours); edges are reflected (scipy's `mode="reflect"`,
    TensorFlow's `"SYMMETRIC"`); for an even window the median is the upper of the two
    middle values (scipy's rank `size * size // 2`).
    """
    before, after = size // 2, size - 1 - size // 2
    padded = tf.pad(x, [[0, 0], [before, after], [before, after], [0, 0]], mode="SYMMETRIC")
    shape = tf.shape(x)
    patches = tf.image.extract_patches(
        padded, sizes=[1, size, size, 1], strides=[1, 1, 1, 1], rates=[1, 1, 1, 1], padding="VALID"
    )
    patches = tf.reshape(patches, [shape[0], shape[1], shape[2], size * size, shape[3]])
    ordered = tf.sort(patches, axis=3)
    return ordered[:, :, :, (size * size) // 2, :]


_SQUEEZERS = {"bit_depth": bit_depth, "median": median_smoothing}


def straight_through(forward, x: tf.Tensor) -> tf.Tensor:
    """`forward(x)` whose gradient is taken as the identity's (BPDA, Athalye et al. 2018)."""

    @tf.custom_gradient
    def op(z):
        return forward(z), lambda upstream: upstream

    return op(x)


def _check_squeezers(squeezers, channels: int) -> tuple[tuple[str, int], ...]:
    if squeezers is None:
        return PAPER_SQUEEZERS[1 if channels == 1 else 3]
    try:
        specs = tuple((str(name), value) for name, value in squeezers)
    except (TypeError, ValueError):
        specs = ()
    if not specs:
        raise ValueError(
            "`squeezers` must be a non-empty list of (name, size) pairs such as "
            f"[('bit_depth', 1), ('median', 2)], or None for the paper's. Received: squeezers={squeezers!r}"
        )
    for name, value in specs:
        if name not in _SQUEEZERS:
            raise ValueError(f"Unknown squeezer {name!r}: expected one of {sorted(_SQUEEZERS)}.")
        limits = (1, 16) if name == "bit_depth" else (2, 16)
        if (
            isinstance(value, bool)
            or not isinstance(value, numbers.Integral)
            or not limits[0] <= value <= limits[1]
        ):
            what = "bits" if name == "bit_depth" else "window size"
            raise ValueError(
                f"The {name} squeezer's {what} must be an integer in [{limits[0]}, {limits[1]}]. "
                f"Received: ({name!r}, {value!r})"
            )
    return specs


class FeatureSqueezingDetector(BinaryDetectorMixin, BaseEstimator):
    """Feature Squeezing detector (Xu et al. 2018).

    The score of an image is `max over squeezers of ||softmax(f(x)) - softmax(f(squeeze(x)))||_1`,
    in [0, 2]. `fit` sets `threshold_` so that a share `fpr` of the clean images is
    flagged (the paper: 5% of clean training images); `calibrate` moves it on other
    clean images.

    `decision_function` returns the L1 score itself, so `threshold_` is on that scale;
    `predict_proba` is the logistic function of the score, monotone in it but not a
    calibrated probability (use `predict`, which applies the threshold).

    Args:
        classifier: the classifier f (logits, or softmax read at its logits).
        squeezers: `(name, size)` pairs: `("bit_depth", bits)` and `("median", window)`;
            None takes the paper's for the images' channels (`PAPER_SQUEEZERS`).
        fpr: the share of clean `fit` images flagged at the fitted threshold.
        batch_size: images per compiled step.
        clip_range: the range images must lie in (and the range bit-depth reduction
            quantises), or None to skip the check and quantise [0, 1].

    Attributes:
        squeezers_: the squeezers used.
        threshold_: the decision threshold on the L1 score.
        threshold_source_: how the threshold was set.
        classes_: `array([0, 1])`.

    Examples:
        >>> import numpy as np
        >>> from saliency_detect.detector import FeatureSqueezingDetector
        >>> from saliency_detect.models import mnist_net_f
        >>> x = np.random.default_rng(0).random((40, 28, 28, 1), dtype=np.float32)
        >>> det = FeatureSqueezingDetector(mnist_net_f()).fit(x)
        >>> det.squeezers_, det.decision_function(x[:3]).shape
        ((('bit_depth', 1), ('median', 2)), (3,))
    """

    def __init__(
        self,
        classifier: keras.Model,
        *,
        squeezers: Sequence[tuple[str, int]] | None = None,
        fpr: float = 0.05,
        batch_size: int = 128,
        clip_range: tuple[float, float] | None = (0.0, 1.0),
    ):
        self.classifier = classifier
        self.squeezers = squeezers
        self.fpr = fpr
        self.batch_size = batch_size
        self.clip_range = clip_range

    def _clip(self) -> tuple[float, float]:
        return (0.0, 1.0) if self.clip_range is None else tuple(float(v) for v in self.clip_range)

    def _decision_function(self, x: np.ndarray) -> np.ndarray:
        # Each image's largest L1 distance between f's softmax before and after squeezing.
        # Compiled once per fitted state and image shape, and kept on the detector (not in
        # the classifier's cache, which must not hold the detector).
        signature = [tf.TensorSpec((None, *x.shape[1:]), tf.float32)]
        step = owner_function(self, "scores", lambda: self._score_tensor, signature)
        return map_batches(step, (x,), self.batch_size).astype(np.float64)

    def _score_tensor(self, images: tf.Tensor) -> tf.Tensor:
        model, clip = prepare(self.classifier).model, self._clip()
        reference = tf.nn.softmax(model(images, training=False))
        distances = []
        for name, value in self.squeezers_:
            if name == "bit_depth":  # rounding has no gradient: BPDA, the identity backward
                squeezed = straight_through(lambda z, v=value: bit_depth(z, v, clip), images)
            else:  # the median passes its gradient to the pixel it picked
                squeezed = median_smoothing(images, value)
            p = tf.nn.softmax(model(squeezed, training=False))
            distances.append(tf.reduce_sum(tf.abs(reference - p), axis=-1))
        return tf.reduce_max(tf.stack(distances, axis=1), axis=1)

    def fit(self, X: ArrayLike, y: ArrayLike | None = None) -> FeatureSqueezingDetector:
        """Set the threshold at the `fpr` quantile of the clean images' scores.

        Args:
            X: clean images (N, H, W, C), or all images (with `y` their 0/1 labels).
            y: adversarial images (not used to fit), 0/1 labels of `X`, or None when `X`
                is clean images only.

        Returns:
            `self`.

        Raises:
            ValueError: for invalid parameters or images, or fewer than `1 / fpr` clean
                images.
            TypeError: if `classifier` is not a Keras model.
        """
        check_classifier(self.classifier)
        check_positive_int(self.batch_size, "batch_size")
        fpr = self.fpr
        if isinstance(fpr, bool) or not isinstance(fpr, numbers.Real) or not 0 < fpr < 1:
            raise ValueError(f"`fpr` must be a rate in (0, 1). Received: fpr={fpr!r}")
        expected = model_image_shape(self.classifier)
        if y is None:
            clean = check_images(X, name="x_clean", clip_range=self.clip_range, expected_shape=expected)
        else:
            x, labels = split_fit_data(X, y, clip_range=self.clip_range, expected_shape=expected)
            clean = x[labels == 0]
        self.squeezers_ = _check_squeezers(self.squeezers, clean.shape[-1])
        self.classes_ = np.array([0, 1])
        self.threshold_ = 0.0
        self.calibrate(clean, fpr=float(fpr))
        self.threshold_source_ = f"clean fit images at FPR {float(fpr):g}"
        return self

    def decision_tensor(self, x: tf.Tensor) -> tf.Tensor:
        """`decision_function` as TensorFlow ops on a batch of images, differentiable in them.

        Bit-depth reduction is passed backward as the identity (BPDA, Athalye et al.
        2018), median smoothing by its own gradient; the joint adaptive attack
        (`attacks.joint_pgd`) differentiates this. It does not check the images.

        Args:
            x: a float32 tensor of images (N, H, W, C).

        Returns:
            The L1 scores, an (N,) float32 tensor.

        Raises:
            sklearn.exceptions.NotFittedError: before `fit`.
        """
        check_is_fitted(self, "squeezers_")
        return self._score_tensor(x)
