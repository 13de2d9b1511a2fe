"""Evaluating detectors: the detection paper's Table 1 and its generalization matrices.

- `detection_report`: f's and D's accuracy on clean and adversarial images, TPR, FPR,
  ROC AUC and TPR at 1% and 5% FPR, as a `DetectionReport`; `detection_table` renders
  several. `changed_images` finds the adversarial images an attack actually changed.
- `generalization_matrix`: detectors fitted on one attack (or ε) tested on all others,
  as a `GeneralizationMatrix` with `to_markdown`, `to_csv` and `plot`.

The baselines (`KernelDensityDetector`, `LIDDetector`, and `SaliencyDetector` with
`input_mode="image"`) live in `saliency_detect.detector` and go through the same
functions.
"""

from saliency_detect.evaluation._matrix import METRICS, GeneralizationMatrix, generalization_matrix
from saliency_detect.evaluation._report import (
    DetectionReport,
    changed_images,
    detection_report,
    detection_table,
)

__all__ = [
    "METRICS",
    "DetectionReport",
    "GeneralizationMatrix",
    "changed_images",
    "detection_report",
    "detection_table",
    "generalization_matrix",
]
