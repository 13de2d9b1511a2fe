"""Fast Gradient (Sign) Method."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf
from numpy.typing import ArrayLike

from saliency_detect._classes import resolve_classes
from saliency_detect._prepared import run_compiled
from saliency_detect.attacks._common import (
    as_column,
    check_eps,
    check_norm,
    loss_gradient,
    per_image,
    setup,
    steepest_step,
)


def fgsm(
    model: keras.Model,
    x: ArrayLike,
    y: ArrayLike | None = None,
    *,
    eps: float,
    norm: float = np.inf,
    clip_range: tuple[float, float] = (0.0, 1.0),
    targeted: bool = False,
    batch_size: int = 128,
) -> np.ndarray:
    """Fast Gradient Sign Method (Goodfellow et al. 2014, "Explaining and harnessing adversarial examples").

    One step of size `eps` along the sign of the cross-entropy's gradient (L-infinity) or
    along the normalised gradient (L2, the fast gradient method), then clipping to
    `clip_range`. Matches cleverhans's `fast_gradient_method`.

    Args:
        model: a Keras classifier (logits, or softmax read at its input).
        x: clean images (N, H, W, C) in `clip_range`.
        y: true labels (N,), or target classes when `targeted`; None uses the model's
            predictions (avoids label leaking).
        eps: perturbation size (> 0) in `norm`.
        norm: `np.inf` (FGSM) or `2`.
        clip_range: `(low, high)` valid pixel values.
        targeted: move towards `y` instead of away from it.
        batch_size: images per compiled step.

    Returns:
        Adversarial images, float32, same shape as `x`, inside `clip_range`.

    Raises:
        ValueError: for `eps <= 0`, an unknown norm, images outside `clip_range`, labels of
            the wrong length, or `targeted` without `y`.

    Examples:
        >>> import numpy as np
        >>> from saliency_detect.attacks import fgsm
        >>> from saliency_detect.models import mnist_net_f
        >>> x = np.random.default_rng(0).random((4, 28, 28, 1), dtype=np.float32)
        >>> x_adv = fgsm(mnist_net_f(), x, eps=0.1)
        >>> bool(np.abs(x_adv - x).max() <= 0.1 + 1e-6), x_adv.shape
        (True, (4, 28, 28, 1))
    """
    prepared, x, labels = setup(model, x, y, clip_range=clip_range, targeted=targeted, batch_size=batch_size)
    norm = check_norm(norm)
    eps = check_eps(eps, norm, clip_range, x.shape[1:])
    low, high = float(clip_range[0]), float(clip_range[1])

    return run_compiled(
        prepared, x, labels, build=_fgsm_step,
        constants={"norm": norm, "low": low, "high": high, "targeted": bool(targeted)}, batch_size=batch_size,
        extra=(per_image(eps, len(x)),), extra_specs=(tf.TensorSpec((None,), tf.float32),),
    )  # fmt: skip


def _fgsm_step(prepared, *, norm, low, high, targeted):
    def step(x, labels, eps):
        labels = resolve_classes(prepared.model(x, training=False), labels)
        grad = loss_gradient(prepared, x, labels, targeted)
        return tf.clip_by_value(x + steepest_step(grad, as_column(eps), norm), low, high)

    return step
