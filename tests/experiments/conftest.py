"""The experiments' tests share two configs of a few seconds: `tiny_config` and `tiny_explain`."""

from __future__ import annotations

import pytest

from saliency_detect.experiments import ExperimentConfig


def _tiny_config(**changes):
    """A run of a few seconds: 1 epoch of f on 300 images, detectors on 60 + 60 images."""
    values = {
        "dataset": "mnist-sample",
        "train_size": 300,
        "test_size": 40,
        "epochs": 1,
        "learning_rate": 1e-3,
        "search_size": 40,
        "detector_train_size": 60,
        "detector_epochs": 1,
        "detector_learning_rate": 1e-3,
        "attacks": [{"name": "fgsm", "eps": 0.3}, {"name": "bim", "eps": 0.2, "params": {"nb_iter": 3}}],
        "baselines": [],
        "adaptive_sigmas": [],
        "security_eps_factors": [],
        "use_pretrained": False,
    }
    values.update(changes)
    return ExperimentConfig.from_dict(values)


def _tiny_explain(**changes):
    from saliency_detect.experiments import ExplainConfig

    values = {
        "dataset": "mnist-sample",
        "architecture": "mnist_net_f",
        "train_size": 500,
        "test_size": 40,
        "epochs": 1,
        "learning_rate": 1e-3,
        "augment": False,
        "n_images": 40,
        "n_figures": 2,
        "attacks": [
            {"name": "pixel_attack", "params": {"pixels": 3, "popsize": 20, "nb_iter": 3}},
            {"name": "pgd", "eps": 0.3, "params": {"nb_iter": 5}},
        ],
    }
    values.update(changes)
    return ExplainConfig.from_dict(values)


@pytest.fixture(scope="session")
def tiny_config():
    """`tiny_config(**changes)`: an `ExperimentConfig` of a few seconds, with `changes` applied."""
    return _tiny_config


@pytest.fixture(scope="session")
def tiny_explain():
    """`tiny_explain(**changes)`: an `ExplainConfig` of a few seconds, with `changes` applied."""
    return _tiny_explain
