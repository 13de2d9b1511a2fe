"""`detection_report`: the detection paper's Table 1 columns and the ROC figures for one attack."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import MISSING, asdict, dataclass, fields
from typing import TYPE_CHECKING, Any

import keras
import numpy as np
from numpy.typing import ArrayLike
from sklearn.metrics import roc_auc_score, roc_curve
from sklearn.utils.validation import check_is_fitted

from saliency_detect._validation import check_images, check_labels, model_image_shape, validates_once
from saliency_detect.models._training import predict_labels

if TYPE_CHECKING:
    from saliency_detect.detector._base import Detector

_COLUMNS = (
    ("f_accuracy_clean", "f acc. clean"),
    ("f_accuracy_adversarial", "f acc. adv."),
    ("d_accuracy_clean", "D acc. clean"),
    ("d_accuracy_adversarial", "D acc. adv."),
    ("tpr", "TPR"),
    ("fpr", "FPR"),
    ("roc_auc", "ROC AUC"),
    ("tpr_at_1_fpr", "TPR @ 1% FPR"),
    ("tpr_at_5_fpr", "TPR @ 5% FPR"),
)

#: Which threshold each column of a report uses, printed under every table.
THRESHOLD_NOTE = (
    "D acc., TPR and FPR use the detector's own threshold (threshold_source: set by fit on "
    "held-out validation images, at probability 0.5, or by calibrate); TPR @ 1% / 5% FPR put "
    "the threshold where 1% / 5% of these clean test images are flagged; ROC AUC uses none."
)


@dataclass(frozen=True)
class DetectionReport:
    """How a classifier and its detector fare on clean images and their adversarial versions.

    Attributes:
        name: a label for the row (the attack, usually).
        f_accuracy_clean: the classifier's accuracy on the clean images.
        f_accuracy_adversarial: its accuracy on the adversarial images.
        d_accuracy_clean: the share of clean images the detector calls clean (1 - FPR).
        d_accuracy_adversarial: the share of adversarial images it flags (the TPR).
        tpr: true-positive rate at the detector's threshold.
        fpr: false-positive rate at the detector's threshold.
        roc_auc: area under the ROC curve of the detector's scores.
        tpr_at_5_fpr: the highest TPR with FPR at most 5%.
        n_clean: number of clean images.
        n_adversarial: number of adversarial images.
        threshold: the detector's threshold on its `decision_function` scale.
        tpr_at_1_fpr: the highest TPR with FPR at most 1%.
        threshold_source: how the detector's threshold was set (its `threshold_source_`:
            `"validation balanced accuracy"`, `"probability 0.5"`, `"calibrated at FPR
            f"`; `"unknown"` for a detector that does not say).
        n_unchanged: adversarial images identical to their clean image (the attack
            changed nothing, typically because f already misclassified the image); they
            are not counted as adversarial by D's columns.
    """

    name: str
    f_accuracy_clean: float
    f_accuracy_adversarial: float
    d_accuracy_clean: float
    d_accuracy_adversarial: float
    tpr: float
    fpr: float
    roc_auc: float
    tpr_at_5_fpr: float
    n_clean: int
    n_adversarial: int
    threshold: float
    tpr_at_1_fpr: float = float("nan")
    threshold_source: str = "unknown"
    n_unchanged: int = 0

    def to_dict(self) -> dict:
        """Return every field as plain Python values (JSON-ready)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> DetectionReport:
        """The inverse of `to_dict`; keys that are not fields (a table's extra columns) are ignored.

        Raises:
            ValueError: if a field without a default is missing (the message names it).
        """
        names = {f.name for f in fields(cls)}
        missing = sorted(f.name for f in fields(cls) if f.default is MISSING and f.name not in values)
        if missing:
            raise ValueError(
                f"A DetectionReport needs the field(s) {missing}. Received the keys: {sorted(values)}"
            )
        return cls(**{key: value for key, value in values.items() if key in names})

    def to_markdown(self) -> str:
        """Return the report as a one-row Markdown table (see `detection_table` for several rows)."""
        return detection_table([self])


def detection_table(reports: Sequence[DetectionReport]) -> str:
    """Render reports as one Markdown table, a row per report (the paper's Table 1 layout).

    The last column says how each detector's threshold was set; a note under the table
    says which threshold every column uses.

    Examples:
        >>> from saliency_detect.evaluation import DetectionReport, detection_table
        >>> row = DetectionReport("fgsm", 0.99, 0.1, 0.98, 0.99, 0.99, 0.02, 0.999, 0.99, 100, 100, 0.0,
        ...                       tpr_at_1_fpr=0.95, threshold_source="probability 0.5")
        >>> print(detection_table([row]).splitlines()[2])
        | fgsm | 0.990 | 0.100 | 0.980 | 0.990 | 0.990 | 0.020 | 0.999 | 0.950 | 0.990 | probability 0.5 |
    """
    header = "| attack | " + " | ".join(title for _, title in _COLUMNS) + " | threshold |"
    rule = "| --- |" + " ---: |" * len(_COLUMNS) + " --- |"
    rows = [
        f"| {r.name} | "
        + " | ".join(f"{getattr(r, field):.3f}" for field, _ in _COLUMNS)
        + f" | {r.threshold_source} |"
        for r in reports
    ]
    return "\n".join([header, rule, *rows, "", THRESHOLD_NOTE])


