"""Evaluating detectors: the detection paper's Table 1 and its generalization matrices.

- `detection_report`: f's and D's accuracy on clean and adversarial images, TPR, FPR,
  ROC AUC and TPR at 1% and 5% FPR, as a `DetectionReport`; `detection_table` renders
  several. `changed_images` finds the adversarial images an attack actually changed.
- `generalization_matrix`: detectors fitted on one attack (or ε) tested on all others,
  as a `GeneralizationMatrix` with `to_markdown`, `to_csv` and `plot`.
- `adaptive_success`: which images of an attack on f and its detector (`attacks.joint_pgd`,
  `attacks.detector_aware`) fool f without being flagged.
- `security_evaluation`: attackers of growing knowledge (PGD on f alone, the joint attack
  on f and D) over a range of ε for several detectors, with the sanity checks (unbounded
  ε, more steps, transfer from a surrogate), as `SecurityEvaluation`s.

The baselines (`KernelDensityDetector`, `LIDDetector`, `MahalanobisDetector`,
`FeatureSqueezingDetector`, and `SaliencyDetector` with `input_mode="image"`) live in
`saliency_detect.detector` and go through the same functions.
"""

from saliency_detect.evaluation._matrix import METRICS, GeneralizationMatrix, generalization_matrix
from saliency_detect.evaluation._report import (
    DetectionReport,
    changed_images,
    detection_report,
    detection_table,
)
from saliency_detect.evaluation._security import (
    SanityCheck,
    SecurityEvaluation,
    adaptive_success,
    rate_interval,
    security_evaluation,
)

__all__ = [
    "METRICS",
    "DetectionReport",
    "GeneralizationMatrix",
    "SanityCheck",
    "SecurityEvaluation",
    "adaptive_success",
    "changed_images",
    "detection_report",
    "detection_table",
    "generalization_matrix",
    "rate_interval",
    "security_evaluation",
]
