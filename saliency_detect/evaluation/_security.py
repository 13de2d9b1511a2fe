"""Measuring an attacker who knows the detector: success means fooled and not flagged.

`adaptive_success` judges one set of images; `security_evaluation` runs the attackers
of growing knowledge (PGD on f alone, then the joint attack on f and D) over a range of
ε for several detectors, with the sanity checks of Carlini et al. 2019 ("On evaluating
adversarial robustness"): an unbounded attack must succeed, more steps and restarts
must not lower success, and a white-box attacker must beat one who only has a surrogate.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import keras
import numpy as np
from numpy.typing import ArrayLike
from sklearn.utils.validation import check_is_fitted

from saliency_detect._validation import (
    check_images,
    check_labels,
    check_positive_float,
    check_positive_int,
    model_image_shape,
    validates_once,
)
from saliency_detect.models._training import predict_labels

if TYPE_CHECKING:
    from saliency_detect.detector._base import Detector


@validates_once
def adaptive_success(
    classifier: keras.Model,
    detector: Detector,
    x_adv: ArrayLike,
    y: ArrayLike,
    *,
    targeted: bool = False,
    batch_size: int = 256,
    clip_range: tuple[float, float] | None = (0.0, 1.0),
) -> np.ndarray:
    """Which adversarial images beat the classifier **and** its detector.

    An attack on a defended classifier succeeds on an image only if f is fooled (its
    prediction differs from the true label; equals the target when `targeted`) and the
    detector, at its threshold `threshold_` (set by `fit` or `calibrate`), does not flag
    the image (Carlini & Wagner 2017). The mean of the result is the attack's success
    rate against the defence; `1 - mean` is the defence's robust accuracy in the sense
    of "correctly classified or detected".

    Args:
        classifier: the classifier f.
        detector: a fitted detector (any of `saliency_detect.detector`'s, or an object
            with `decision_function` and `threshold_`).
        x_adv: adversarial images (N, H, W, C).
        y: their true labels, or the targets when `targeted` (N,).
        targeted: success is reaching `y` rather than leaving it.
        batch_size: images per forward pass of f.
        clip_range: the range images must lie in, or None.

    Returns:
        A boolean vector (N,): True where f is fooled and the detector stays silent.

    Raises:
        ValueError: for invalid images or labels.
        sklearn.exceptions.NotFittedError: if `detector` is not fitted.

    Examples:
        >>> import numpy as np
        >>> from saliency_detect.detector import FeatureSqueezingDetector
        >>> from saliency_detect.evaluation import adaptive_success
        >>> from saliency_detect.models import mnist_net_f
        >>> f = mnist_net_f()
        >>> x = np.random.default_rng(0).random((40, 28, 28, 1), dtype=np.float32)
        >>> det = FeatureSqueezingDetector(f).fit(x)
        >>> adaptive_success(f, det, x[:3], [0, 1, 2]).dtype
        dtype('bool')
    """
    check_is_fitted(detector)
    if not isinstance(targeted, bool):
        raise ValueError(f"`targeted` must be True or False. Received: targeted={targeted!r}")
    x_adv = check_images(
        x_adv, name="x_adv", clip_range=clip_range, expected_shape=model_image_shape(classifier)
    )
    y = check_labels(y, n=len(x_adv), name="y")
    predicted = predict_labels(classifier, x_adv, batch_size=batch_size, clip_range=None)
    fooled = predicted == y if targeted else predicted != y
    flagged = np.asarray(detector.decision_function(x_adv)) > float(detector.threshold_)
    return fooled & ~flagged


#: The joint attack's modes tried at every ε; an image counts when any of them succeeds.
JOINT_MODES = ("sum", "selective")
#: An unbounded attack fails its sanity check when its success is significantly below this.
UNBOUNDED_SUCCESS = 0.95


def rate_interval(hits: ArrayLike) -> dict[str, float | int]:
    """A success rate with its 95% Wilson interval: `{"rate", "low", "high", "hits", "n"}`."""
    from scipy.stats import binomtest

    hits = np.asarray(hits, bool)
    k, n = int(hits.sum()), int(hits.size)
    if n == 0:
        return {"rate": float("nan"), "low": float("nan"), "high": float("nan"), "hits": 0, "n": 0}
    interval = binomtest(k, n).proportion_ci(method="wilson")
    return {"rate": k / n, "low": float(interval.low), "high": float(interval.high), "hits": k, "n": n}


@dataclass(frozen=True)
class SanityCheck:
    """One sanity check of an attack evaluation.

    Attributes:
        name: `"unbounded"`, `"stronger"` or `"transfer"`.
        description: what was run and what passing means.
        eps: the ε the check ran at.
        value: the success rate the check measured.
        reference: the rate it is compared with (`UNBOUNDED_SUCCESS` for `"unbounded"`).
        p_value: the one-sided p-value of the check's test: for `"unbounded"`, the exact
            binomial test that the success is below `reference`; for the others, the
            exact McNemar test over the paired images that `value` is worse than
            `reference` (`"stronger"`) or better (`"transfer"`).
        passed: whether the check holds (p >= 0.05: no significant evidence against it).
    """

    name: str
    description: str
    eps: float
    value: float
    reference: float
    p_value: float
    passed: bool

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class SecurityEvaluation:
    """How one detector holds against attackers who know more and more, at each ε.

    Rates are those of `rate_interval` (rate, 95% Wilson interval, hits, n), one per ε.

    Attributes:
        eps: the budgets, ascending.
        norm: `np.inf` or `2`.
        undefended: PGD on f alone: f is fooled (no detector in front of it).
        unaware: the same images judged by f and the detector: fooled and not flagged.
        adaptive: the joint attack on f and the detector (`attacks.joint_pgd`, best of
            `JOINT_MODES`): fooled and not flagged.
        checks: the sanity checks run.
    """

    eps: tuple[float, ...]
    norm: float
    undefended: tuple[dict[str, Any], ...]
    unaware: tuple[dict[str, Any], ...]
    adaptive: tuple[dict[str, Any], ...]
    checks: tuple[SanityCheck, ...] = ()

    @property
    def failed_checks(self) -> tuple[SanityCheck, ...]:
        """The sanity checks that did not hold: the evaluation is then not to be trusted."""
        return tuple(check for check in self.checks if not check.passed)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (the norm as `"inf"` or `2`)."""
        return {
            "eps": list(self.eps),
            "norm": "inf" if self.norm == np.inf else int(self.norm),
            "undefended": list(self.undefended),
            "unaware": list(self.unaware),
            "adaptive": list(self.adaptive),
            "checks": [check.to_dict() for check in self.checks],
        }

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> SecurityEvaluation:
        """The inverse of `to_dict`."""
        return cls(
            eps=tuple(float(e) for e in values["eps"]),
            norm=np.inf if values["norm"] == "inf" else float(values["norm"]),
            undefended=tuple(dict(r) for r in values["undefended"]),
            unaware=tuple(dict(r) for r in values["unaware"]),
            adaptive=tuple(dict(r) for r in values["adaptive"]),
            checks=tuple(SanityCheck(**c) for c in values["checks"]),
        )


