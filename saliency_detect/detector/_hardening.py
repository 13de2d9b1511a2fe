"""A hardened detector: refit on adversarial images crafted against it (Metzen et al. 2017)."""

from __future__ import annotations

from typing import Any

import numpy as np
import sklearn.base
from keras.utils import Progbar
from numpy.typing import ArrayLike

from saliency_detect._validation import (
    check_images,
    check_labels,
    check_positive_float,
    check_positive_int,
    validates_once,
)
from saliency_detect.attacks.joint_pgd import joint_pgd
from saliency_detect.detector._base import Detector
from saliency_detect.models._training import predict_labels


@validates_once
def harden(
    detector: Detector,
    x: ArrayLike,
    x_adv: ArrayLike,
    y: ArrayLike | None = None,
    *,
    eps: float,
    norm: float = np.inf,
    rounds: int = 3,
    nb_iter: int = 40,
    random_state: int | None = None,
    verbose: int = 1,
    **attack_params: Any,
) -> Detector:
    """Fit a detector that has seen the attacker who knows it (dynamic adversary training).

    Metzen et al., "On detecting adversarial perturbations", ICLR 2017, §3.2: a detector
    trained only on a fixed attack falls to an attacker who also fools the detector; they
    train it instead on adversarial images crafted, while it trains, against the current
    detector. Here a round is one refit: a clone of `detector` is fitted on `x` and
    `x_adv`; then, for each of `rounds` rounds, the joint adaptive attack
    (`attacks.joint_pgd`, with `eps`, `norm`, `nb_iter` and `attack_params`) crafts new
    images from `x` against the classifier and the current detector, and a fresh clone is
    fitted on `x` against, for each clean image, one adversarial twin drawn at random from
    `x_adv` and every round's (a replay of all attackers so far, so the detector does not
    forget the fixed attack; the two classes stay paired and balanced). Metzen et al.
    draw a new adversary for every minibatch; a round per refit costs the same attack
    work per image and reuses `fit` unchanged, at the price of a coarser arms race.

    Hardening changes only what a detector learns from adversarial images: Feature
    Squeezing sets its threshold on clean images alone, so its hardened twin scores as
    it did (the rounds still measure the attack against it). The detector is refitted,
    not calibrated: call `calibrate` on held-out clean images afterwards as for any
    detector. `hardening_` on the result lists, per round, the
    share of `x` on which that round's attack fooled f without being flagged by the
    detector it attacked (falling rounds mean the detector learns to see the attacker).

    Args:
        detector: a detector of `saliency_detect.detector` (fitted or not) whose
            parameters define every refit; it is cloned, never changed.
        x: clean training images (N, H, W, C).
        x_adv: their adversarial twins (N, H, W, C) from a fixed attack.
        y: true labels of `x` for the attack; None uses the classifier's predictions.
        eps: the joint attack's radius (> 0).
        norm: `np.inf` or `2`.
        rounds: refits against the adaptive attacker (>= 1).
        nb_iter: steps of each round's attack.
        random_state: seeds the attack's random starts and the twin draws; each round
            uses `random_state + round`.
        verbose: 1 shows a progress bar over the rounds, 0 is silent.
        **attack_params: more keyword arguments of `joint_pgd` (`mode`, `restarts`,
            `detector_weight`, `eps_iter`, ...).

    Returns:
        A new fitted detector of the same class, with `hardening_`: one dict per round
        (`round`, `attack_success`).

    Raises:
        ValueError: for invalid images or parameters, or `x_adv` not paired with `x`.
        TypeError: for a `detector` that is not a scikit-learn-style estimator.

    Examples:
        >>> import numpy as np
        >>> from saliency_detect.detector import MahalanobisDetector, harden
        >>> from saliency_detect.models import mnist_net_f
        >>> f = mnist_net_f()
        >>> rng = np.random.default_rng(0)
        >>> x = rng.random((40, 28, 28, 1), dtype=np.float32)
        >>> x_adv = np.clip(x + rng.normal(0, 0.2, x.shape), 0, 1).astype(np.float32)
        >>> hardened = harden(MahalanobisDetector(f, layers=["fc1"]), x, x_adv, eps=0.1,
        ...                   rounds=1, nb_iter=2, random_state=0, verbose=0)
        >>> [entry["round"] for entry in hardened.hardening_]
        [1]
    """
    if not hasattr(detector, "get_params"):
        raise TypeError(
            "`detector` must be a detector of saliency_detect.detector (an estimator with "
            f"`get_params`). Received: {type(detector).__name__}"
        )
    rounds = check_positive_int(rounds, "rounds")
    eps = check_positive_float(eps, "eps")
    x = check_images(x, name="x")
    x_adv = check_images(x_adv, name="x_adv")
    if x_adv.shape != x.shape:
        raise ValueError(
            f"`x_adv` must pair one adversarial image with each clean image: expected shape {x.shape}. "
            f"Received: {x_adv.shape}"
        )
    classifier = detector.get_params()["classifier"]
    labels = predict_labels(classifier, x) if y is None else check_labels(y, n=len(x))
    seed = 0 if random_state is None else int(random_state)
    rng = np.random.default_rng(seed)
    fitted = sklearn.base.clone(detector).fit(x, x_adv)
    twins, history = [x_adv], []
    progress = Progbar(rounds, unit_name="round") if verbose else None
    for index in range(1, rounds + 1):
        crafted = joint_pgd(
            classifier, x, labels, eps=eps, norm=norm, nb_iter=nb_iter, detector=fitted,
            random_state=seed + index, **attack_params,
        )  # fmt: skip
        fooled = predict_labels(classifier, crafted) != labels
        silent = fitted.decision_function(crafted) <= fitted.threshold_
        history.append({"round": index, "attack_success": float(np.mean(fooled & silent))})
        twins.append(crafted)
        choice = rng.integers(len(twins), size=len(x))
        mixed = np.stack(twins)[choice, np.arange(len(x))]
        fitted = sklearn.base.clone(detector).fit(x, mixed)
        if progress is not None:
            progress.update(index, values=[("attack_success", history[-1]["attack_success"])])
    fitted.hardening_ = history
    return fitted
