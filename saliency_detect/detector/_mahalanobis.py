"""The Mahalanobis detector (Lee, Lee, Lee and Shin 2018), with the common detector contract.

From "A simple unified framework for detecting out-of-distribution samples and adversarial
attacks". Each chosen layer's output, averaged over its spatial positions, is modelled by
class-conditional Gaussians with one shared covariance, fitted on clean images; an
image's confidence at that layer is its negative Mahalanobis distance to the closest class
mean. Optionally the image is first nudged by `noise_magnitude` in the direction that
raises that confidence (the paper's input pre-processing: clean images gain more than
adversarial ones). A logistic regression over the per-layer confidences is the detector.
"""

from __future__ import annotations

import numbers

import keras
import numpy as np
import tensorflow as tf
from numpy.typing import ArrayLike
from sklearn.base import BaseEstimator
from sklearn.covariance import EmpiricalCovariance
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.validation import check_is_fitted

from saliency_detect._batching import map_batches
from saliency_detect._gradients import score_gradients
from saliency_detect._prepared import owner_function, prepare
from saliency_detect._validation import (
    check_non_negative_float,
    check_positive_int,
    model_image_shape,
)
from saliency_detect.detector._base import BinaryDetectorMixin, logistic_logit, split_fit_data
from saliency_detect.detector._baselines import check_classifier, check_layers
from saliency_detect.models._io import output_layer


def _pooled_step(prepared, *, layers: tuple[str, ...]):
    """Each named layer's pooled output (N, C_l) and f's predicted classes."""
    model = prepared.feature_model(layers)
    count = len(layers)

    def step(images):
        outputs = model(images, training=False)
        return (*[_pooled(o) for o in outputs[:count]], tf.argmax(outputs[count], axis=-1))

    return step


def _pooled(output: tf.Tensor) -> tf.Tensor:
    """A layer's output as one vector per image: the mean over spatial positions, or flattened."""
    if output.shape.rank == 4:
        return tf.reduce_mean(output, axis=[1, 2])
    return tf.reshape(output, [tf.shape(output)[0], -1])


def _distances(features: tf.Tensor, means: tf.Tensor, precision: tf.Tensor, present: tf.Tensor) -> tf.Tensor:
    """Squared Mahalanobis distance of each row to each class mean (N, K); +inf for absent classes."""
    diff = features[:, None, :] - means[None, :, :]
    d = tf.einsum("nkc,cd,nkd->nk", diff, precision, diff)
    return tf.where(present[None, :], d, tf.constant(np.inf, d.dtype))


