"""Measuring an attacker who knows the detector: success means fooled and not flagged."""

from __future__ import annotations

from typing import TYPE_CHECKING

import keras
import numpy as np
from numpy.typing import ArrayLike
from sklearn.utils.validation import check_is_fitted

from saliency_detect._validation import check_images, check_labels, model_image_shape
from saliency_detect.models._training import predict_labels

if TYPE_CHECKING:
    from saliency_detect.detector._base import Detector


def adaptive_success(
    classifier: keras.Model,
    detector: Detector,
    x_adv: ArrayLike,
    y: ArrayLike,
    *,
    targeted: bool = False,
    batch_size: int = 256,
    clip_range: tuple[float, float] | None = (0.0, 1.0),
) -> np.ndarray:
    """Which adversarial images beat the classifier **and** its detector.

    An attack on a defended classifier succeeds on an image only if f is fooled (its
    prediction differs from the true label; equals the target when `targeted`) and the
    detector, at its threshold `threshold_` (set by `fit` or `calibrate`), does not flag
    the image (Carlini & Wagner 2017). The mean of the result is the attack's success
    rate against the defence; `1 - mean` is the defence's robust accuracy in the sense
    of "correctly classified or detected".

    Args:
        classifier: the classifier f.
        detector: a fitted detector (any of `saliency_detect.detector`'s, or an object
            with `decision_function` and `threshold_`).
        x_adv: adversarial images (N, H, W, C).
        y: their true labels, or the targets when `targeted` (N,).
        targeted: success is reaching `y` rather than leaving it.
        batch_size: images per forward pass of f.
        clip_range: the range images must lie in, or None.

    Returns:
        A boolean vector (N,): True where f is fooled and the detector stays silent.

    Raises:
        ValueError: for invalid images or labels.
        sklearn.exceptions.NotFittedError: if `detector` is not fitted.

    Examples:
        >>> import numpy as np
        >>> from saliency_detect.detector import FeatureSqueezingDetector
        >>> from saliency_detect.evaluation import adaptive_success
        >>> from saliency_detect.models import mnist_net_f
        >>> f = mnist_net_f()
        >>> x = np.random.default_rng(0).random((40, 28, 28, 1), dtype=np.float32)
        >>> det = FeatureSqueezingDetector(f).fit(x)
        >>> adaptive_success(f, det, x[:3], [0, 1, 2]).dtype
        dtype('bool')
    """
    check_is_fitted(detector)
    if not isinstance(targeted, bool):
        raise ValueError(f"`targeted` must be True or False. Received: targeted={targeted!r}")
    x_adv = check_images(
        x_adv, name="x_adv", clip_range=clip_range, expected_shape=model_image_shape(classifier)
    )
    y = check_labels(y, n=len(x_adv), name="y")
    predicted = predict_labels(classifier, x_adv, batch_size=batch_size, clip_range=None)
    fooled = predicted == y if targeted else predicted != y
    flagged = np.asarray(detector.decision_function(x_adv)) > float(detector.threshold_)
    return fooled & ~flagged
