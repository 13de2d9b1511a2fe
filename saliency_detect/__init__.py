"""saliency_detect: detect adversarial images by how they bend a classifier's saliency.

Subpackages, one per concern, imported on first use:

- `saliency_detect.data`: real data loaders (MNIST, CIFAR-10, image folders) and
  the embedded `mnist-sample` data set.
- `saliency_detect.models`: the model zoo of the papers (MNIST-NET, CIFAR10-NET,
  VGG16, ResNet-20), training, saving and loading.
- `saliency_detect.saliency`: saliency and attribution methods with one signature,
  comparison metrics and the sanity check.
- `saliency_detect.attacks`: FGSM, BIM, iterative L2, PGD, JSMA, C&W L2 and Pixel
  Attack, the minimal-ε search and cached adversarial sets.
- `saliency_detect.detector`: `SaliencyDetector` (the paper's detector), the
  baselines, and `GuardedClassifier`, which puts a detector in front of a classifier.
- `saliency_detect.evaluation`: detection reports (the paper's Table 1) and
  generalization matrices.
- `saliency_detect.experiments`: the detection paper's experiment end to end
  (`run_experiment`, `ExperimentConfig`) and its reports.
- `saliency_detect.cli`: the `saliency-detect` command.

Keras must run on the TensorFlow backend; importing this package with another backend
configured raises an `ImportError` that says how to switch.
"""

import importlib
import sys

from saliency_detect._backend import check_loaded_backend, require_tensorflow_backend
from saliency_detect._version import __version__

require_tensorflow_backend()
if "keras" in sys.modules:
    check_loaded_backend()

_SUBPACKAGES = ("attacks", "cli", "data", "detector", "evaluation", "experiments", "models", "saliency")

__all__ = [
    "__version__",
    "attacks",
    "cli",
    "data",
    "detector",
    "evaluation",
    "experiments",
    "models",
    "saliency",
]


def __getattr__(name: str):
    # Subpackages load on first use (PEP 562), so `saliency-detect --help` does not
    # wait for TensorFlow.
    if name in _SUBPACKAGES:
        return importlib.import_module(f"saliency_detect.{name}")
    raise AttributeError(f"module 'saliency_detect' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_SUBPACKAGES))
