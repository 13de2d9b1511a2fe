"""Detectors of adversarial images, and the guard that puts one in front of a classifier.

- `SaliencyDetector`: the detection paper's detector D on the image stacked with the
  classifier's saliency; `input_mode="image"` is the raw-image baseline.
- `GuardedClassifier`: a fitted detector in front of its classifier, as one Keras model
  that can be saved and exported.
- Baselines with the same `fit` / `predict_proba` contract: `KernelDensityDetector`
  (kernel density + Bayesian uncertainty, Feinman et al. 2017), `LIDDetector` (local
  intrinsic dimensionality, Ma et al. 2018), `MahalanobisDetector` (class-conditional
  Gaussians on f's features, Lee et al. 2018) and `FeatureSqueezingDetector` (bit-depth
  reduction and median smoothing, Xu et al. 2018).
- `harden`: refit any of them on adversarial images crafted against it by the joint
  adaptive attack (Metzen et al. 2017's dynamic adversary training).

Every detector follows scikit-learn's estimator contract (`fit(X, y)` with one 0/1 label
per image; `fit(x_clean, x_adv)` is shorthand for `fit(*stack_pairs(x_clean, x_adv))`):
parameters stored as given and checked in `fit`, `fit` returns `self`, fitted state ends in `_`, and
`predict` / `predict_proba` / `decision_function` / `score` / `calibrate` raise
`sklearn.exceptions.NotFittedError` before `fit`. Class 1 is "adversarial".
"""

from saliency_detect.detector._base import balanced_threshold, stack_pairs
from saliency_detect.detector._baselines import KernelDensityDetector, LIDDetector
from saliency_detect.detector._detector import RECIPES, SaliencyDetector, default_detector
from saliency_detect.detector._features import DETECTOR_SALIENCY, INPUT_MODES, SaliencyFeatures
from saliency_detect.detector._guard import GuardedClassifier, GuardedPrediction
from saliency_detect.detector._hardening import harden
from saliency_detect.detector._mahalanobis import MahalanobisDetector
from saliency_detect.detector._squeezing import (
    PAPER_SQUEEZERS,
    FeatureSqueezingDetector,
    bit_depth,
    median_smoothing,
)

__all__ = [
    "DETECTOR_SALIENCY",
    "INPUT_MODES",
    "PAPER_SQUEEZERS",
    "RECIPES",
    "FeatureSqueezingDetector",
    "GuardedClassifier",
    "GuardedPrediction",
    "KernelDensityDetector",
    "LIDDetector",
    "MahalanobisDetector",
    "SaliencyDetector",
    "SaliencyFeatures",
    "balanced_threshold",
    "bit_depth",
    "default_detector",
    "harden",
    "median_smoothing",
    "stack_pairs",
]
