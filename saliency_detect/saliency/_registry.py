"""Saliency methods by name, so the detector and the CLI can name a method in a string."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import numpy as np

from saliency_detect._registry import Registry
from saliency_detect.saliency._gradcam import grad_cam
from saliency_detect.saliency._gradient import (
    deconvnet,
    gradient,
    guided_backprop,
    integrated_gradients,
    smoothgrad,
)

#: Every method is called `method(model, x, **options)`: two inputs, then options.
_METHODS = Registry(
    "saliency method",
    {
        "gradient": gradient,
        "guided_backprop": guided_backprop,
        "deconvnet": deconvnet,
        "grad_cam": grad_cam,
        "smoothgrad": smoothgrad,
        "integrated_gradients": integrated_gradients,
    },
    inputs=2,
)
#: Options every method takes at call time, never bound by `saliency_fn`.
_SHARED = ("target", "labels", "batch_size")


def available_methods() -> dict[str, dict[str, Any]]:
    """Return every saliency method's name with its keyword options and their defaults.

    The same shape as `attacks.available_attacks()` and `models.available_models()`.

    Examples:
        >>> from saliency_detect.saliency import available_methods
        >>> available_methods()["grad_cam"]
        {'target': 'predicted', 'labels': None, 'batch_size': 64, 'layer': None, 'upsample': True}
    """
    return _METHODS.defaults()


def saliency_fn(name: str, **kwargs: Any) -> Callable[..., np.ndarray]:
    """Return the saliency method called `name` with its method-specific options bound.

    Every method is then called the same way: `fn(model, x, *, target="predicted",
    labels=None, batch_size=64)`, and returns maps of the input's height and width.

    Args:
        name: one of `available_methods()`: `"gradient"`, `"guided_backprop"`,
            `"deconvnet"`, `"grad_cam"`, `"smoothgrad"`, `"integrated_gradients"`.
        **kwargs: options of that method (e.g. `reduce="max_abs"`, `layer="conv2"`,
            `n_samples=20`).

    Returns:
        A function `fn(model, x, *, target, labels, batch_size)`.

    Raises:
        ValueError: for an unknown name; the message lists the valid ones.
        TypeError: for an option the method does not take; the message lists those it does.

    Examples:
        >>> import numpy as np
        >>> from saliency_detect.models import mnist_net_f
        >>> from saliency_detect.saliency import saliency_fn
        >>> fn = saliency_fn("gradient", reduce="max_abs")
        >>> fn(mnist_net_f(), np.zeros((2, 28, 28, 1), np.float32)).shape
        (2, 28, 28)
    """
    method = _METHODS.lookup(name)
    _METHODS.check_options(name, kwargs, reserved=_SHARED)
    bound = functools.partial(method, **kwargs)
    functools.update_wrapper(bound, method)
    return bound
