"""What every attack shares: argument checks, labels, norm-ball geometry, the loss gradient.

Conventions (cleverhans's): attacks take logits (a softmax-ending model is read at the
softmax's input), `y=None` means the model's own predictions on the clean images
(Kurakin et al.'s fix for label leaking), and `targeted=True` takes `y` as the targets.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable

import keras
import numpy as np
import tensorflow as tf
from sklearn.utils.validation import check_is_fitted

from saliency_detect._classes import predicted_classes
from saliency_detect._gradients import score_gradients
from saliency_detect._prepared import Prepared, prepare
from saliency_detect._validation import (
    check_images,
    check_labels,
    check_positive_float,
    check_positive_int,
    model_image_shape,
)

_TINY = 1e-12

#: The joint attacks' loss: (images, labels, f's logits, f's loss) -> (loss, success), per image.
Objective = Callable[[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor], tuple[tf.Tensor, tf.Tensor]]


def check_norm(norm) -> float:
    """Return `np.inf` or `2.0`; accepts `np.inf`, `"inf"`, `"linf"`, `2`, `"l2"`."""
    if isinstance(norm, str):
        norm = {"inf": np.inf, "linf": np.inf, "l2": 2, "2": 2}.get(norm.lower(), norm)
    if isinstance(norm, numbers.Real) and not isinstance(norm, bool) and norm in (np.inf, 2):
        return float(norm)
    raise ValueError(f"`norm` must be np.inf (L-infinity) or 2 (L2). Received: norm={norm!r}")


def check_clip_range(clip_range) -> tuple[float, float]:
    """Return `(low, high)` with low < high, else raise ValueError."""
    try:
        low, high = (float(v) for v in clip_range)
    except (TypeError, ValueError):
        raise ValueError(
            f"`clip_range` must be a pair (low, high). Received: clip_range={clip_range!r}"
        ) from None
    if not (np.isfinite(low) and np.isfinite(high) and low < high):
        raise ValueError(f"`clip_range` must be finite with low < high. Received: clip_range={clip_range!r}")
    return low, high


def check_eps(eps, norm: float, clip_range: tuple[float, float], image_shape) -> float:
    """Return `eps` if it is positive and can be reached inside `clip_range`, else raise ValueError.

    An L-infinity `eps` wider than the clip range (8 for images in [0, 1], an ε given on
    the 0-255 scale) lets every pixel go anywhere: the attack would binarise the images
    rather than perturb them. The same holds in L2 beyond the range's width times the
    square root of the pixel count.
    """
    eps = check_positive_float(eps, "eps")
    low, high = float(clip_range[0]), float(clip_range[1])
    width = high - low
    reach = width if norm == np.inf else width * float(np.sqrt(np.prod(image_shape)))
    if eps > reach:
        name = "L-infinity" if norm == np.inf else "L2"
        raise ValueError(
            f"`eps` must be at most {reach:.6g} for images in clip_range ({low:g}, {high:g}) ({name}): a "
            f"larger ε lets every pixel take any value. Received: eps={eps!r}. Was it given on another "
            f"scale? For images in (0, 1), 8/255 = {8 / 255:.4f}."
        )
    return eps


def setup(
    model, x, y, *, clip_range, targeted: bool, batch_size: int
) -> tuple[Prepared, np.ndarray, np.ndarray]:
    """Validate an attack's common arguments; return the model's logits view, images and labels.

    Labels are int32 with `PREDICTED` (-1) for "the model's prediction on the clean image".
    """
    clip_range = check_clip_range(clip_range)
    x = check_images(x, clip_range=clip_range, expected_shape=model_image_shape(model))
    check_positive_int(batch_size, "batch_size")
    if not isinstance(targeted, bool):
        raise ValueError(f"`targeted` must be True or False. Received: targeted={targeted!r}")
    prepared = prepare(model)
    num_classes = prepared.num_classes(x.shape[1:])
    if y is None:
        if targeted:
            raise ValueError("`targeted=True` needs `y`: the target class of every image.")
        labels = predicted_classes(len(x))
    else:
        labels = check_labels(y, n=len(x), num_classes=num_classes, name="y").astype(np.int32)
    return prepared, x, labels


#: The losses an iterative attack can ascend (`pgd`'s `loss`).
LOSSES = ("cross_entropy", "margin")


def check_loss(loss) -> str:
    """Return `loss` if it names one of `LOSSES`, else raise ValueError."""
    if loss not in LOSSES:
        raise ValueError(f"`loss` must be one of {list(LOSSES)}. Received: loss={loss!r}")
    return loss


def class_margin(logits: tf.Tensor, classes: tf.Tensor) -> tf.Tensor:
    """`Z_class - max_{i != class} Z_i` per row: positive when `classes` wins."""
    real = tf.gather(logits, classes, batch_dims=1)
    others = tf.where(tf.one_hot(classes, tf.shape(logits)[-1]) > 0, -np.inf, logits)
    return real - tf.reduce_max(others, axis=-1)


def attack_loss(
    prepared: Prepared,
    x: tf.Tensor,
    labels: tf.Tensor,
    targeted: bool,
    objective: Objective | None = None,
    loss: str = "cross_entropy",
    confidence: float = np.inf,
) -> tuple[tf.Tensor, tf.Tensor | None]:
    """The per-image loss an attack ascends, and (with `objective`) which images succeed.

    `"cross_entropy"`: f's cross-entropy on `labels` (negated when targeted).
    `"margin"`: Carlini & Wagner's logit margin, `max_{i != y} Z_i - Z_y` (targeted:
    `Z_t - max_{i != t} Z_i`), capped at `confidence`: once f is fooled by that margin
    the classifier term stops pulling. With `objective` (the joint attacks), the loss
    and the success flags are `objective(x, labels, logits, that loss)`, computed from
    the same forward pass; without it the flags are None.
    """
    logits = prepared.model(x, training=False)
    if loss == "margin":
        margin = class_margin(logits, labels)
        value = tf.minimum(margin if targeted else -margin, confidence)
    else:
        value = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
        value = -value if targeted else value
    return (value, None) if objective is None else objective(x, labels, logits, value)


def loss_gradient(prepared: Prepared, x: tf.Tensor, labels: tf.Tensor, targeted: bool) -> tf.Tensor:
    """Gradient of f's cross-entropy (negated when targeted) with respect to `x`."""
    return loss_gradient_and_success(prepared, x, labels, targeted)[0]