@validates_once
def security_evaluation(
    classifier: keras.Model,
    detectors: Mapping[str, Detector],
    x: ArrayLike,
    y: ArrayLike,
    *,
    eps: Sequence[float],
    norm: float = np.inf,
    clip_range: tuple[float, float] = (0.0, 1.0),
    batch_size: int = 128,
    random_state: int | None = None,
    nb_iter: int = 40,
    restarts: int = 1,
    surrogates: Mapping[str, Detector] | None = None,
    sanity_checks: bool = True,
    verbose: int = 0,
) -> dict[str, SecurityEvaluation]:
    """Attack f and each detector with attackers of growing knowledge, over a range of ε.

    At each ε, the test images are attacked by PGD on f alone (`attacks.pgd`, margin
    loss; the attacker does not know the detector), then by the joint attack on f and
    each detector (`attacks.joint_pgd` in each of `JOINT_MODES`; an image counts when
    any mode gets it past f and the detector). Success is always "f fooled and the
    detector, at its `threshold_`, silent" (`adaptive_success`), beside how often f
    alone is fooled. Calibrate the detectors first (`calibrate(x_clean, fpr=...)`) so
    every detector flags the same share of clean images.

    With `sanity_checks`, three checks per detector (Carlini et al. 2019, "On evaluating
    adversarial robustness"; a failed one means the evaluation, not the detector, is
    broken):

    - `"unbounded"`: with ε the whole pixel range (L∞: `high - low`; L2: that times
      the square root of the image size), two joint attacks, the one run at every ε
      (from a random start, here uniform noise, with steps scaled to ε) and one from
      the clean images with the middle ε's step size and twice the steps, get the
      images past f and the detector (an image counts when either does) at a rate not
      significantly below `UNBOUNDED_SUCCESS` (one-sided exact binomial test, p < 0.05
      fails);
    - `"stronger"`: at the middle ε, twice the steps and one more restart do not lower
      success (one-sided exact McNemar test on the paired images, p < 0.05 fails);
    - `"transfer"` (for the detectors with a surrogate): at the middle ε, the joint
      attack (`mode="sum"`) against the surrogate, judged by the real detector, does not
      beat the white-box attack (same test).

    Args:
        classifier: the classifier f.
        detectors: fitted detectors by name (each with `decision_tensor` and
            `threshold_`, as every detector of `saliency_detect.detector`).
        x: clean test images (N, H, W, C) in `clip_range`.
        y: their true labels (N,).
        eps: the budgets (positive, at least one).
        norm: `np.inf` or `2`.
        clip_range: `(low, high)` valid pixel values.
        batch_size: images per compiled attack step.
        random_state: seed of the attacks' random starts.
        nb_iter: steps of every attack (the `"stronger"` check doubles it).
        restarts: random restarts of the joint attack.
        surrogates: for the `"transfer"` check, a surrogate per detector name (e.g. the
            same detector fitted on other images with another seed); None or a missing
            name skips that check.
        sanity_checks: run the checks.
        verbose: 1 shows a progress bar over the attack runs.

    Returns:
        A `SecurityEvaluation` per detector name, in the order of `detectors`.

    Raises:
        ValueError: for invalid images, labels or parameters, no detector, or a
            surrogate named like no detector.
        sklearn.exceptions.NotFittedError: for an unfitted detector or surrogate.

    Examples:
        >>> import numpy as np
        >>> from saliency_detect.detector import FeatureSqueezingDetector
        >>> from saliency_detect.evaluation import security_evaluation
        >>> from saliency_detect.models import mnist_net_f
        >>> f = mnist_net_f()
        >>> x = np.random.default_rng(0).random((40, 28, 28, 1), dtype=np.float32)
        >>> det = FeatureSqueezingDetector(f).fit(x)
        >>> result = security_evaluation(f, {"FS": det}, x[:4], [0, 1, 2, 3], eps=[0.1],
        ...                              nb_iter=2, sanity_checks=False, random_state=0)
        >>> result["FS"].adaptive[0]["n"]
        4
    """
    from saliency_detect.attacks import joint_pgd, pgd

    eps = _check_eps(eps)
    if norm not in (np.inf, 2):
        raise ValueError(f"`norm` must be np.inf or 2. Received: norm={norm!r}")
    if not isinstance(detectors, Mapping) or not detectors:
        raise ValueError(
            f"`detectors` must map names to fitted detectors, at least one. Received: {detectors!r}"
        )
    surrogates = dict(surrogates or {})
    unknown = sorted(set(surrogates) - set(detectors))
    if unknown:
        raise ValueError(f"`surrogates` names {unknown}, which are not in `detectors` ({list(detectors)}).")
    for detector in (*detectors.values(), *surrogates.values()):
        check_is_fitted(detector)
    nb_iter = check_positive_int(nb_iter, "nb_iter")
    restarts = check_positive_int(restarts, "restarts")
    x = check_images(x, name="x", clip_range=clip_range, expected_shape=model_image_shape(classifier))
    y = check_labels(y, n=len(x), name="y")
    attack = {"norm": norm, "clip_range": clip_range, "batch_size": batch_size, "random_state": random_state}
    middle = eps[len(eps) // 2]
    per_detector = len(eps) * len(JOINT_MODES)
    if sanity_checks:
        per_detector += 3 * len(JOINT_MODES)  # two unbounded attackers, and the stronger one
    progress = keras.utils.Progbar(
        len(eps) + len(detectors) * per_detector + (len(surrogates) if sanity_checks else 0),
        verbose=verbose,
        unit_name="attack",
    )

    def joint(
        detector, e, *, steps=nb_iter, tries=restarts, modes=JOINT_MODES, judge=None, start=True, step=None
    ):
        hits = np.zeros(len(x), bool)
        for mode in modes:
            x_adv = joint_pgd(
                classifier, x, y, eps=e, detector=detector, mode=mode, nb_iter=steps, restarts=tries,
                rand_init=start, eps_iter=step, **attack,
            )  # fmt: skip
            hits |= adaptive_success(classifier, judge or detector, x_adv, y, batch_size=batch_size)
            progress.add(1)
        return hits

    plain = []
    for e in eps:
        plain.append(pgd(classifier, x, y, eps=e, nb_iter=nb_iter, loss="margin", **attack))
        progress.add(1)
    fooled = [predict_labels(classifier, x_adv, batch_size=batch_size) != y for x_adv in plain]
    results = {}
    for name, detector in detectors.items():
        adaptive = [joint(detector, e) for e in eps]
        checks = []
        if sanity_checks:
            unbounded = _unbounded(x.shape[1:], norm, clip_range)
            # Two unbounded attackers, an image counting when either succeeds: the joint attack
            # as at any ε (a random start in so large a ball is uniform noise, each step a large
            # move), and one from the clean image with the middle ε's step and twice the steps.
            step = 2.5 * middle / nb_iter
            reached = joint(detector, unbounded, tries=1)
            reached |= joint(detector, unbounded, steps=2 * nb_iter, tries=1, start=False, step=step)
            described = (
                f"ε the whole pixel range: the joint attack's success is not below {UNBOUNDED_SUCCESS:.0%}"
            )
            checks.append(_unbounded_check(described, unbounded, reached))
            base = adaptive[eps.index(middle)]
            stronger = joint(detector, middle, steps=2 * nb_iter, tries=restarts + 1)
            described = (
                f"{2 * nb_iter} steps and {restarts + 1} restarts do not lower the joint attack's success"
            )
            checks.append(_paired_check("stronger", described, middle, stronger, base, worse=True))
            if name in surrogates:
                transferred = joint(surrogates[name], middle, modes=("sum",), judge=detector)
                described = (
                    "the joint attack on a surrogate, judged by the real detector, does not beat white-box"
                )
                checks.append(_paired_check("transfer", described, middle, transferred, base, worse=False))
        results[name] = SecurityEvaluation(
            eps=tuple(eps),
            norm=norm,
            undefended=tuple(rate_interval(hits) for hits in fooled),
            unaware=tuple(
                rate_interval(adaptive_success(classifier, detector, x_adv, y, batch_size=batch_size))
                for x_adv in plain
            ),
            adaptive=tuple(rate_interval(hits) for hits in adaptive),
            checks=tuple(checks),
        )
    return results


def _check_eps(eps: Any) -> list[float]:
    if isinstance(eps, (str, bytes)) or not isinstance(eps, Sequence) or not eps:
        raise ValueError(f"`eps` must be a list of positive budgets, at least one. Received: eps={eps!r}")
    return sorted({check_positive_float(e, "eps") for e in eps})


def _unbounded(image_shape: tuple[int, ...], norm: float, clip_range: tuple[float, float]) -> float:
    """An ε whose ball holds every image of the valid range."""
    width = float(clip_range[1] - clip_range[0])
    return width if norm == np.inf else width * math.sqrt(math.prod(image_shape))


def _unbounded_check(description: str, eps: float, hits: np.ndarray) -> SanityCheck:
    """Fail when the unbounded attack's success is significantly below `UNBOUNDED_SUCCESS`."""
    from scipy.stats import binomtest

    p = float(binomtest(int(hits.sum()), hits.size, UNBOUNDED_SUCCESS, alternative="less").pvalue)
    return SanityCheck(
        "unbounded", description, float(eps), float(hits.mean()), UNBOUNDED_SUCCESS, p, p >= 0.05
    )


def _paired_check(name, description, eps, value_hits, reference_hits, *, worse: bool) -> SanityCheck:
    """Compare two attacks on the same images with a one-sided exact McNemar test.

    `worse=True` fails when `value` is significantly lower than `reference` (a stronger
    attack that loses); `worse=False` when it is significantly higher (a transfer attack
    that beats white-box).
    """
    from scipy.stats import binomtest

    only_reference = int(np.count_nonzero(reference_hits & ~value_hits))
    only_value = int(np.count_nonzero(value_hits & ~reference_hits))
    against = only_reference if worse else only_value
    discordant = only_reference + only_value
    p = 1.0 if discordant == 0 else float(binomtest(against, discordant, 0.5, alternative="greater").pvalue)
    value, reference = float(value_hits.mean()), float(reference_hits.mean())
    return SanityCheck(name, description, float(eps), value, reference, p, p >= 0.05)
