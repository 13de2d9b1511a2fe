"""The joint adaptive attack of Carlini & Wagner 2017: PGD on the classifier and its detector at once."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING

import keras
import numpy as np
import tensorflow as tf
from numpy.typing import ArrayLike

from saliency_detect._validation import check_non_negative_float
from saliency_detect.attacks._common import detector_score
from saliency_detect.attacks._iterative import projected_gradient

if TYPE_CHECKING:
    from saliency_detect.detector._base import Detector


def joint_pgd(
    model: keras.Model,
    x: ArrayLike,
    y: ArrayLike | None = None,
    *,
    eps: float,
    norm: float = np.inf,
    clip_range: tuple[float, float] = (0.0, 1.0),
    targeted: bool = False,
    batch_size: int = 128,
    random_state: int | None = None,
    detector: Detector | keras.Model,
    detector_weight: float = 1.0,
    eps_iter: float | None = None,
    nb_iter: int = 40,
    rand_init: bool = True,
    restarts: int = 1,
    loss: str = "margin",
    confidence: float = 0.0,
    mode: str = "selective",
) -> np.ndarray:
    """PGD against a classifier and its detector jointly (Carlini & Wagner 2017).

    Carlini & Wagner, "Adversarial examples are not easily detected: bypassing ten
    detection methods", AISec 2017: an attacker who knows the detector D optimises a
    loss that asks for "misclassified by f **and** not flagged by D". With `L_f` f's
    loss (`loss`: the logit margin `max_{i != y} Z_i - Z_y` capped at `confidence`, or
    the cross-entropy) and `L_D = softplus(s(x') - threshold)` (`s`: D's
    `decision_function` computed inside the graph by `decision_tensor`, `threshold`:
    D's `threshold_`, so `L_D` is D's cross-entropy towards "clean" centred on its
    decision boundary), each step ascends

    - `mode="sum"`: `L_f - detector_weight * L_D`, Carlini & Wagner's additive form;
    - `mode="selective"`: `L_f` until f is fooled by `confidence`, then
      `-detector_weight * L_D` (Bryniarski et al. 2022's selective gradient): the two terms never
      fight over one step, which a summed loss under sign steps often loses to the
      larger gradient (measured on MNIST in `docs/results.md`).

    The saliency detector is differentiated through its in-graph saliency (second-order
    gradients of f), the baselines through their feature extractors (kernel densities,
    LID, Mahalanobis distances and the logistic regression as TensorFlow ops), Feature
    Squeezing's bit-depth reduction by BPDA (identity backward; Athalye et al. 2018).
    Each run returns its last iterate that fooled f without being flagged, if any; with
    `restarts > 1` each image keeps a successful restart if there is one, else the one
    with the highest final loss. `detector_weight=0` ignores the detector: with
    `mode="sum"` it is `pgd` with the same `loss`, image for image.

    An attack succeeds only if f is fooled and D, at its threshold, does not flag the
    image: `evaluation.adaptive_success` counts that.

    Args:
        model: the classifier f.
        x: clean images (N, H, W, C) in `clip_range`.
        y: true labels, or targets when `targeted`; None uses the model's predictions.
        eps: radius of the allowed perturbation (> 0).
        norm: `np.inf` or `2`.
        clip_range: `(low, high)` valid pixel values.
        targeted: move the classifier towards `y`.
        batch_size: images per compiled step.
        random_state: seed of the random starts.
        detector: a fitted detector of `saliency_detect.detector` (anything with
            `decision_tensor` and `threshold_`), or a Keras model from images to the
            logit of "adversarial" (threshold 0).
        detector_weight: weight of the detector term (>= 0). D's score is a logit for
            every detector but Feature Squeezing, whose L1 score lies in [0, 2].
        eps_iter: step size; None takes `2.5 * eps / nb_iter`.
        nb_iter: steps per restart.
        rand_init: start from a random point of the ball.
        restarts: random restarts per image.
        loss: f's loss, `"margin"` or `"cross_entropy"`.
        confidence: the logit margin (>= 0, `np.inf` for none) beyond which the margin
            loss stops pulling; ignored by the cross-entropy.
        mode: `"selective"` or `"sum"`.

    Returns:
        Adversarial images, float32, same shape as `x`, inside `clip_range` and the ball.

    Raises:
        ValueError: for invalid images, labels or parameters.
        TypeError: for a `detector` that is neither a detector nor a Keras model.
        sklearn.exceptions.NotFittedError: for an unfitted detector.

    Examples:
        >>> import numpy as np
        >>> from saliency_detect.attacks import joint_pgd
        >>> from saliency_detect.detector import FeatureSqueezingDetector
        >>> from saliency_detect.models import mnist_net_f
        >>> f = mnist_net_f()
        >>> x = np.random.default_rng(0).random((40, 28, 28, 1), dtype=np.float32)
        >>> det = FeatureSqueezingDetector(f).fit(x)
        >>> x_adv = joint_pgd(f, x[:4], eps=0.1, detector=det, nb_iter=3, random_state=0)
        >>> bool(np.abs(x_adv - x[:4]).max() <= 0.1 + 1e-6)
        True
    """
    weight = check_non_negative_float(detector_weight, "detector_weight")
    if not (isinstance(confidence, float) and confidence == np.inf):  # np.inf: no cap
        confidence = check_non_negative_float(confidence, "confidence")
    if mode not in MODES:
        raise ValueError(f"`mode` must be one of {list(MODES)}. Received: mode={mode!r}")
    if mode == "selective" and (loss != "margin" or np.isinf(confidence)):
        raise ValueError(
            "`mode='selective'` switches to the detector term once f is fooled by `confidence`, which "
            "only the margin loss with a finite confidence tells: pass loss='margin' and a finite "
            f"confidence, or mode='sum'. Received: loss={loss!r}, confidence={confidence!r}"
        )
    score, threshold = detector_score(detector)
    objective = _JointObjective(score, weight, mode, threshold, float(confidence), bool(targeted))
    return projected_gradient(
        model, x, y, eps=eps, norm=norm, clip_range=clip_range, targeted=targeted, batch_size=batch_size,
        random_state=random_state, eps_iter=eps_iter, nb_iter=nb_iter, rand_init=rand_init,
        restarts=restarts, loss=loss, confidence=confidence, objective=objective, detector=detector,
    )  # fmt: skip


@dataclasses.dataclass(frozen=True)
class _JointObjective:
    """The joint loss of f and D, and which images fool f without being flagged.

    A value (equal settings compare equal), so the compiled step is reused across calls
    on one detector; `score` is the detector's bound `decision_tensor`.
    """

    score: Callable[[tf.Tensor], tf.Tensor]
    weight: float
    mode: str
    threshold: float
    confidence: float
    targeted: bool

    def __call__(self, images, labels, logits, f_loss):
        scores = self.score(images)
        detector_loss = self.weight * tf.nn.softplus(scores - self.threshold)
        if self.mode == "sum":
            total = f_loss - detector_loss
        else:  # the capped margin reaches `confidence` exactly when f is fooled by that margin
            total = tf.where(f_loss >= self.confidence, -detector_loss, f_loss)
        predicted = tf.argmax(logits, axis=-1, output_type=tf.int32)
        fooled = tf.equal(predicted, labels) if self.targeted else tf.not_equal(predicted, labels)
        # With no weight the detector plays no part, not even in choosing the iterate.
        return total, (fooled & (scores <= self.threshold)) if self.weight > 0 else tf.zeros_like(fooled)


#: The ways `joint_pgd` combines the classifier's and the detector's losses.
MODES = ("selective", "sum")
