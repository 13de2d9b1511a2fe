"""Attacks by name, with their default parameters, for the CLI and the experiment pipeline."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from saliency_detect._registry import REQUIRED, Registry, check_options, keyword_defaults
from saliency_detect.attacks._common import check_norm
from saliency_detect.attacks.bim import bim
from saliency_detect.attacks.carlini_wagner_l2 import carlini_wagner_l2
from saliency_detect.attacks.fgsm import fgsm
from saliency_detect.attacks.iterative_l2 import iterative_l2
from saliency_detect.attacks.jsma import jsma
from saliency_detect.attacks.pgd import pgd
from saliency_detect.attacks.pixel_attack import pixel_attack

#: Every attack is called `attack(model, x, y=None, **options)`: three inputs, then options.
_ATTACKS = Registry(
    "attack",
    {
        "fgsm": fgsm,
        "bim": bim,
        "iterative_l2": iterative_l2,
        "pgd": pgd,
        "jsma": jsma,
        "carlini_wagner_l2": carlini_wagner_l2,
        "pixel_attack": pixel_attack,
    },
    inputs=3,
)


def available_attacks() -> dict[str, dict[str, Any]]:
    """Return every attack's name with its keyword parameters and their defaults.

    Parameters that must be given (such as `eps`) show `REQUIRED`.

    Examples:
        >>> from saliency_detect.attacks import available_attacks
        >>> available_attacks()["fgsm"]
        {'eps': REQUIRED, 'norm': inf, 'clip_range': (0.0, 1.0), 'targeted': False, 'batch_size': 128}
    """
    return _ATTACKS.defaults()


def _defaults(fn: Callable) -> dict[str, Any]:
    return keyword_defaults(fn, inputs=_ATTACKS.inputs)


def effective_params(fn: Callable, params: dict[str, Any]) -> dict[str, Any]:
    """`params` completed with `fn`'s keyword defaults: what the attack actually runs with.

    Caches are keyed on these, so a default that changes between versions never lets a
    set made with the old default pass for one made with the new.
    """
    defaults = {key: value for key, value in _defaults(fn).items() if value is not REQUIRED}
    return {**defaults, **params}


def get_attack(name: str) -> Callable:
    """Return the attack function called `name`.

    Args:
        name: one of `available_attacks()`.

    Returns:
        The function, called as `attack(model, x, y=None, **params)`.

    Raises:
        ValueError: for an unknown name; the message lists the valid ones.

    Examples:
        >>> from saliency_detect.attacks import get_attack
        >>> get_attack("pgd").__name__
        'pgd'
    """
    return _ATTACKS.lookup(name)


def attack_norm(fn: Callable, params: dict[str, Any]) -> float | None:
    """Return the norm an attack's `eps` is measured in (`np.inf` or 2.0), None without `eps`.

    Its `norm` parameter (given or default), else the norm its function declares
    (`fn.norm`, for attacks of one fixed norm such as `iterative_l2`), else L-infinity.
    Attacks that take no `eps` (JSMA, C&W, Pixel Attack) have no Lp ball: None.
    """
    defaults = _defaults(fn)
    if "eps" not in defaults:
        return None
    if "norm" in params or "norm" in defaults:
        return check_norm(params.get("norm", defaults.get("norm")))
    return check_norm(getattr(fn, "norm", np.inf))


def resolve_attack(attack: str | Callable) -> tuple[str, Callable]:
    """Accept an attack name or function; return `(name, function)`."""
    if isinstance(attack, str):
        return attack, get_attack(attack)
    if callable(attack):
        return getattr(attack, "__name__", type(attack).__name__), attack
    raise TypeError(f"`attack` must be an attack name or function. Received: {attack!r}")


def check_params(name: str, fn: Callable, params: dict[str, Any]) -> dict[str, Any]:
    """Raise TypeError naming the accepted options if `params` holds one `fn` does not take."""
    return check_options("attack", name, fn, params, inputs=_ATTACKS.inputs)