def loss_gradient_and_success(
    prepared: Prepared,
    x: tf.Tensor,
    labels: tf.Tensor,
    targeted: bool,
    objective: Objective | None = None,
    loss: str = "cross_entropy",
    confidence: float = np.inf,
) -> tuple[tf.Tensor, tf.Tensor | None]:
    """Gradient of `attack_loss` with respect to `x`, and its success flags from the same pass."""
    flags = []

    def score_fn(z):
        value, success = attack_loss(prepared, z, labels, targeted, objective, loss, confidence)
        flags.append(success)  # a tensor of the same graph, read after the tape
        return value, ()

    grad = score_gradients(score_fn, x)[2][0]
    return grad, flags[0]


def detector_score(detector) -> tuple[Callable[[tf.Tensor], tf.Tensor], float]:
    """A detector's score as a differentiable function of an image batch, and its threshold.

    Every detector of `saliency_detect.detector` offers `decision_tensor` (its
    `decision_function` inside the graph; BPDA through steps without a useful gradient)
    and flags an image when that score is above `threshold_`. A bare Keras model is
    taken as images -> the logit of "adversarial", flagged above 0.

    Raises:
        TypeError: for anything else.
        sklearn.exceptions.NotFittedError: for an unfitted detector.
    """
    if isinstance(detector, keras.Model):
        return (lambda z: tf.reshape(detector(z, training=False), [-1])), 0.0
    if callable(getattr(detector, "decision_tensor", None)):
        check_is_fitted(detector)
        return detector.decision_tensor, float(detector.threshold_)
    raise TypeError(
        "`detector` must be a detector of saliency_detect.detector (anything with `decision_tensor` and "
        "`threshold_`), or a Keras model mapping images to the logit of 'adversarial'. "
        f"Received: {type(detector).__name__}"
    )


