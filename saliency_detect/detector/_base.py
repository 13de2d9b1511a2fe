"""What every binary detector shares: the fit-data convention, thresholds, probabilities, scoring.

A detector here is a scikit-learn estimator whose positive class (1) is "adversarial".
Each detector implements `fit` and `decision_function` (a real-valued score, larger
means more likely adversarial, 0 at the default threshold); this mixin derives
`predict_proba`, `predict`, `score` and `calibrate` from it, each checking first that
the detector is fitted.
"""

from __future__ import annotations

import copy
import math
import warnings
from typing import Protocol

import numpy as np
import tensorflow as tf
from numpy.typing import ArrayLike
from sklearn.base import ClassifierMixin
from sklearn.pipeline import Pipeline
from sklearn.utils.validation import check_is_fitted

from saliency_detect._validation import check_images, check_positive_float, model_image_shape


def split_fit_data(
    X, y, *, clip_range: tuple[float, float] | None, expected_shape=None
) -> tuple[np.ndarray, np.ndarray]:
    """Turn `fit(x_clean, x_adv)` or `fit(x, is_adversarial)` into `(images, 0/1 labels)`.

    Raises:
        ValueError: if `y` is missing, is neither images nor one 0/1 label per image, or
            the images are invalid.
    """
    if y is None:
        raise ValueError(
            "`fit` needs the adversarial examples: call `fit(x_clean, x_adv)` with two image "
            "batches, or `fit(x, is_adversarial)` with one 0/1 label per image."
        )
    y_array = y.numpy() if hasattr(y, "numpy") and not isinstance(y, np.ndarray) else np.asarray(y)
    if y_array.ndim == 4:
        return _stack_pairs(X, y_array, clip_range=clip_range, expected_shape=expected_shape, stacklevel=4)
    x = check_images(X, name="x", clip_range=clip_range, expected_shape=expected_shape)
    labels = check_binary_labels(y_array, n=len(x))
    if labels.min() == labels.max():
        raise ValueError(
            "`is_adversarial` must hold both classes (0: clean, 1: adversarial) to fit a detector. "
            f"Received only {int(labels[0])}s."
        )
    return x, labels


def stack_pairs(
    x_clean: ArrayLike, x_adv: ArrayLike, *, clip_range: tuple[float, float] | None = (0.0, 1.0)
) -> tuple[np.ndarray, np.ndarray]:
    """Turn clean and adversarial image batches into scikit-learn's `(X, y)`.

    `X` is the clean images followed by the adversarial ones; `y` is 0 for each clean
    image and 1 for each adversarial one. `detector.fit(x_clean, x_adv)` is
    `detector.fit(*stack_pairs(x_clean, x_adv))`; use this form with scikit-learn's tools
    (`cross_val_score`, `train_test_split`, ...). Warns when an adversarial image equals
    its clean twin (the attack changed nothing): it would be labelled adversarial all the
    same.

    Args:
        x_clean: clean images (N, H, W, C).
        x_adv: adversarial images (M, H, W, C) of the same image shape, usually the
            clean ones attacked (M = N).
        clip_range: `(low, high)` the pixel values must lie in, or None to skip.

    Returns:
        `(X, y)`: float32 images (N + M, H, W, C) and int64 labels (N + M,).

    Raises:
        ValueError: for invalid images or batches of different image shapes.

    Examples:
        >>> import numpy as np
        >>> from saliency_detect.detector import stack_pairs
        >>> x = np.zeros((3, 28, 28, 1), np.float32)
        >>> X, y = stack_pairs(x, x + 0.1)
        >>> X.shape, y.tolist()
        ((6, 28, 28, 1), [0, 0, 0, 1, 1, 1])
    """
    return _stack_pairs(x_clean, x_adv, clip_range=clip_range, expected_shape=None, stacklevel=3)


def _stack_pairs(
    x_clean, x_adv, *, clip_range, expected_shape, stacklevel: int
) -> tuple[np.ndarray, np.ndarray]:
    x = check_images(x_clean, name="x_clean", clip_range=clip_range, expected_shape=expected_shape)
    x_adv = check_images(x_adv, name="x_adv", clip_range=clip_range, expected_shape=x.shape[1:])
    if x_adv.shape == x.shape:
        same = int(np.count_nonzero(~(x != x_adv).reshape(len(x), -1).any(axis=1)))
        if same:
            warnings.warn(
                f"{same} of the {len(x)} images of `x_adv` equal their clean image in `x_clean` (the "
                "attack changed nothing, e.g. f already misclassified them); they are fitted as "
                "adversarial all the same. Drop them first (`evaluation.changed_images`).",
                stacklevel=stacklevel,
            )
    labels = np.concatenate([np.zeros(len(x), np.int64), np.ones(len(x_adv), np.int64)])
    return np.concatenate([x, x_adv]), labels


