"""`GuardedClassifier`: f's labels and D's verdicts in one model, saved and reloaded."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from sklearn.exceptions import NotFittedError

from saliency_detect.detector import (
    GuardedClassifier,
    SaliencyDetector,
)
from saliency_detect.models import load_model, mnist_net_f, save_model


def test_guard_predicts_the_classifier_labels_and_the_detector_verdicts(trained_mnist_f, detector, data):
    x = np.concatenate([data["x_test"][:50], data["x_test_adv"][:50]])
    out = GuardedClassifier(trained_mnist_f, detector, batch_size=32).predict(x)
    np.testing.assert_array_equal(out.labels, trained_mnist_f.predict(x, verbose=0).argmax(1))
    np.testing.assert_allclose(out.scores, detector.predict_proba(x)[:, 1], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(out.flags, detector.predict(x).astype(bool))
    assert out.flags[50:].mean() > 0.8 > out.flags[:50].mean()


def test_guard_follows_a_calibration_made_after_its_first_call(trained_mnist_f, detector, data):
    """The threshold is compiled into the guard's step: a calibration must compile it afresh."""
    import copy

    det = copy.copy(detector)  # the session's detector keeps its threshold
    guard = GuardedClassifier(trained_mnist_f, det)
    x = np.concatenate([data["x_test"][:100], data["x_test_adv"][:100]])
    first = guard.predict(x)
    np.testing.assert_array_equal(first.flags, det.predict(x).astype(bool))
    det.calibrate(data["x_test"][100:400], fpr=0.5)  # flags half of the clean images
    assert det.threshold_ != detector.threshold_
    again = guard.predict(x)
    np.testing.assert_array_equal(again.flags, det.predict(x).astype(bool))
    assert again.flags.sum() > first.flags.sum()


def test_a_copied_detector_compiles_its_own_steps(trained_mnist_f, detector, data):
    """A shallow copy starts with the original's `__dict__`: its steps must not land in the original's."""
    import copy

    from saliency_detect._prepared import owner_steps

    x = data["x_test"][:8]
    detector.decision_function(x)
    before = dict(owner_steps(detector))
    det = copy.copy(detector)
    assert owner_steps(det) == {}  # nothing compiled for the copy yet, whatever the original holds
    GuardedClassifier(trained_mnist_f, det).predict(x)
    assert any(key[0] == "guarded_predict" for key in owner_steps(det))
    assert owner_steps(detector) == before


def test_exported_saved_model_gives_the_same_scores(trained_mnist_f, detector, data, tmp_path):
    guard = GuardedClassifier(trained_mnist_f, detector)
    x = np.concatenate([data["x_test"][:40], data["x_test_adv"][:40]])
    expected = guard.predict(x)
    path = guard.export(tmp_path / "guard")
    served = tf.saved_model.load(str(path))
    out = served.serve(tf.constant(x))
    np.testing.assert_allclose(out["adversarial_score"].numpy(), expected.scores, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(out["is_adversarial"].numpy(), expected.flags)
    np.testing.assert_array_equal(out["logits"].numpy().argmax(1), expected.labels)
    with pytest.raises(FileExistsError):
        guard.export(path)


def test_guard_saved_as_one_keras_file_reloads_in_safe_mode(trained_mnist_f, detector, data, tmp_path):
    guard = GuardedClassifier(trained_mnist_f, detector)
    path = save_model(guard.as_keras_model(), tmp_path / "guard.keras")
    reloaded = load_model(path)
    x = data["x_test_adv"][:40]
    out = reloaded(x)
    np.testing.assert_allclose(
        out["adversarial_score"].numpy(), guard.predict(x).scores, rtol=1e-5, atol=1e-6
    )


def test_guard_with_a_softmax_classifier_reloads_its_copied_head(mnist_sample, tmp_path):
    # A fused-softmax head is read through a copy of its weights; the reloaded artefact
    # must refresh that copy from the loaded weights, not keep its initial values.
    keras = pytest.importorskip("keras")
    inputs = keras.Input((28, 28, 1))
    hidden = keras.layers.Dense(16, activation="relu")(keras.layers.Flatten()(inputs))
    f = keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(hidden))
    x = mnist_sample.x_test[:64]
    det = SaliencyDetector(f, epochs=1, verbose=0, random_state=0).fit(x, np.clip(x + 0.3, 0, 1))
    guard = GuardedClassifier(f, det)
    reloaded = load_model(save_model(guard.as_keras_model(), tmp_path / "g.keras"))
    np.testing.assert_allclose(reloaded(x)["adversarial_score"].numpy(), guard.predict(x).scores, atol=1e-5)


def test_guard_refuses_a_detector_for_another_classifier(detector):
    with pytest.raises(ValueError, match="fitted for another classifier"):
        GuardedClassifier(mnist_net_f(), detector)
    with pytest.raises(NotFittedError):
        GuardedClassifier(detector.classifier, SaliencyDetector(detector.classifier))
    with pytest.raises(TypeError, match="must be a SaliencyDetector"):
        GuardedClassifier(detector.classifier, "detector/")


def test_guard_rejects_bad_images(trained_mnist_f, detector):
    guard = GuardedClassifier(trained_mnist_f, detector)
    with pytest.raises(ValueError, match="does not match the model's input"):
        guard.predict(np.zeros((2, 28, 28, 3), np.float32))
