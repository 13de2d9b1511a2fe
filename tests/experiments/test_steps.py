"""The steps both experiments share (`experiments/_steps.py`)."""

from __future__ import annotations

import saliency_detect.models as models
from saliency_detect.experiments._steps import Run
from saliency_detect.models import mnist_net_f


def test_the_classifier_fingerprint_is_computed_once_per_run(tmp_path, tiny_config, monkeypatch):
    calls = []
    original = models.model_fingerprint

    def counted(model):
        calls.append(model.name)
        return original(model)

    monkeypatch.setattr(models, "model_fingerprint", counted)
    run = Run(tiny_config(), tmp_path, verbose=0)
    f, other = mnist_net_f(), mnist_net_f()
    assert run.fingerprint(f) == run.fingerprint(f) == original(f)
    assert run.fingerprint(other) != run.fingerprint(f)  # another model is another entry
    assert len(calls) == 2
