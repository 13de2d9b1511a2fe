"""`attacks.detector_aware`, the adaptive attack through the saliency detector."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from sklearn.exceptions import NotFittedError

from saliency_detect.attacks import detector_aware
from saliency_detect.detector import (
    SaliencyDetector,
    SaliencyFeatures,
)


def test_adaptive_attack_lowers_the_detection_rate_as_sigma_grows(trained_mnist_f, detector, data):
    x = data["x_test"][:150]
    rates = []
    for sigma in (0.0, 1.0):
        x_adv = detector_aware(trained_mnist_f, x, eps=0.3, detector=detector, sigma=sigma, nb_iter=10)
        assert np.abs(x_adv - x).max() <= 0.3 + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1
        rates.append(detector.predict(x_adv).mean())
    assert rates[1] < rates[0] - 0.2, rates


def test_adaptive_attack_with_sigma_zero_is_bim(trained_mnist_f, detector, data):
    from saliency_detect.attacks import bim

    x = data["x_test"][:32]
    np.testing.assert_allclose(
        detector_aware(trained_mnist_f, x, eps=0.1, detector=detector, sigma=0.0, nb_iter=5),
        bim(trained_mnist_f, x, eps=0.1, nb_iter=5),
        atol=1e-6,
    )


def test_adaptive_attack_differentiates_through_the_saliency():
    # With a smooth classifier the saliency depends on the image, so the detector's
    # gradient must include the second-order term: compare with finite differences.
    import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input((4, 4, 1))
    hidden = keras.layers.Dense(8, activation="tanh")(keras.layers.Flatten()(inputs))
    f = keras.Model(inputs, keras.layers.Dense(3)(hidden))
    layer = SaliencyFeatures(f, input_mode="saliency")
    w = tf.constant(np.random.default_rng(1).normal(size=(1, 4, 4, 1)), tf.float32)

    def score(x):
        return tf.reduce_sum(layer(x) * w)

    x = tf.constant(np.random.default_rng(2).random((1, 4, 4, 1)), tf.float32)
    from saliency_detect._gradients import score_gradients

    grad = score_gradients(lambda z: (tf.reshape(score(z), [1]), ()), x)[2][0].numpy()
    assert np.abs(grad).max() > 1e-3
    h = 1e-2
    for index in [(0, 0, 0, 0), (0, 1, 2, 0), (0, 3, 3, 0)]:
        step = np.zeros(x.shape, np.float32)
        step[index] = h
        numeric = (score(x + step) - score(x - step)).numpy() / (2 * h)
        assert grad[index] == pytest.approx(numeric, rel=2e-2, abs=2e-4)


def test_adaptive_attack_rejects_bad_arguments(trained_mnist_f, detector, data):
    x = data["x_test"][:2]
    with pytest.raises(ValueError, match=r"`sigma` must be a weight in \[0, 1\]"):
        detector_aware(trained_mnist_f, x, eps=0.1, detector=detector, sigma=1.5)
    with pytest.raises(TypeError, match=r"`detector` must be a detector of saliency_detect\.detector"):
        detector_aware(trained_mnist_f, x, eps=0.1, detector="det/")  # a path is not a detector
    with pytest.raises(ValueError, match="`eps` must be a positive number"):
        detector_aware(trained_mnist_f, x, eps=0.0, detector=detector)
    with pytest.raises(NotFittedError):
        detector_aware(trained_mnist_f, x, eps=0.1, detector=SaliencyDetector(trained_mnist_f))
