"""`generalization_matrix`: detectors fitted on one attack (or ε) tested on every other."""

from __future__ import annotations

import io
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike
from sklearn.metrics import roc_auc_score
from sklearn.utils.validation import check_is_fitted

from saliency_detect._files import atomic_write_text
from saliency_detect._validation import check_images, validates_once

if TYPE_CHECKING:
    from matplotlib.axes import Axes

METRICS = ("accuracy", "detection_rate", "roc_auc")


@dataclass(frozen=True)
class GeneralizationMatrix:
    """A labelled matrix: rows are the detectors' training sets, columns the test sets.

    Attributes:
        train_labels: one label per row (the attack or ε the detector was fitted on).
        test_labels: one label per column (the attack or ε it is tested on).
        values: (rows, columns) float array of `metric`.
        metric: `"accuracy"`, `"detection_rate"` or `"roc_auc"`.
    """

    train_labels: tuple[str, ...]
    test_labels: tuple[str, ...]
    values: np.ndarray
    metric: str

    def to_dict(self) -> dict:
        """Return `{"metric", "train_labels", "test_labels", "values"}` as plain Python values."""
        return {
            "metric": self.metric,
            "train_labels": list(self.train_labels),
            "test_labels": list(self.test_labels),
            "values": self.values.tolist(),
        }

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> GeneralizationMatrix:
        """The inverse of `to_dict`."""
        return cls(
            tuple(values["train_labels"]),
            tuple(values["test_labels"]),
            np.asarray(values["values"], np.float64),
            str(values["metric"]),
        )

    def to_markdown(self) -> str:
        """Return a Markdown table: a row per training set, a column per test set."""
        lines = [
            f"| trained on \\ tested on ({self.metric}) | " + " | ".join(self.test_labels) + " |",
            "| --- |" + " ---: |" * len(self.test_labels),
        ]
        for label, row in zip(self.train_labels, self.values, strict=True):
            lines.append(f"| {label} | " + " | ".join(f"{v:.3f}" for v in row) + " |")
        return "\n".join(lines)

    def to_csv(self, path: str | os.PathLike[str] | None = None) -> str:
        """Return the matrix as CSV (first column: training set); also write it to `path` atomically."""
        out = io.StringIO()
        out.write("trained_on," + ",".join(self.test_labels) + "\n")
        for label, row in zip(self.train_labels, self.values, strict=True):
            out.write(label + "," + ",".join(repr(float(v)) for v in row) + "\n")
        text = out.getvalue()
        if path is not None:
            atomic_write_text(Path(path), text)
        return text

    def plot(self, ax: Axes | None = None, *, cmap: str = "viridis") -> Axes:
        """Draw the matrix as an annotated heatmap (the paper's Figures 3-6).

        Args:
            ax: a matplotlib `Axes` to draw on; None makes a new figure.
            cmap: a matplotlib colour map name.

        Returns:
            The matplotlib `Axes`.
        """
        import matplotlib.pyplot as plt

        if ax is None:
            size = 1.2 + 0.9 * max(len(self.test_labels), 2)
            _, ax = plt.subplots(figsize=(size + 1.5, 0.9 * max(len(self.train_labels), 2) + 1.2))
        image = ax.imshow(self.values, cmap=cmap, vmin=0.0, vmax=1.0)
        ax.set_xticks(range(len(self.test_labels)), self.test_labels, rotation=45, ha="right")
        ax.set_yticks(range(len(self.train_labels)), self.train_labels)
        ax.set_xlabel("tested on")
        ax.set_ylabel("trained on")
        for i, row in enumerate(self.values):
            for j, value in enumerate(row):
                ax.text(
                    j, i, f"{value:.2f}", ha="center", va="center", color="white" if value < 0.6 else "black"
                )
        ax.figure.colorbar(image, ax=ax, label=self.metric)
        ax.figure.tight_layout()
        return ax


@validates_once
def generalization_matrix(
    detectors: Mapping[str, object],
    x_clean: ArrayLike,
    adversarial: Mapping[str, object],
    *,
    metric: str = "accuracy",
) -> GeneralizationMatrix:
    """Test every fitted detector on every adversarial set.

    Entry (i, j) is detector i (fitted on one attack or ε) measured on the clean
    images together with adversarial set j. The clean images are scored once per
    detector.

    Args:
        detectors: fitted detectors by training label, e.g. `{"fgsm": det_fgsm, ...}`.
        x_clean: held-out clean images (N, H, W, C).
        adversarial: adversarial test images by label, e.g. `{"fgsm": x_fgsm, ...}`.
        metric: `"accuracy"` (on clean and adversarial images together), `"detection_rate"`
            (the share of adversarial images flagged) or `"roc_auc"`.

    Returns:
        A `GeneralizationMatrix`.

    Raises:
        ValueError: for an unknown metric, empty mappings or invalid images.
        sklearn.exceptions.NotFittedError: if a detector is not fitted.

    Examples:
        >>> import numpy as np
        >>> from saliency_detect.detector import SaliencyDetector
        >>> from saliency_detect.evaluation import generalization_matrix
        >>> from saliency_detect.models import mnist_net_f
        >>> f = mnist_net_f()
        >>> x = np.random.default_rng(0).random((16, 28, 28, 1), dtype=np.float32) * 0.5
        >>> det = SaliencyDetector(f, epochs=1, verbose=0, random_state=0).fit(x, x + 0.5)
        >>> m = generalization_matrix({"shift": det}, x, {"shift": x + 0.5, "small": x + 0.1})
        >>> m.values.shape, m.test_labels
        ((1, 2), ('shift', 'small'))
    """
    if metric not in METRICS:
        raise ValueError(f"`metric` must be one of {METRICS}. Received: metric={metric!r}")
    if not detectors or not adversarial:
        raise ValueError("`detectors` and `adversarial` must each hold at least one entry.")
    x_clean = check_images(x_clean, name="x_clean", clip_range=None)
    sets = {
        str(label): check_images(
            x, name=f"adversarial[{label!r}]", clip_range=None, expected_shape=x_clean.shape[1:]
        )
        for label, x in adversarial.items()
    }
    values = np.zeros((len(detectors), len(sets)))
    for i, detector in enumerate(detectors.values()):
        check_is_fitted(detector)
        clean = np.asarray(detector.decision_function(x_clean), np.float64)
        for j, x_adv in enumerate(sets.values()):
            adv = np.asarray(detector.decision_function(x_adv), np.float64)
            threshold = float(detector.threshold_)
            if metric == "detection_rate":
                values[i, j] = np.mean(adv > threshold)
            elif metric == "roc_auc":
                labels = np.concatenate([np.zeros(len(clean)), np.ones(len(adv))])
                values[i, j] = roc_auc_score(labels, np.concatenate([clean, adv]))
            else:
                correct = np.count_nonzero(clean <= threshold) + np.count_nonzero(adv > threshold)
                values[i, j] = correct / (len(clean) + len(adv))
    return GeneralizationMatrix(
        train_labels=tuple(str(k) for k in detectors),
        test_labels=tuple(sets),
        values=values,
        metric=metric,
    )