def check_binary_labels(y, *, n: int, name: str = "is_adversarial") -> np.ndarray:
    """Return 0/1 labels (booleans accepted) as int64, or raise ValueError naming `name`."""
    y = np.asarray(y)
    if y.ndim != 1 or len(y) != n:
        raise ValueError(
            f"`{name}` must hold one 0/1 label per image: expected shape ({n},). Received: shape={y.shape}"
        )
    if y.dtype == np.bool_:
        return y.astype(np.int64)
    if not np.issubdtype(y.dtype, np.number) or not np.all(np.isin(y, (0, 1))):
        raise ValueError(
            f"`{name}` must hold 0 (clean) or 1 (adversarial). "
            f"Received values {np.unique(y)[:5].tolist()} (dtype={y.dtype})"
        )
    return y.astype(np.int64)


def balanced_threshold(scores: ArrayLike, labels: ArrayLike) -> float:
    """The threshold on `scores` that maximises balanced accuracy against 0/1 `labels`.

    Balanced accuracy is the mean of the clean images' accuracy (1 - FPR) and the
    adversarial images' (TPR) for the rule "adversarial when the score is above the
    threshold". The threshold returned is the midpoint between the two neighbouring
    distinct scores it separates; among equally good cuts the one nearest 0 (probability
    0.5) is taken.

    Args:
        scores: one real score per image (N,).
        labels: 0 (clean) or 1 (adversarial) per image; both must occur.

    Returns:
        The threshold, a float.

    Raises:
        ValueError: if the lengths differ, a score is not finite, or a class is missing.

    Examples:
        >>> from saliency_detect.detector import balanced_threshold
        >>> balanced_threshold([-2.0, -1.0, 3.0, 5.0], [0, 0, 1, 1])
        1.0
    """
    scores = np.asarray(scores, np.float64).reshape(-1)
    labels = check_binary_labels(labels, n=len(scores), name="labels")
    if not np.all(np.isfinite(scores)):
        raise ValueError("`scores` must be finite to set a threshold on them.")
    n_pos = int(labels.sum())
    n_neg = len(labels) - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError(
            f"Setting a balanced-accuracy threshold needs clean and adversarial images. "
            f"Received {n_neg} clean and {n_pos} adversarial."
        )
    order = np.argsort(scores, kind="stable")
    s, y = scores[order], labels[order]
    # Cut k: the k lowest scores are called clean, the others adversarial (k = 0 .. N).
    neg_below = np.concatenate([[0], np.cumsum(y == 0)])
    pos_below = np.concatenate([[0], np.cumsum(y == 1)])
    balanced = 0.5 * (neg_below / n_neg + (n_pos - pos_below) / n_pos)
    cuts = np.empty(len(s) + 1)
    cuts[0] = s[0] - 1.0
    cuts[-1] = s[-1]
    cuts[1:-1] = 0.5 * (s[:-1] + s[1:])
    possible = np.ones(len(s) + 1, bool)
    possible[1:-1] = s[:-1] < s[1:]  # a cut between equal scores cannot be made
    balanced = np.where(possible, balanced, -1.0)
    best = np.flatnonzero(balanced >= balanced.max() - 1e-12)
    return float(cuts[best[np.argmin(np.abs(cuts[best]))]])


def logistic_logit(pipeline: Pipeline, features: tf.Tensor) -> tf.Tensor:
    """A fitted `StandardScaler` + binary `LogisticRegression` pipeline, as TensorFlow ops.

    Returns the regression's `decision_function` of `features` (N, F) as an (N,) float32
    tensor, differentiable in `features`: the baselines' scores inside a graph (adaptive
    attacks) equal their NumPy scores.
    """
    scaler, regression = pipeline[0], pipeline[-1]
    features = tf.cast(features, tf.float64)
    standard = (features - scaler.mean_) / scaler.scale_
    coef = tf.constant(regression.coef_[0], tf.float64)
    logit = tf.linalg.matvec(standard, coef) + regression.intercept_[0]
    return tf.cast(logit, tf.float32)


class Detector(Protocol):
    """What evaluation needs of a fitted detector: a score per image and a threshold on it.

    Every detector of `saliency_detect.detector` is one; so is any object with these two
    members (and scikit-learn's fitted-state convention).
    """

    threshold_: float

    def decision_function(self, x: ArrayLike) -> np.ndarray:
        """Return one score per image; larger means more likely adversarial."""
        ...


