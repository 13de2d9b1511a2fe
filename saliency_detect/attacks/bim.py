"""Basic Iterative Method (iterative FGSM, L-infinity)."""

from __future__ import annotations

import keras
import numpy as np
from numpy.typing import ArrayLike

from saliency_detect.attacks._iterative import projected_gradient


def bim(
    model: keras.Model,
    x: ArrayLike,
    y: ArrayLike | None = None,
    *,
    eps: float,
    norm: float = np.inf,
    clip_range: tuple[float, float] = (0.0, 1.0),
    targeted: bool = False,
    batch_size: int = 128,
    eps_iter: float | None = None,
    nb_iter: int = 10,
) -> np.ndarray:
    """Basic Iterative Method (Kurakin et al. 2016, "Adversarial examples in the physical world").

    `nb_iter` FGSM steps of size `eps_iter`, each followed by clipping to `clip_range` and
    projection onto the `eps`-ball around `x`; no random start. The detection paper's
    "iterative FGSM" (L-infinity). Matches cleverhans's `projected_gradient_descent` with
    `rand_init=False`.

    Args:
        model: a Keras classifier.
        x: clean images (N, H, W, C) in `clip_range`.
        y: true labels, or targets when `targeted`; None uses the model's predictions.
        eps: radius of the allowed perturbation (> 0).
        norm: `np.inf` (the BIM of the paper) or `2` (see also `iterative_l2`).
        clip_range: `(low, high)` valid pixel values.
        targeted: move towards `y`.
        batch_size: images per compiled step.
        eps_iter: step size; None takes `2.5 * eps / nb_iter`.
        nb_iter: number of steps.

    Returns:
        Adversarial images, float32, same shape as `x`, inside `clip_range` and the
        `eps`-ball.

    Raises:
        ValueError: for invalid images, labels or parameters.

    Examples:
        >>> import numpy as np
        >>> from saliency_detect.attacks import bim
        >>> from saliency_detect.models import mnist_net_f
        >>> x = np.random.default_rng(0).random((2, 28, 28, 1), dtype=np.float32)
        >>> bool(np.abs(bim(mnist_net_f(), x, eps=0.1, nb_iter=3) - x).max() <= 0.1 + 1e-6)
        True
    """
    return projected_gradient(
        model, x, y, eps=eps, norm=norm, clip_range=clip_range, targeted=targeted, batch_size=batch_size,
        random_state=None, eps_iter=eps_iter, nb_iter=nb_iter, rand_init=False, restarts=1,
    )  # fmt: skip