class MahalanobisDetector(BinaryDetectorMixin, BaseEstimator):
    """Mahalanobis-distance detector (Lee et al. 2018).

    Per layer l, with `h_l(x)` the layer's output averaged over spatial positions, class
    means `μ_c` and the shared covariance `Σ` fitted on clean images (grouped by f's
    prediction, the labels `fit` has), the confidence is
    `M_l(x) = max_c -(h_l(x) - μ_c)ᵀ Σ⁻¹ (h_l(x) - μ_c)`. With `noise_magnitude` ε > 0,
    `x` is first replaced per layer by `clip(x + ε · sign(∇ₓ M_l(x)))`. A logistic regression
    over the standardised `M_l` separates clean from adversarial images (`decision_function`:
    its logit of "adversarial"; threshold 0, probability 0.5). The Gaussians are
    fitted on half of the clean images and the regression on the others and the
    adversarial images (a distance to means fitted on the image itself is biased low).

    Args:
        classifier: the classifier f.
        layers: names of the layers whose outputs are modelled; None takes every
            convolution and dense layer except the logits layer.
        noise_magnitude: the pre-processing step ε (0 turns it off; the paper tunes it on
            validation data, among 0, 0.0005, 0.001, 0.0014, 0.002, 0.005, 0.01).
        batch_size: images per compiled step.
        clip_range: the range images must lie in (and pre-processed images are clipped
            to), or None.
        random_state: seed for the clean-image split and the regression.

    Attributes:
        layers_: the layer names used.
        means_: per layer, the class means (classes, features); rows of absent classes are 0.
        precisions_: per layer, the inverse of the shared covariance (features, features).
        present_: which classes had clean images (the others are never the closest).
        logistic_: the fitted scaler + logistic regression pipeline.
        threshold_: decision threshold (0: probability 0.5).
        classes_: `array([0, 1])`.

    Examples:
        >>> import numpy as np
        >>> from saliency_detect.detector import MahalanobisDetector
        >>> from saliency_detect.models import mnist_net_f
        >>> x = np.random.default_rng(0).random((60, 28, 28, 1), dtype=np.float32) * 0.5
        >>> det = MahalanobisDetector(mnist_net_f(), random_state=0).fit(x, x + 0.5)
        >>> det.confidences(x[:3]).shape == (3, len(det.layers_))
        True
    """

    def __init__(
        self,
        classifier: keras.Model,
        *,
        layers: list[str] | None = None,
        noise_magnitude: float = 0.0,
        batch_size: int = 128,
        clip_range: tuple[float, float] | None = (0.0, 1.0),
        random_state: int | None = None,
    ):
        self.classifier = classifier
        self.layers = layers
        self.noise_magnitude = noise_magnitude
        self.batch_size = batch_size
        self.clip_range = clip_range
        self.random_state = random_state

    def _default_layers(self, model: keras.Model) -> list[str]:
        head = output_layer(model).name
        kinds = (keras.layers.Conv2D, keras.layers.Dense, keras.layers.DepthwiseConv2D)
        return [layer.name for layer in model.layers if isinstance(layer, kinds) and layer.name != head]

    def _features(self, x: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
        """Every chosen layer's pooled output (N, C_l) and f's predictions, for fitting."""
        count = len(self.layers_)
        signature = [tf.TensorSpec((None, *x.shape[1:]), tf.float32)]
        step = prepare(self.classifier).compiled(_pooled_step, {"layers": tuple(self.layers_)}, signature)
        result = map_batches(step, (x,), self.batch_size)
        return [np.asarray(r, np.float64) for r in result[:count]], np.asarray(result[count])

    def _confidence_tensor(self, images: tf.Tensor) -> tf.Tensor:
        """The per-layer confidences (N, layers) of a batch, as TensorFlow ops.

        Differentiating through the pre-processing treats its step's direction (the
        `sign` of a gradient, whose own gradient is zero) as a constant: the nudge is the
        identity backward, BPDA in effect.
        """
        model = prepare(self.classifier).feature_model(tuple(self.layers_))
        means = [tf.constant(m, tf.float32) for m in self.means_]
        precisions = [tf.constant(p, tf.float32) for p in self.precisions_]
        present = tf.constant(self.present_)
        noise = float(self.noise_magnitude)
        low, high = (-np.inf, np.inf) if self.clip_range is None else (float(v) for v in self.clip_range)

        def confidence(output, layer):
            distances = _distances(_pooled(output), means[layer], precisions[layer], present)
            return -tf.reduce_min(distances, axis=1)

        def nudged_confidence(images, layer):
            """The paper's pre-processing: one signed step raising this layer's confidence."""

            def score(z):
                return confidence(model(z, training=False)[layer], layer), ()

            _, _, (grad,) = score_gradients(score, images)
            nudged = tf.clip_by_value(images + noise * tf.stop_gradient(tf.sign(grad)), low, high)
            return confidence(model(nudged, training=False)[layer], layer)

        if noise > 0:
            columns = [nudged_confidence(images, layer) for layer in range(len(means))]
        else:
            outputs = model(images, training=False)  # one pass serves every layer
            columns = [confidence(outputs[layer], layer) for layer in range(len(means))]
        return tf.stack(columns, axis=1)

    def confidences(self, x: ArrayLike) -> np.ndarray:
        """Return the per-layer Mahalanobis confidences `M_l(x)` (N, layers), after pre-processing.

        Raises:
            sklearn.exceptions.NotFittedError: before `fit`.
            ValueError: for invalid images.
        """
        check_is_fitted(self, "means_")
        return self._confidences(self._check_scored(x))

    def _confidences(self, x: np.ndarray) -> np.ndarray:
        signature = [tf.TensorSpec((None, *x.shape[1:]), tf.float32)]
        step = owner_function(self, "confidences", lambda: self._confidence_tensor, signature)
        return np.asarray(map_batches(step, (x,), self.batch_size), np.float64)

    def fit(self, X: ArrayLike, y: ArrayLike | None = None) -> MahalanobisDetector:
        """Fit the class Gaussians on half of the clean images, the regression on the other images.

        Args:
            X: clean images (N, H, W, C), or all images.
            y: adversarial images (M, H, W, C), or one 0/1 label per image of `X`.

        Returns:
            `self`.

        Raises:
            ValueError: for invalid parameters, images or labels, unknown layer names, or
                fewer than 4 clean images.
            TypeError: if `classifier` is not a Keras model.
        """
        check_classifier(self.classifier)
        check_non_negative_float(self.noise_magnitude, "noise_magnitude")
        check_positive_int(self.batch_size, "batch_size")
        x, labels = split_fit_data(
            X, y, clip_range=self.clip_range, expected_shape=model_image_shape(self.classifier)
        )
        view = prepare(self.classifier).model
        names = check_layers(view, self._default_layers(view) if self.layers is None else self.layers)
        clean = np.flatnonzero(labels == 0)
        if len(clean) < 4:
            raise ValueError(f"Mahalanobis needs at least 4 clean images to fit. Received {len(clean)}.")
        self.layers_ = names
        rng = np.random.default_rng(self.random_state)
        gaussian_rows = np.sort(rng.permutation(clean)[: len(clean) // 2])
        features, predicted = self._features(x[gaussian_rows])
        num_classes = prepare(self.classifier).num_classes(x.shape[1:])
        self.present_ = np.array([np.any(predicted == c) for c in range(num_classes)])
        self.means_, self.precisions_ = [], []
        for h in features:
            means = np.zeros((num_classes, h.shape[1]))
            for c in np.flatnonzero(self.present_):
                means[c] = h[predicted == c].mean(axis=0)
            centred = h - means[predicted]
            self.means_.append(means)
            self.precisions_.append(EmpiricalCovariance(assume_centered=True).fit(centred).precision_)
        rest = np.setdiff1d(np.arange(len(x)), gaussian_rows)
        seed = self.random_state if isinstance(self.random_state, numbers.Integral) else None
        self.logistic_ = make_pipeline(StandardScaler(), LogisticRegression(random_state=seed, max_iter=1000))
        self.logistic_.fit(self._confidences(x[rest]), labels[rest])
        self._set_probability_threshold()
        return self

    def _decision_function(self, x: np.ndarray) -> np.ndarray:
        # The logistic regression's logit of "adversarial", over the per-layer confidences.
        return self.logistic_.decision_function(self._confidences(x))

    def decision_tensor(self, x: tf.Tensor) -> tf.Tensor:
        """`decision_function` as TensorFlow ops on a batch of images, differentiable in them.

        The distances to the class means, the pre-processing (BPDA through its signed
        step) and the logistic regression are TensorFlow ops, so the joint adaptive
        attack (`attacks.joint_pgd`) differentiates the score. It does not check the
        images.

        Args:
            x: a float32 tensor of images (N, H, W, C).

        Returns:
            The logistic regression's logits of "adversarial", an (N,) float32 tensor.

        Raises:
            sklearn.exceptions.NotFittedError: before `fit`.
        """
        check_is_fitted(self, "logistic_")
        return logistic_logit(self.logistic_, self._confidence_tensor(x))