class BinaryDetectorMixin(ClassifierMixin):
    """`predict_proba`, `predict`, `score` and `calibrate` from `decision_function`.

    The threshold `threshold_` is on the `decision_function` scale: an image is flagged
    when its score is above it. 0 (the fitted default) is probability 0.5. A detector is
    a binary classifier to scikit-learn (`ClassifierMixin`'s tags), so its model
    selection tools split clean and adversarial images in proportion (stratified folds).
    """

    def __sklearn_clone__(self):
        """An unfitted detector with the same parameters (`sklearn.base.clone` calls this).

        scikit-learn's default deep-copies every parameter, which would copy the
        classifier f (and a strategy or user detector model): a clone shares those
        objects, as the detector it came from does, and copies plain containers.
        """
        params = {
            name: copy.deepcopy(value) if isinstance(value, (list, dict, set, np.ndarray)) else value
            for name, value in self.get_params(deep=False).items()
        }
        return type(self)(**params)

    def decision_function(self, x: ArrayLike) -> np.ndarray:
        """Return one score per image: larger is more likely adversarial, flagged above `threshold_`.

        What the score is depends on the detector (its class says: D's logit, a
        regression's logit, a softmax distance); `threshold_` is on its scale.

        Args:
            x: images (N, H, W, C).

        Returns:
            Scores (N,).

        Raises:
            sklearn.exceptions.NotFittedError: before `fit`.
            ValueError: for invalid images (shape, channels, dtype, range, NaN, empty).
        """
        check_is_fitted(self)
        return self._decision_function(self._check_scored(x))

    def _check_scored(self, x: ArrayLike) -> np.ndarray:
        """The images to score, checked against the classifier's input and `clip_range`."""
        return check_images(x, clip_range=self.clip_range, expected_shape=model_image_shape(self.classifier))

    def _decision_function(self, x: np.ndarray) -> np.ndarray:  # pragma: no cover - every detector defines it
        """The scores of images `_check_scored` has checked: each detector's own computation."""
        raise NotImplementedError

    def _set_probability_threshold(self) -> None:
        """The fitted default of a detector ending in a logit: threshold 0 (probability 0.5)."""
        self.threshold_ = 0.0
        self.threshold_source_ = "probability 0.5"
        self.classes_ = np.array([0, 1])

    def predict_proba(self, x: ArrayLike) -> np.ndarray:
        """Return `(N, 2)` probabilities: column 0 clean, column 1 adversarial.

        Args:
            x: images (N, H, W, C).

        Returns:
            float64 array whose rows sum to 1.

        Raises:
            sklearn.exceptions.NotFittedError: before `fit`.
            ValueError: for invalid images.
        """
        check_is_fitted(self)
        p = 1.0 / (1.0 + np.exp(-np.asarray(self.decision_function(x), np.float64)))
        return np.stack([1.0 - p, p], axis=1)

    def predict(self, x: ArrayLike) -> np.ndarray:
        """Return 1 (adversarial) where the score is above `threshold_`, else 0.

        Raises:
            sklearn.exceptions.NotFittedError: before `fit`.
            ValueError: for invalid images.
        """
        check_is_fitted(self)
        return (np.asarray(self.decision_function(x)) > self.threshold_).astype(np.int64)

    def score(self, x: ArrayLike, is_adversarial: ArrayLike) -> float:
        """Return the accuracy of `predict(x)` against 0/1 labels.

        Raises:
            sklearn.exceptions.NotFittedError: before `fit`.
            ValueError: for invalid images or labels.
        """
        check_is_fitted(self)
        predicted = self.predict(x)
        labels = check_binary_labels(is_adversarial, n=len(predicted))
        return float(np.mean(predicted == labels))

    def calibrate(self, x_clean: ArrayLike, *, fpr: float = 0.05) -> BinaryDetectorMixin:
        """Set `threshold_` so that a share `fpr` of clean images is flagged.

        The threshold is the `1 - fpr` quantile of the clean images' scores (rounded up
        to an observed score), so on these images at most `fpr` are flagged; use
        held-out clean images, not the training ones.

        Args:
            x_clean: clean images (N, H, W, C), at least `1 / fpr` of them (fewer
                cannot place the quantile: the largest score would flag none).
            fpr: the target false-positive rate, in (0, 1).

        Returns:
            `self`.

        Raises:
            sklearn.exceptions.NotFittedError: before `fit`.
            ValueError: for `fpr` outside (0, 1), invalid images, or fewer than
                `1 / fpr` of them.
        """
        check_is_fitted(self)
        fpr = check_positive_float(fpr, "fpr")
        if fpr >= 1:
            raise ValueError(f"`fpr` must be a rate in (0, 1). Received: fpr={fpr}")
        scores = np.asarray(self.decision_function(x_clean), np.float64)
        needed = math.ceil(1.0 / fpr - 1e-9)
        if len(scores) < needed:
            # Fewer images than 1/fpr: the quantile is the largest score, nothing is flagged
            # and the rate asked for cannot be placed, let alone checked.
            raise ValueError(
                f"`calibrate` at fpr={fpr:g} needs at least {needed} clean images (1 / fpr) to place the "
                f"threshold; received {len(scores)}. Pass more held-out clean images or a larger `fpr`."
            )
        self.threshold_ = float(np.quantile(scores, 1.0 - fpr, method="higher"))
        self.threshold_source_ = f"calibrated at FPR {fpr:g}"
        return self
