"""Every `Examples:` section in the public docstrings runs, so no example rots."""

import doctest
import importlib

import pytest

MODULES = [
    "saliency_detect.attacks._generate",
    "saliency_detect.attacks._registry",
    "saliency_detect.attacks.bim",
    "saliency_detect.attacks.carlini_wagner_l2",
    "saliency_detect.attacks.detector_aware",
    "saliency_detect.attacks.jsma",
    "saliency_detect.attacks.pixel_attack",
    "saliency_detect.attacks.fgsm",
    "saliency_detect.attacks.iterative_l2",
    "saliency_detect.attacks.minimal_epsilon",
    "saliency_detect.attacks.pgd",
    "saliency_detect.data._dataset",
    "saliency_detect.data._loading",
    "saliency_detect.data._images",
    "saliency_detect.data._streaming",
    "saliency_detect.detector._baselines",
    "saliency_detect.detector._detector",
    "saliency_detect.detector._guard",
    "saliency_detect.evaluation._matrix",
    "saliency_detect.evaluation._report",
    "saliency_detect.experiments._config",
    "saliency_detect.experiments._explain",
    "saliency_detect.experiments._pipeline",
    "saliency_detect.models._io",
    "saliency_detect.models._training",
    "saliency_detect.models._zoo",
    "saliency_detect.saliency._gradcam",
    "saliency_detect.saliency._gradient",
    "saliency_detect.saliency._registry",
    "saliency_detect.saliency._sanity",
    "saliency_detect.saliency.metrics",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    module = importlib.import_module(name)
    result = doctest.testmod(
        module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False
    )
    assert result.attempted > 0, f"{name} has no examples"
    assert result.failed == 0
