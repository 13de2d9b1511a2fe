"""The detector-aware (dynamic) adversary of Metzen et al. 2017."""

from __future__ import annotations

from typing import TYPE_CHECKING

import keras
import numpy as np
import tensorflow as tf
from numpy.typing import ArrayLike

from saliency_detect._classes import resolve_classes
from saliency_detect._gradients import score_gradients
from saliency_detect._prepared import run_compiled
from saliency_detect._validation import model_image_shape
from saliency_detect.attacks._common import (
    as_column,
    detector_score,
    loss_gradient,
    per_image,
    setup,
    steepest_step,
    step_owner,
)
from saliency_detect.attacks._iterative import check_iterative, iterate

if TYPE_CHECKING:
    from saliency_detect.detector._base import Detector


def detector_aware(
    model: keras.Model,
    x: ArrayLike,
    y: ArrayLike | None = None,
    *,
    eps: float,
    norm: float = np.inf,
    clip_range: tuple[float, float] = (0.0, 1.0),
    targeted: bool = False,
    batch_size: int = 128,
    detector: Detector | keras.Model,
    sigma: float = 0.5,
    eps_iter: float | None = None,
    nb_iter: int = 10,
) -> np.ndarray:
    """The dynamic adversary of Metzen et al. 2017 ("On detecting adversarial perturbations").

    An iterative attack on the classifier and its detector at once: each of `nb_iter`
    steps moves by `eps_iter` along `(1 - sigma) * step(classifier loss gradient) +
    sigma * step(-detector logit gradient)` (signs for L-infinity, unit vectors for L2),
    then clips to `clip_range` and projects onto the `eps`-ball. `sigma=0` is BIM;
    `sigma=1` only evades the detector. The detector's gradient is taken through its
    whole graph, the saliency computation included (second-order gradients of the
    classifier); the baselines' scores are differentiated through their feature
    extractors, Feature Squeezing's bit-depth reduction by BPDA. For piecewise-linear
    classifiers (ReLU, max-pooling) the gradient saliency is locally constant, so that
    part is zero almost everywhere and the detector's gradient flows through its image
    input.

    Args:
        model: the classifier f.
        x: clean images (N, H, W, C) in `clip_range`.
        y: true labels, or targets when `targeted`; None uses the model's predictions.
        eps: radius of the allowed perturbation (> 0).
        norm: `np.inf` or `2`.
        clip_range: `(low, high)` valid pixel values.
        targeted: move the classifier towards `y`.
        batch_size: images per compiled step.
        detector: a fitted detector of `saliency_detect.detector` (its
            `decision_tensor` is differentiated), or a Keras model from images to the
            detector's logit of "adversarial" (Metzen et al.'s "alpha" is `eps_iter`,
            their "steps" `nb_iter`).
        sigma: weight of the detector's gradient, in [0, 1].
        eps_iter: step size; None takes `2.5 * eps / nb_iter`.
        nb_iter: number of steps.

    Returns:
        Adversarial images, float32, same shape as `x`, inside `clip_range` and the
        `eps`-ball.

    Raises:
        ValueError: for invalid images, labels or parameters, or `sigma` outside [0, 1].
        TypeError: for a `detector` that is neither a detector nor a Keras model.

    Examples:
        >>> import numpy as np
        >>> from saliency_detect.attacks import detector_aware
        >>> from saliency_detect.detector import SaliencyDetector
        >>> from saliency_detect.models import mnist_net_f
        >>> f = mnist_net_f()
        >>> x = np.random.default_rng(0).random((16, 28, 28, 1), dtype=np.float32) * 0.5
        >>> det = SaliencyDetector(f, epochs=1, verbose=0, random_state=0).fit(x, x + 0.5)
        >>> x_adv = detector_aware(f, x[:4], eps=0.1, detector=det, nb_iter=3)
        >>> bool(np.abs(x_adv - x[:4]).max() <= 0.1 + 1e-6)
        True
    """
    prepared, x, labels = setup(model, x, y, clip_range=clip_range, targeted=targeted, batch_size=batch_size)
    eps, norm, nb_iter, eps_iter = check_iterative(
        eps, norm, nb_iter, eps_iter, clip_range=clip_range, image_shape=x.shape[1:]
    )
    if isinstance(sigma, bool) or not isinstance(sigma, (int, float)) or not 0 <= sigma <= 1:
        raise ValueError(f"`sigma` must be a weight in [0, 1]. Received: sigma={sigma!r}")
    score, _ = detector_score(detector)
    expected = model_image_shape(detector) if isinstance(detector, keras.Model) else None
    expected = getattr(detector, "input_shape_", expected)
    if expected is not None and tuple(expected) != tuple(x.shape[1:]):
        raise ValueError(
            f"`detector` takes images of shape {tuple(expected)}, but `x` has images of shape {x.shape[1:]}."
        )
    constants = {
        "score": score,
        "sigma": float(sigma),
        "norm": norm,
        "nb_iter": nb_iter,
        "low": float(clip_range[0]),
        "high": float(clip_range[1]),
        "targeted": targeted,
    }
    # Kept on the detector, not in the classifier's cache: the step holds the detector,
    # which holds the classifier, and the per-model cache must not keep models alive.
    cache, owner = step_owner(detector)
    n = len(x)
    return run_compiled(
        prepared, x, labels, build=_detector_aware_step, constants=constants, cache=cache, owner=owner,
        batch_size=batch_size, extra=(per_image(eps, n), per_image(eps_iter, n)),
        extra_specs=(tf.TensorSpec((None,), tf.float32),) * 2,
    )  # fmt: skip


def _detector_aware_step(prepared, *, score, sigma, norm, nb_iter, low, high, targeted):
    def detector_gradient(images):
        return score_gradients(lambda z: (score(z), ()), images)[2][0]

    def step(x, labels, eps, eps_iter):
        eps, eps_iter = as_column(eps), as_column(eps_iter)
        labels = resolve_classes(prepared.model(x, training=False), labels)

        def move(adv):
            classifier = steepest_step(loss_gradient(prepared, adv, labels, targeted), eps_iter, norm)
            return (1.0 - sigma) * classifier + sigma * steepest_step(-detector_gradient(adv), eps_iter, norm)

        return iterate(x, x, move, eps=eps, norm=norm, nb_iter=nb_iter, low=low, high=high)

    return step
