"""Iterative fast gradient method in L2."""

from __future__ import annotations

import keras
import numpy as np
from numpy.typing import ArrayLike

from saliency_detect.attacks._iterative import projected_gradient


def iterative_l2(
    model: keras.Model,
    x: ArrayLike,
    y: ArrayLike | None = None,
    *,
    eps: float,
    clip_range: tuple[float, float] = (0.0, 1.0),
    targeted: bool = False,
    batch_size: int = 128,
    eps_iter: float | None = None,
    nb_iter: int = 10,
) -> np.ndarray:
    """Iterative gradient attack in L2, the detection paper's "iterative FGSM (L2)".

    Like `bim`, with steps along the L2-normalised gradient and projection onto the L2
    ball of radius `eps` (Kurakin et al. 2016's iteration with the fast gradient method
    of Goodfellow et al.).

    Args:
        model: a Keras classifier.
        x: clean images (N, H, W, C) in `clip_range`.
        y: true labels, or targets when `targeted`; None uses the model's predictions.
        eps: L2 radius of the allowed perturbation (> 0), per image.
        clip_range: `(low, high)` valid pixel values.
        targeted: move towards `y`.
        batch_size: images per compiled step.
        eps_iter: L2 step size; None takes `2.5 * eps / nb_iter`.
        nb_iter: number of steps.

    Returns:
        Adversarial images, float32, same shape as `x`, with `||x_adv - x||_2 <= eps`.

    Raises:
        ValueError: for invalid images, labels or parameters.

    Examples:
        >>> import numpy as np
        >>> from saliency_detect.attacks import iterative_l2
        >>> from saliency_detect.models import mnist_net_f
        >>> x = np.random.default_rng(0).random((2, 28, 28, 1), dtype=np.float32)
        >>> x_adv = iterative_l2(mnist_net_f(), x, eps=1.0, nb_iter=3)
        >>> bool(np.all(np.sqrt(((x_adv - x) ** 2).sum(axis=(1, 2, 3))) <= 1.0 + 1e-5))
        True
    """
    return projected_gradient(
        model, x, y, eps=eps, norm=2, clip_range=clip_range, targeted=targeted, batch_size=batch_size,
        random_state=None, eps_iter=eps_iter, nb_iter=nb_iter, rand_init=False, restarts=1,
    )  # fmt: skip


#: Its `eps` is an L2 radius, always (`minimal_epsilon` reads this to scale its search).
iterative_l2.norm = 2.0