def changed_images(x: ArrayLike, x_adv: ArrayLike) -> np.ndarray:
    """Return a boolean mask: which `x_adv[i]` differ from `x[i]` in at least one pixel.

    Examples:
        >>> import numpy as np
        >>> from saliency_detect.evaluation import changed_images
        >>> x = np.zeros((3, 2, 2, 1), np.float32)
        >>> x_adv = x.copy(); x_adv[1, 0, 0, 0] = 0.5
        >>> changed_images(x, x_adv).tolist()
        [False, True, False]
    """
    x, x_adv = np.asarray(x), np.asarray(x_adv)
    if x.shape != x_adv.shape:
        raise ValueError(
            f"`x_adv` must pair one image with each clean image: expected shape {x.shape}. "
            f"Received: {x_adv.shape}"
        )
    return (x != x_adv).reshape(len(x), -1).any(axis=1)


def detection_report(
    classifier: keras.Model,
    detector: Detector,
    x_test: ArrayLike,
    y_test: ArrayLike,
    x_adv: ArrayLike,
    *,
    name: str = "",
    batch_size: int = 256,
    clip_range: tuple[float, float] | None = (0.0, 1.0),
) -> DetectionReport:
    """Measure the classifier f and a fitted detector D on clean images and their adversarial versions.

    `x_adv[i]` is the adversarial version of `x_test[i]`, so both sets are scored
    against `y_test`. Every adversarial image counts, whether or not it fools f (the
    paper's protocol), except one identical to its clean image: an attack that changed
    nothing (JSMA and Pixel Attack return an image f already misclassifies as it is)
    made no adversarial example, and labelling the clean image "adversarial" would only
    count a detector's correct answer as a miss. Those are left out of D's adversarial
    columns (and counted in `n_unchanged`); f's accuracy still uses every image.

    Args:
        classifier: the classifier f.
        detector: a fitted detector (any of `saliency_detect.detector`'s, or an object
            with `decision_function` and `threshold_`).
        x_test: clean images (N, H, W, C).
        y_test: their true labels (N,).
        x_adv: adversarial images (N, H, W, C), one per clean image.
        name: the row's label (the attack).
        batch_size: images per forward pass of f.
        clip_range: the range images must lie in, or None.

    Returns:
        A `DetectionReport`.

    Raises:
        ValueError: for invalid images or labels, or `x_adv` not matching `x_test`.
        sklearn.exceptions.NotFittedError: if `detector` is not fitted.

    Examples:
        >>> import numpy as np
        >>> from saliency_detect.detector import SaliencyDetector
        >>> from saliency_detect.evaluation import detection_report
        >>> from saliency_detect.models import mnist_net_f
        >>> f = mnist_net_f()
        >>> x = np.random.default_rng(0).random((16, 28, 28, 1), dtype=np.float32) * 0.5
        >>> det = SaliencyDetector(f, epochs=1, verbose=0, random_state=0).fit(x, x + 0.5)
        >>> report = detection_report(f, det, x, np.zeros(16, int), x + 0.5, name="shift")
        >>> report.n_clean, report.n_adversarial
        (16, 16)
    """
    return detection_report_and_roc(
        classifier, detector, x_test, y_test, x_adv, name=name, batch_size=batch_size, clip_range=clip_range
    )[0]


@validates_once
def detection_report_and_roc(
    classifier: keras.Model,
    detector,
    x_test,
    y_test,
    x_adv,
    *,
    name: str = "",
    batch_size: int = 256,
    clip_range: tuple[float, float] | None = (0.0, 1.0),
) -> tuple[DetectionReport, tuple[np.ndarray, np.ndarray]]:
    """`detection_report`, and the ROC curve `(fpr, tpr)` from the same detector scores."""
    check_is_fitted(detector)
    x_test = check_images(
        x_test, name="x_test", clip_range=clip_range, expected_shape=model_image_shape(classifier)
    )
    x_adv = check_images(x_adv, name="x_adv", clip_range=clip_range, expected_shape=x_test.shape[1:])
    if len(x_adv) != len(x_test):
        raise ValueError(
            f"`x_adv` must hold one adversarial image per clean image: expected {len(x_test)}. "
            f"Received {len(x_adv)}."
        )
    y_test = check_labels(y_test, n=len(x_test), name="y_test")
    f_clean = float(
        np.mean(predict_labels(classifier, x_test, batch_size=batch_size, clip_range=None) == y_test)
    )
    f_adv = float(
        np.mean(predict_labels(classifier, x_adv, batch_size=batch_size, clip_range=None) == y_test)
    )
    changed = changed_images(x_test, x_adv)
    if not changed.any():
        raise ValueError(
            "Every image of `x_adv` equals its clean image in `x_test`: the attack changed nothing, "
            "so there is no adversarial example to detect."
        )
    scores_clean = np.asarray(detector.decision_function(x_test), np.float64)
    scores_adv = np.asarray(detector.decision_function(x_adv[changed]), np.float64)
    threshold = float(detector.threshold_)
    fpr = float(np.mean(scores_clean > threshold))
    tpr = float(np.mean(scores_adv > threshold))
    labels = np.concatenate([np.zeros(len(scores_clean)), np.ones(len(scores_adv))])
    scores = np.concatenate([scores_clean, scores_adv])
    curve_fpr, curve_tpr, _ = roc_curve(labels, scores)
    report = DetectionReport(
        name=name,
        f_accuracy_clean=f_clean,
        f_accuracy_adversarial=f_adv,
        d_accuracy_clean=1.0 - fpr,
        d_accuracy_adversarial=tpr,
        tpr=tpr,
        fpr=fpr,
        roc_auc=float(roc_auc_score(labels, scores)),
        tpr_at_5_fpr=float(np.max(curve_tpr[curve_fpr <= 0.05])),
        n_clean=len(x_test),
        n_adversarial=int(changed.sum()),
        threshold=threshold,
        tpr_at_1_fpr=float(np.max(curve_tpr[curve_fpr <= 0.01])),
        threshold_source=str(getattr(detector, "threshold_source_", "unknown")),
        n_unchanged=int(len(x_adv) - changed.sum()),
    )
    return report, (curve_fpr, curve_tpr)
