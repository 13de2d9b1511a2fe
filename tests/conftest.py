"""Shared fixtures: where the real data lives and the shipped MNIST-NET-f."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
_SHARED = REPO.parent / "shared" / "data"

# Tests and CI read the real data sets from ../shared/data unless told otherwise.
if not os.environ.get("SALIENCY_DETECT_DATA") and _SHARED.is_dir():
    os.environ["SALIENCY_DETECT_DATA"] = str(_SHARED)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


#: A test using one of these fixtures (directly or through another) trains a classifier,
#: reads the real data sets or runs the documentation's code; a test in one of these files
#: runs an example script, an experiment pipeline end to end or several processes. Those
#: are the integration tier; the rest is the fast tier:
#: `pytest -m "not slow and not integration"`.
_INTEGRATION_FIXTURES = {"trained_mnist_f", "shared_data", "page_runs"}
_INTEGRATION_FILES = {
    "test_examples.py",
    "test_pipeline.py",
    "test_explain.py",
    "test_detect.py",
    "test_distribute.py",
}


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by marker
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark the integration tier (see `_INTEGRATION_FIXTURES`)."""
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        if fixtures & _INTEGRATION_FIXTURES or item.path.name in _INTEGRATION_FILES:
            item.add_marker(pytest.mark.integration)


def pytest_collection_finish(session: pytest.Session) -> None:
    """Start the docs' code runner now when its tests are selected: it overlaps the others.

    Not under pytest-xdist: every worker collects every test, and whichever one is given
    `test_docs.py` starts the runner when it needs it (the other worker keeps the second
    core busy meanwhile).
    """
    if os.environ.get("PYTEST_XDIST_WORKER"):
        return
    for item in session.items:
        if "test_docs.py::test_python_blocks_run" in item.nodeid:
            folder = Path(tempfile.mkdtemp(prefix="docs-run-"))
            item.module.BACKGROUND = (item.module.start_runner(folder), folder)
            return


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Stop a background docs runner the session no longer needs (e.g. after -x or Ctrl-C)."""
    for item in session.items:
        if "test_docs.py::test_python_blocks_run" in item.nodeid and item.module.BACKGROUND:
            process, folder = item.module.BACKGROUND
            if process.poll() is None:
                process.kill()
                process.wait()
            shutil.rmtree(folder, ignore_errors=True)
            return


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The folder holding mnist.npz and cifar10.npz; skips (fails on CI) without it."""
    path = Path(os.environ.get("SALIENCY_DETECT_DATA", _SHARED))
    if not (path / "mnist.npz").is_file():
        message = f"real data sets not found in {path}; set SALIENCY_DETECT_DATA"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def mnist_sample():
    from saliency_detect.data import load_dataset

    return load_dataset("mnist-sample")


@pytest.fixture(scope="session")
def trained_mnist_f():
    """The shipped MNIST-NET-f (the paper's settings on full MNIST; its card has the command).

    Loading it instead of training one per session keeps three minutes out of every run;
    `test_training.py` trains MNIST-NET-f itself (the slow tier) and `test_pretrained.py`
    checks the shipped weights against their card.
    """
    from saliency_detect.models import pretrained

    return pretrained("mnist_net_f")


@pytest.fixture(scope="session")
def data(trained_mnist_f, mnist_sample):
    """FGSM (ε 0.3) on 1,500 training and 400 test images of the sample, and ε 0.1 on the test images."""
    from saliency_detect.attacks import fgsm

    f = trained_mnist_f
    x_train, x_test = mnist_sample.x_train[:1500], mnist_sample.x_test[:400]
    return {
        "x_train": x_train,
        "x_train_adv": fgsm(f, x_train, eps=0.3),
        "x_test": x_test,
        "y_test": mnist_sample.y_test[:400],
        "x_test_adv": fgsm(f, x_test, eps=0.3),
        "x_test_weak": fgsm(f, x_test, eps=0.1),
    }


@pytest.fixture(scope="session")
def detector(trained_mnist_f, data):
    """A `SaliencyDetector` fitted 4 epochs on `data`'s 1,500 + 1,500 training images."""
    from saliency_detect.detector import SaliencyDetector

    det = SaliencyDetector(
        trained_mnist_f, epochs=4, learning_rate=1e-3, cache_saliency=True, random_state=0, verbose=0
    )
    return det.fit(data["x_train"], data["x_train_adv"])