def step_owner(detector) -> tuple[bool, object | None]:
    """Where a step reading `detector` is cached: `(cache, owner)` for `Prepared.compiled`.

    A detector of the library keeps the steps compiled for it (until it is refit); a bare
    Keras model, whose score function is made anew on every call, compiles per call; with
    no detector (None) the step is the classifier's, cached with its other steps.
    """
    if detector is None:
        return True, None
    return (False, None) if isinstance(detector, keras.Model) else (True, detector)


def _per_image_norm(t: tf.Tensor) -> tf.Tensor:
    return tf.sqrt(tf.maximum(_TINY, tf.reduce_sum(tf.square(t), axis=[1, 2, 3], keepdims=True)))


def per_image(value: float, n: int) -> np.ndarray:
    """A per-image float32 vector: sizes travel as tensors, so a new eps never retraces."""
    return np.full(n, value, np.float32)


def as_column(size: tf.Tensor) -> tf.Tensor:
    """(N,) per-image sizes as (N, 1, 1, 1), to broadcast against images."""
    return tf.reshape(size, [-1, 1, 1, 1])


def unit_l2(t: tf.Tensor) -> tf.Tensor:
    """Each image of `t` scaled to L2 norm 1 (0 stays 0), however small its values.

    Dividing by the largest magnitude first keeps a vanishing gradient's direction: the
    loss gradient of an image f classifies with float32-saturated confidence has a norm
    near 1e-11, and flooring its squared norm (cleverhans's `1e-12`) would shrink the step
    to nothing, leaving such images unattacked by every L2 step.
    """
    peak = tf.reduce_max(tf.abs(t), axis=[1, 2, 3], keepdims=True)
    scaled = tf.math.divide_no_nan(t, peak)
    length = tf.sqrt(tf.reduce_sum(tf.square(scaled), axis=[1, 2, 3], keepdims=True))
    return tf.math.divide_no_nan(scaled, length)


def steepest_step(grad: tf.Tensor, size: tf.Tensor, norm: float) -> tf.Tensor:
    """The step of length `size` (N, 1, 1, 1) in `norm` that most increases a linear function."""
    if norm == np.inf:
        return size * tf.sign(grad)
    return size * unit_l2(grad)


def clip_to_ball(eta: tf.Tensor, eps: tf.Tensor, norm: float) -> tf.Tensor:
    """Project a perturbation onto the `norm` ball of radius `eps` (N, 1, 1, 1) (scaling, for L2)."""
    if norm == np.inf:
        return tf.clip_by_value(eta, -eps, eps)
    return eta * tf.minimum(1.0, eps / _per_image_norm(eta))


def random_in_ball(shape, eps: tf.Tensor, norm: float, seed: tf.Tensor) -> tf.Tensor:
    """A uniform random point of the `norm` ball of radius `eps` (N, 1, 1, 1), per image (stateless)."""
    if norm == np.inf:
        return eps * tf.random.stateless_uniform(shape, seed, minval=-1.0, maxval=1.0)
    direction = unit_l2(tf.random.stateless_normal(shape, seed))
    dims = tf.cast(tf.reduce_prod(shape[1:]), tf.float32)
    radius = eps * tf.random.stateless_uniform([shape[0], 1, 1, 1], seed + 1) ** (1.0 / dims)
    return direction * radius


def image_seeds(random_state, n: int) -> np.ndarray:
    """One int64 seed per image from `random_state` (None: fresh entropy)."""
    return np.random.default_rng(random_state).integers(0, 2**31 - 1, size=n, dtype=np.int64)
