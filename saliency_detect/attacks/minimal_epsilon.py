"""The smallest perturbation size that pushes a classifier's accuracy below a target."""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
from typing import Any

import keras
import numpy as np
from numpy.typing import ArrayLike

from saliency_detect._validation import (
    check_images,
    check_labels,
    check_positive_float,
    check_positive_int,
    validates_once,
)
from saliency_detect.attacks._registry import attack_norm, check_params, resolve_attack
from saliency_detect.models._training import predict_labels

#: Grid steps up to eps_max scanned when doubling ε never crossed the target.
_GRID = 16


@dataclasses.dataclass(frozen=True)
class MinimalEpsilon:
    """Result of `minimal_epsilon`.

    Attributes:
        eps: the smallest perturbation size found with accuracy below the target.
        accuracy: the classifier's accuracy on the adversarial images at `eps`.
        history: every `(eps, accuracy)` evaluated, in order.
    """

    eps: float
    accuracy: float
    history: tuple[tuple[float, float], ...]


@validates_once
def minimal_epsilon(
    model: keras.Model,
    x: ArrayLike,
    y: ArrayLike,
    attack: str | Callable,
    *,
    target_accuracy: float = 0.30,
    eps_start: float | None = None,
    eps_max: float | None = None,
    rtol: float = 0.02,
    max_evaluations: int = 30,
    clip_range: tuple[float, float] = (0.0, 1.0),
    batch_size: int = 128,
    **params: Any,
) -> MinimalEpsilon:
    """Find the smallest `eps` at which `attack` drives accuracy below `target_accuracy`.

    The protocol of Metzen et al. (2017), used by the detection paper to set each
    attack's ε: grow (or shrink) ε by factors of 2 until accuracy crosses the target,
    then bisect between the last ε above and the first below until they are within
    `rtol` of each other. Each evaluation runs the attack on all of `x`. Accuracy need
    not fall monotonically with ε (single-step FGSM's rises again at large ε): when the
    doubling reaches `eps_max` without crossing the target, a grid of 16 steps up to
    `eps_max` is scanned for the first ε below it, and the bisection starts from there.

    Args:
        model: a Keras classifier.
        x: clean images (N, H, W, C) in `clip_range`.
        y: their true labels (N,).
        attack: an attack name (`"fgsm"`, `"bim"`, …) or function taking `eps`.
        target_accuracy: accuracy to get below (0.30 in the paper).
        eps_start: first ε tried; None takes 1/16 of the clip range's width (times the
            square root of the image size for L2 attacks).
        eps_max: largest ε tried; None takes the width (times the square root of the image
            size for L2 attacks).
        rtol: stop when the bracket is narrower than `rtol` times its upper end.
        max_evaluations: most attack runs.
        clip_range: `(low, high)` valid pixel values, passed to the attack.
        batch_size: images per compiled step, passed to the attack.
        **params: other parameters of the attack (e.g. `nb_iter=20`, `norm=2`).

    Returns:
        A `MinimalEpsilon` with `eps`, `accuracy` and the evaluation `history`.

    Raises:
        ValueError: for an attack without `eps`, invalid arguments, or when no ε up to
            `eps_max` brings accuracy below the target (the message gives the lowest seen).

    Examples:
        >>> import numpy as np
        >>> from saliency_detect.attacks import minimal_epsilon
        >>> from saliency_detect.models import mnist_net_f
        >>> x = np.random.default_rng(0).random((8, 28, 28, 1), dtype=np.float32)
        >>> model = mnist_net_f()
        >>> y = model.predict(x, verbose=0).argmax(axis=1)
        >>> found = minimal_epsilon(model, x, y, "fgsm", target_accuracy=0.5)
        >>> found.accuracy < 0.5 and 0 < found.eps <= 1.0
        True
    """
    name, fn = resolve_attack(attack)
    if "eps" not in inspect.signature(fn).parameters:
        raise ValueError(
            f"Attack {name!r} has no `eps` parameter: minimal_epsilon needs a perturbation size."
        )
    params = check_params(name, fn, params)
    if "eps" in params:
        raise ValueError("Do not pass `eps` to minimal_epsilon: it is what is searched for.")
    if not 0.0 < target_accuracy <= 1.0:
        raise ValueError(f"`target_accuracy` must lie in (0, 1]. Received: {target_accuracy!r}")
    rtol = check_positive_float(rtol, "rtol")
    max_evaluations = check_positive_int(max_evaluations, "max_evaluations")
    x = check_images(x, clip_range=clip_range)
    y = check_labels(y, n=len(x), name="y")

    width = float(clip_range[1]) - float(clip_range[0])
    l2 = attack_norm(fn, params) == 2
    scale = width * (np.sqrt(np.prod(x.shape[1:])) if l2 else 1.0)
    eps_max = scale if eps_max is None else check_positive_float(eps_max, "eps_max")
    eps = scale / 16 if eps_start is None else check_positive_float(eps_start, "eps_start")
    eps = min(eps, eps_max)
    history: list[tuple[float, float]] = []

    def accuracy(e: float) -> float:
        x_adv = fn(model, x, y, eps=e, clip_range=clip_range, batch_size=batch_size, **params)
        value = float(np.mean(predict_labels(model, x_adv, batch_size=batch_size, clip_range=None) == y))
        history.append((e, value))
        return value

    low, high, high_accuracy = 0.0, None, None
    # Bracket: double until below target, halving first if the start is already below.
    while len(history) < max_evaluations:
        value = accuracy(eps)
        if value < target_accuracy:
            high, high_accuracy = eps, value
            if low > 0 or eps < 1e-6 * scale:
                break
            eps /= 2
        else:
            low = eps
            if high is not None or eps >= eps_max:
                break
            eps = min(2 * eps, eps_max)
    if high is None and len(history) < max_evaluations:
        # Accuracy need not fall monotonically with ε (FGSM's rises again at large ε, as
        # its steps overshoot): the doubling may have stepped over the only ε that
        # reaches the target. Scan a grid of `_GRID` steps up to eps_max for the first.
        tried = {e for e, _ in history}
        previous = 0.0
        for candidate in np.linspace(eps_max / _GRID, eps_max, _GRID):
            if len(history) >= max_evaluations:
                break
            value = dict(history).get(candidate) if candidate in tried else accuracy(float(candidate))
            if value < target_accuracy:
                low, high, high_accuracy = previous, float(candidate), value
                break
            previous = float(candidate)
    if high is None:
        lowest = min(history, key=lambda h: h[1])
        raise ValueError(
            f"{name} leaves accuracy at or above {target_accuracy} for every eps tried up to "
            f"{eps_max:g} (eps_max); the lowest was {lowest[1]:.3f} at eps={lowest[0]:.4g}. Raise `eps_max`, "
            "strengthen the attack (e.g. more `nb_iter`) or ask for a higher `target_accuracy`."
        )
    # Bisect between `low` (accuracy >= target) and `high` (accuracy < target).
    while high - low > rtol * high and len(history) < max_evaluations:
        middle = (low + high) / 2
        value = accuracy(middle)
        if value < target_accuracy:
            high, high_accuracy = middle, value
        else:
            low = middle
    return MinimalEpsilon(eps=float(high), accuracy=float(high_accuracy), history=tuple(history))
