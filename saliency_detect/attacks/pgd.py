"""Projected Gradient Descent with random start and restarts."""

from __future__ import annotations

import keras
import numpy as np
from numpy.typing import ArrayLike

from saliency_detect.attacks._iterative import projected_gradient


def pgd(
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
    eps_iter: float | None = None,
    nb_iter: int = 40,
    rand_init: bool = True,
    restarts: int = 1,
    loss: str = "cross_entropy",
) -> np.ndarray:
    """Projected Gradient Descent (Madry et al. 2018).

    Madry, Makelov, Schmidt, Tsipras & Vladu, "Towards deep learning models resistant to
    adversarial attacks", ICLR 2018.

    From a uniform random point of the `eps`-ball (unless `rand_init=False`), `nb_iter`
    steepest-ascent steps of size `eps_iter` on the cross-entropy, each clipped to
    `clip_range` and projected onto the ball. With `restarts > 1`, each image keeps the
    restart with the highest final loss. Without random start it matches cleverhans's
    `projected_gradient_descent`. `loss="margin"` ascends Carlini & Wagner's logit
    margin instead (`max_{i != y} Z_i - Z_y`), whose gradient does not vanish on images f
    classifies with saturated confidence.

    Args:
        model: a Keras classifier.
        x: clean images (N, H, W, C) in `clip_range`.
        y: true labels, or targets when `targeted`; None uses the model's predictions.
        eps: radius of the allowed perturbation (> 0).
        norm: `np.inf` or `2`.
        clip_range: `(low, high)` valid pixel values.
        targeted: move towards `y`.
        batch_size: images per compiled step.
        random_state: seed of the random starts; the same seed and `batch_size` give the
            same images.
        eps_iter: step size; None takes `2.5 * eps / nb_iter` (Madry et al.'s rule).
        nb_iter: steps per restart (40 as Madry et al. on MNIST).
        rand_init: start from a random point of the ball.
        restarts: random restarts per image.
        loss: `"cross_entropy"` or `"margin"`.

    Returns:
        Adversarial images, float32, same shape as `x`, inside `clip_range` and the ball.

    Raises:
        ValueError: for invalid images, labels or parameters.

    Examples:
        >>> import numpy as np
        >>> from saliency_detect.attacks import pgd
        >>> from saliency_detect.models import mnist_net_f
        >>> x = np.random.default_rng(0).random((2, 28, 28, 1), dtype=np.float32)
        >>> x_adv = pgd(mnist_net_f(), x, eps=0.1, nb_iter=3, random_state=0)
        >>> bool(np.abs(x_adv - x).max() <= 0.1 + 1e-6)
        True
    """
    return projected_gradient(
        model, x, y, eps=eps, norm=norm, clip_range=clip_range, targeted=targeted, batch_size=batch_size,
        random_state=random_state, eps_iter=eps_iter, nb_iter=nb_iter, rand_init=rand_init, restarts=restarts,
        loss=loss,
    )  # fmt: skip
