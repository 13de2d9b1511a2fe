"""Gradient-family saliency: vanilla gradient, guided backprop, deconvnet, SmoothGrad, Integrated Gradients.

All take the same arguments (see `gradient`) and return maps of the input's height and
width. The class score is always the pre-softmax logit.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf
from numpy.typing import ArrayLike

from saliency_detect._gradients import score_gradients
from saliency_detect._prepared import Prepared
from saliency_detect._validation import check_positive_float, check_positive_int
from saliency_detect.saliency import _relu_rules  # noqa: F401  (registers the guided / deconvnet views)
from saliency_detect.saliency._common import check_reduce, reduce_channels, run_method, select_scores


def _class_gradient(prepared: Prepared, inputs: tf.Tensor, target: tf.Tensor) -> tf.Tensor:
    """D logit[target] / d inputs; where target is -1 the predicted class of `inputs` is used."""

    def score_fn(z):
        return select_scores(prepared.model(z, training=False), target)[0], ()

    return score_gradients(score_fn, inputs)[2][0]


def _gradient_step(prepared, *, reduce):
    def step(x, target):
        return reduce_channels(_class_gradient(prepared, x, target), reduce)

    return step


def _gradient_map(model, x, *, target, labels, batch_size, reduce, rule):
    return run_method(
        model, x, target=target, labels=labels, batch_size=batch_size, rule=rule,
        build=_gradient_step, constants={"reduce": check_reduce(reduce)},
    )  # fmt: skip


def gradient(
    model: keras.Model,
    x: ArrayLike,
    *,
    target: str | int | ArrayLike = "predicted",
    labels: ArrayLike | None = None,
    batch_size: int = 64,
    reduce: str = "none",
) -> np.ndarray:
    """Vanilla gradient saliency (Simonyan et al. 2013): d class logit / d input.

    The class score is the pre-softmax logit; for a model ending in a softmax the logit
    is read from the softmax's input. The model is never modified.

    Args:
        model: a Keras classifier (functional or Sequential; logits or softmax output).
        x: images (N, H, W, C), NumPy array or tensor.
        target: `"predicted"` (the model's class for each image), `"true"` (the classes
            in `labels`) or an integer array of classes, one per image (e.g. the
            adversarial class), or one integer for all.
        labels: true classes (N,), needed for `target="true"`.
        batch_size: images per compiled step.
        reduce: `"none"` keeps the signed gradient (N, H, W, C), the detector's input;
            `"abs"` its absolute value (N, H, W, C); `"max_abs"` the maximum over channels
            of the absolute value (N, H, W), the attention paper's map.

    Returns:
        float32 NumPy maps, (N, H, W, C) or (N, H, W) for `"max_abs"`.

    Raises:
        ValueError: for images of the wrong rank, shape or channel count, NaN, an empty
            batch, or an invalid `target`, `labels` or `reduce`.
        TypeError: if `model` is not a Keras model.

    Examples:
        >>> import numpy as np
        >>> from saliency_detect.models import mnist_net_f
        >>> from saliency_detect.saliency import gradient
        >>> x = np.random.default_rng(0).random((4, 28, 28, 1), dtype=np.float32)
        >>> gradient(mnist_net_f(), x).shape
        (4, 28, 28, 1)
        >>> gradient(mnist_net_f(), x, target=np.array([1, 2, 3, 4]), reduce="max_abs").shape
        (4, 28, 28)
    """
    return _gradient_map(
        model, x, target=target, labels=labels, batch_size=batch_size, reduce=reduce, rule="vanilla"
    )


def guided_backprop(
    model: keras.Model,
    x: ArrayLike,
    *,
    target: str | int | ArrayLike = "predicted",
    labels: ArrayLike | None = None,
    batch_size: int = 64,
    reduce: str = "none",
) -> np.ndarray:
    """Guided backpropagation (Springenberg et al. 2014).

    Gradient of the class logit where every ReLU passes back only positive gradients at
    positive inputs: `g * [z > 0] * [g > 0]`. Computed on a clone of the model whose ReLUs
    (fused `activation="relu"`, `Activation("relu")` and `ReLU` layers, bounded or
    thresholded ones included, in nested sub-models too) carry that rule; the clone's
    weights follow the model's at every call and its logits are checked against the
    model's once. ReLUs the clone cannot reach (inside custom layers or Lambdas) and
    non-ReLU nonlinearities keep their vanilla gradient, with a warning.

    Args:
        model: a functional or Sequential Keras classifier.
        x: images (N, H, W, C).
        target: `"predicted"`, `"true"` (with `labels`) or class indices; see `gradient`.
        labels: true classes, for `target="true"`.
        batch_size: images per compiled step.
        reduce: `"none"`, `"abs"` or `"max_abs"`; see `gradient`.

    Returns:
        float32 NumPy maps of the input's height and width.

    Raises:
        TypeError: if the model is subclassed (it cannot be cloned).
        ValueError: for invalid images or arguments; see `gradient`.

    Examples:
        >>> import numpy as np
        >>> from saliency_detect.models import mnist_net_f
        >>> from saliency_detect.saliency import guided_backprop
        >>> x = np.random.default_rng(0).random((2, 28, 28, 1), dtype=np.float32)
        >>> guided_backprop(mnist_net_f(), x, reduce="max_abs").shape
        (2, 28, 28)
    """
    return _gradient_map(
        model, x, target=target, labels=labels, batch_size=batch_size, reduce=reduce, rule="guided"
    )


def deconvnet(
    model: keras.Model,
    x: ArrayLike,
    *,
    target: str | int | ArrayLike = "predicted",
    labels: ArrayLike | None = None,
    batch_size: int = 64,
    reduce: str = "none",
) -> np.ndarray:
    """Deconvnet saliency (Zeiler & Fergus 2014).

    Gradient of the class logit where every ReLU passes back the positive part of the
    incoming gradient, whatever its input: `g * [g > 0]`. Built like `guided_backprop`.

    Args:
        model: a functional or Sequential Keras classifier.
        x: images (N, H, W, C).
        target: `"predicted"`, `"true"` (with `labels`) or class indices; see `gradient`.
        labels: true classes, for `target="true"`.
        batch_size: images per compiled step.
        reduce: `"none"`, `"abs"` or `"max_abs"`; see `gradient`.

    Returns:
        float32 NumPy maps of the input's height and width.

    Raises:
        TypeError: if the model is subclassed (it cannot be cloned).
        ValueError: for invalid images or arguments; see `gradient`.

    Examples:
        >>> import numpy as np
        >>> from saliency_detect.models import mnist_net_f
        >>> from saliency_detect.saliency import deconvnet
        >>> x = np.random.default_rng(0).random((2, 28, 28, 1), dtype=np.float32)
        >>> deconvnet(mnist_net_f(), x).shape
        (2, 28, 28, 1)
    """
    return _gradient_map(
        model, x, target=target, labels=labels, batch_size=batch_size, reduce=reduce, rule="deconvnet"
    )


def smoothgrad(
    model: keras.Model,
    x: ArrayLike,
    *,
    target: str | int | ArrayLike = "predicted",
    labels: ArrayLike | None = None,
    batch_size: int = 64,
    reduce: str = "none",
    noise_level: float = 0.15,
    n_samples: int = 50,
    squared: bool = False,
    random_state: int | None = None,
) -> np.ndarray:
    """SmoothGrad (Smilkov et al. 2017): the gradient averaged over noisy copies of each image.

    Each copy adds Gaussian noise of standard deviation `noise_level * (max(x) - min(x))`
    (per image). The class is fixed from the clean image (its prediction, or the given
    target) so every copy explains the same class.

    Args:
        model: a Keras classifier.
        x: images (N, H, W, C).
        target: `"predicted"`, `"true"` (with `labels`) or class indices; see `gradient`.
        labels: true classes, for `target="true"`.
        batch_size: images per compiled step.
        reduce: `"none"`, `"abs"` or `"max_abs"`; see `gradient`.
        noise_level: noise standard deviation as a share of each image's value range.
        n_samples: noisy copies per image.
        squared: average the squared gradients (SmoothGrad-Squared) instead.
        random_state: seed; the same seed and `batch_size` give the same maps.

    Returns:
        float32 NumPy maps of the input's height and width.

    Raises:
        ValueError: for invalid images or arguments.

    Examples:
        >>> import numpy as np
        >>> from saliency_detect.models import mnist_net_f
        >>> from saliency_detect.saliency import smoothgrad
        >>> x = np.random.default_rng(0).random((2, 28, 28, 1), dtype=np.float32)
        >>> smoothgrad(mnist_net_f(), x, n_samples=4, random_state=0).shape
        (2, 28, 28, 1)
    """
    reduce = check_reduce(reduce)
    noise_level = check_positive_float(noise_level, "noise_level")
    n_samples = check_positive_int(n_samples, "n_samples")
    n = len(x)
    seeds = np.random.default_rng(random_state).integers(0, 2**31 - 1, size=max(n, 1), dtype=np.int64)

    return run_method(
        model, x, target=target, labels=labels, batch_size=batch_size, rule="vanilla",
        build=_smoothgrad_step,
        constants={
            "reduce": reduce, "noise_level": noise_level, "n_samples": n_samples, "squared": bool(squared),
        },
        extra=(seeds,), extra_specs=(tf.TensorSpec((None,), tf.int64),),
    )  # fmt: skip


def _smoothgrad_step(prepared, *, reduce, noise_level, n_samples, squared):
    def step(x, target, seed):
        _, classes = select_scores(prepared.model(x, training=False), target)
        axes = [1, 2, 3]
        spread = tf.reduce_max(x, axis=axes, keepdims=True) - tf.reduce_min(x, axis=axes, keepdims=True)
        sigma = noise_level * spread
        total = tf.zeros_like(x)
        for i in tf.range(n_samples):
            noise = tf.random.stateless_normal(tf.shape(x), seed=tf.stack([seed[0], tf.cast(i, tf.int64)]))
            g = _class_gradient(prepared, x + sigma * noise, classes)
            total += g * g if squared else g
        return reduce_channels(total / n_samples, reduce)

    return step


def integrated_gradients(
    model: keras.Model,
    x: ArrayLike,
    *,
    target: str | int | ArrayLike = "predicted",
    labels: ArrayLike | None = None,
    batch_size: int = 64,
    reduce: str = "none",
    baseline: float | np.ndarray = 0.0,
    steps: int = 50,
) -> np.ndarray:
    """Integrated Gradients (Sundararajan et al. 2017).

    `(x - baseline) * mean_k grad(baseline + a_k (x - baseline))`, with `a_k` the
    midpoints of `steps` equal intervals of [0, 1]. The attributions of an image sum to
    approximately `logit(x) - logit(baseline)` for its class (completeness).

    Args:
        model: a Keras classifier.
        x: images (N, H, W, C).
        target: `"predicted"`, `"true"` (with `labels`) or class indices; see `gradient`.
        labels: true classes, for `target="true"`.
        batch_size: images per compiled step.
        reduce: `"none"`, `"abs"` or `"max_abs"`; see `gradient`.
        baseline: the reference image: a number (0: black) or an array broadcastable to
            (N, H, W, C).
        steps: points on the straight path from baseline to image.

    Returns:
        float32 NumPy maps of the input's height and width.

    Raises:
        ValueError: for invalid images or arguments, or a baseline that does not
            broadcast to the images.

    Examples:
        >>> import numpy as np
        >>> from saliency_detect.models import mnist_net_f
        >>> from saliency_detect.saliency import integrated_gradients
        >>> x = np.random.default_rng(0).random((2, 28, 28, 1), dtype=np.float32)
        >>> integrated_gradients(mnist_net_f(), x, steps=8).shape
        (2, 28, 28, 1)
    """
    reduce = check_reduce(reduce)
    steps = check_positive_int(steps, "steps")
    shape = np.shape(x)
    try:
        baselines = np.broadcast_to(np.asarray(baseline, np.float32), shape)
    except ValueError:
        raise ValueError(
            f"`baseline` must be a number or an array that broadcasts to the images {shape}. "
            f"Received shape {np.shape(baseline)}"
        ) from None
    if not np.all(np.isfinite(baselines)):
        raise ValueError("`baseline` must be finite.")

    return run_method(
        model, x, target=target, labels=labels, batch_size=batch_size, rule="vanilla",
        build=_integrated_gradients_step, constants={"reduce": reduce, "steps": steps},
        extra=(baselines,), extra_specs=(tf.TensorSpec((None, *shape[1:]), tf.float32),),
    )  # fmt: skip


def _integrated_gradients_step(prepared, *, reduce, steps):
    def step(x, target, base):
        _, classes = select_scores(prepared.model(x, training=False), target)
        total = tf.zeros_like(x)
        for k in tf.range(steps):
            alpha = (tf.cast(k, tf.float32) + 0.5) / steps
            total += _class_gradient(prepared, base + alpha * (x - base), classes)
        return reduce_channels((x - base) * total / steps, reduce)

    return step
