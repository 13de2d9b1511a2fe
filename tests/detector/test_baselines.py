"""The baseline detectors: kernel density + uncertainty, LID, feature squeezing, Mahalanobis."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from sklearn.exceptions import NotFittedError

from saliency_detect.detector import (
    FeatureSqueezingDetector,
    KernelDensityDetector,
    LIDDetector,
    MahalanobisDetector,
    SaliencyDetector,
)
from saliency_detect.evaluation import (
    detection_report,
)


@pytest.mark.parametrize(
    "make",
    [
        lambda f: KernelDensityDetector(f, mc_samples=10, random_state=0),
        lambda f: LIDDetector(f, random_state=0),
        lambda f: FeatureSqueezingDetector(f),
        lambda f: MahalanobisDetector(f, random_state=0),
        lambda f: SaliencyDetector(
            f, input_mode="image", epochs=2, learning_rate=1e-3, verbose=0, random_state=0
        ),
    ],
    ids=["kernel_density", "lid", "feature_squeezing", "mahalanobis", "image_only"],
)
def test_baselines_share_the_contract_and_detect_fgsm(trained_mnist_f, data, make):
    det = make(trained_mnist_f)
    with pytest.raises(NotFittedError):
        det.predict_proba(data["x_test"][:2])
    assert det.fit(data["x_train"], data["x_train_adv"]) is det
    report = detection_report(trained_mnist_f, det, data["x_test"], data["y_test"], data["x_test_adv"])
    assert report.roc_auc > 0.85, report
    proba = det.predict_proba(data["x_test"][:5])
    assert proba.shape == (5, 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)


def test_lid_refuses_unknown_layers_and_too_few_images(trained_mnist_f, data):
    with pytest.raises(ValueError, match="must name layers of the classifier"):
        LIDDetector(trained_mnist_f, layers=["conv9"]).fit(data["x_train"][:40], data["x_train_adv"][:40])
    with pytest.raises(ValueError, match="more than k=20 clean images"):
        LIDDetector(trained_mnist_f).fit(data["x_train"][:10], data["x_train_adv"][:10])


def test_lid_estimate_matches_the_formula():
    from saliency_detect.detector._baselines import _lid

    rng = np.random.default_rng(0)
    reference = rng.normal(size=(30, 5)).astype(np.float32)
    query = rng.normal(size=(4, 5)).astype(np.float32)
    k = 7
    dist = np.sort(np.linalg.norm(query[:, None, :].astype(np.float64) - reference[None], axis=2), axis=1)[
        :, :k
    ]
    expected = -1.0 / np.mean(np.log(dist / dist[:, -1:]), axis=1)
    np.testing.assert_allclose(
        _lid(tf.constant(query), tf.constant(reference), k).numpy(), expected, rtol=1e-5
    )
    # A reference row is not its own neighbour.
    own = _lid(tf.constant(reference[:1]), tf.constant(reference), k).numpy()
    d_own = np.sort(np.linalg.norm(reference[1:].astype(np.float64) - reference[0], axis=1))[:k]
    np.testing.assert_allclose(own, -1.0 / np.mean(np.log(d_own / d_own[-1])), rtol=1e-5)


def test_minibatch_lids_follow_the_reference_codes_mle_batch():
    """Ma et al.'s protocol: per minibatch, its own clean activations are the neighbours and the
    nearest neighbour of every point is dropped (scipy's cdist, as the reference code)."""
    import keras
    from scipy.spatial.distance import cdist

    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((3, 3, 1)),
            keras.layers.Flatten(),
            keras.layers.Dense(4, name="hidden"),
            keras.layers.Dense(2),
        ]
    )
    rng = np.random.default_rng(0)
    x = rng.random((25, 3, 3, 1), dtype=np.float32) * 0.5
    x_adv = np.clip(x + rng.normal(0, 0.2, x.shape), 0, 1).astype(np.float32)
    det = LIDDetector(model, layers=["hidden"], k=5, n_reference=10, random_state=0).fit(x, x_adv)
    lids_clean, lids_adv = det.minibatch_lids(x, x_adv)
    weights, bias = model.get_layer("hidden").get_weights()

    def mle_batch(data, batch, k):  # the reference code's function, in NumPy
        k = min(k, len(data) - 1)
        distances = np.sort(cdist(batch, data), axis=1)[:, 1 : k + 1]
        return -k / np.sum(np.log(distances / distances[:, -1:]), axis=1)

    hidden = x.reshape(25, -1).astype(np.float64) @ weights + bias
    hidden_adv = x_adv.reshape(25, -1).astype(np.float64) @ weights + bias
    for start in range(0, 25, 10):  # minibatches of 10, 10 and 5 (k lowered to 4 in the last)
        rows = slice(start, start + 10)
        np.testing.assert_allclose(lids_clean[rows, 0], mle_batch(hidden[rows], hidden[rows], 5), rtol=1e-4)
        np.testing.assert_allclose(lids_adv[rows, 0], mle_batch(hidden[rows], hidden_adv[rows], 5), rtol=1e-4)
    with pytest.raises(ValueError, match="one adversarial image per clean image"):
        det.minibatch_lids(x, x_adv[:3])


def test_median_smoothing_matches_scipy_and_a_hand_computation():
    from scipy import ndimage

    from saliency_detect.detector import median_smoothing

    # By hand, a 3 x 3 image, 2 x 2 window (the pixel, the one above, left and above-left;
    # edges reflected), the upper of the two middle values:
    image = np.array([[1, 9, 2], [8, 3, 7], [4, 6, 5]], np.float32)
    expected = np.array([[1, 9, 9], [8, 8, 7], [8, 6, 6]], np.float32)
    got = median_smoothing(tf.constant(image[None, :, :, None]), 2).numpy()[0, :, :, 0]
    np.testing.assert_array_equal(got, expected)
    rng = np.random.default_rng(0)
    x = rng.random((3, 9, 8, 2)).astype(np.float32)
    for size in (2, 3):
        reference = ndimage.median_filter(x, size=(1, size, size, 1), mode="reflect")
        np.testing.assert_array_equal(median_smoothing(tf.constant(x), size).numpy(), reference)


def test_bit_depth_reduction_matches_the_paper():
    from saliency_detect.detector import bit_depth

    x = np.array([0.0, 0.2, 0.49, 0.51, 1.0], np.float32).reshape(1, 1, 5, 1)
    np.testing.assert_array_equal(bit_depth(tf.constant(x), 1).numpy().ravel(), [0, 0, 0, 1, 1])
    # 5 bits: 31 levels; in another clip range the same levels, mapped back.
    np.testing.assert_allclose(bit_depth(tf.constant(x), 5).numpy().ravel(), np.round(x.ravel() * 31) / 31)
    shifted = bit_depth(tf.constant(x * 2 - 1), 1, (-1.0, 1.0)).numpy().ravel()
    np.testing.assert_array_equal(shifted, [-1, -1, -1, 1, 1])


def test_feature_squeezing_score_is_the_largest_l1_softmax_change(trained_mnist_f, data):
    from saliency_detect.detector import bit_depth, median_smoothing

    x = data["x_test"][:16]
    det = FeatureSqueezingDetector(trained_mnist_f).fit(data["x_train"][:200], data["x_train_adv"][:200])
    assert det.squeezers_ == (("bit_depth", 1), ("median", 2))
    p = tf.nn.softmax(trained_mnist_f(x)).numpy()
    by_hand = np.max(
        [
            np.abs(p - tf.nn.softmax(trained_mnist_f(bit_depth(tf.constant(x), 1))).numpy()).sum(1),
            np.abs(p - tf.nn.softmax(trained_mnist_f(median_smoothing(tf.constant(x), 2))).numpy()).sum(1),
        ],
        axis=0,
    )
    np.testing.assert_allclose(det.decision_function(x), by_hand, rtol=1e-4, atol=1e-6)
    # The threshold flags 5% of the clean fit images (the paper's rule).
    flagged = det.predict(data["x_train"][:200]).mean()
    assert flagged <= 0.05 and det.threshold_source_ == "clean fit images at FPR 0.05"
    # Fitting on clean images alone gives the same threshold: the adversarial ones are not used.
    alone = FeatureSqueezingDetector(trained_mnist_f).fit(data["x_train"][:200])
    assert alone.threshold_ == det.threshold_


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"squeezers": [("blur", 2)]}, "Unknown squeezer 'blur'"),
        ({"squeezers": [("bit_depth", 0)]}, r"bits must be an integer in \[1, 16\]"),
        ({"squeezers": [("median", 1)]}, r"window size must be an integer in \[2, 16\]"),
        ({"squeezers": []}, "non-empty list"),
        ({"fpr": 1.0}, r"`fpr` must be a rate in \(0, 1\)"),
    ],
)
def test_feature_squeezing_refuses_bad_parameters(trained_mnist_f, data, params, message):
    with pytest.raises(ValueError, match=message):
        FeatureSqueezingDetector(trained_mnist_f, **params).fit(data["x_train"][:40])
    with pytest.raises(ValueError, match="at least 20 clean images"):
        FeatureSqueezingDetector(trained_mnist_f).fit(data["x_train"][:5])


def _small_classifier():
    import keras

    keras.utils.set_random_seed(3)
    inputs = keras.Input((6, 6, 1))
    h = keras.layers.Conv2D(3, 3, activation="relu", name="c1")(inputs)
    h = keras.layers.GlobalAveragePooling2D()(h)
    h = keras.layers.Dense(4, activation="relu", name="fc")(h)
    return keras.Model(inputs, keras.layers.Dense(3, name="logits")(h))


def test_mahalanobis_confidence_matches_a_hand_computation():
    import keras

    f = _small_classifier()
    rng = np.random.default_rng(0)
    x_clean = rng.random((40, 6, 6, 1), dtype=np.float32)
    x_adv = np.clip(x_clean + rng.normal(0, 0.3, x_clean.shape), 0, 1).astype(np.float32)
    det = MahalanobisDetector(f, random_state=7).fit(x_clean, x_adv)
    assert det.layers_ == ["c1", "fc"]  # every conv and dense layer but the logits
    # By hand: the same half of the clean images (the detector's seeded split) fits the Gaussians.
    rows = np.sort(np.random.default_rng(7).permutation(np.arange(40))[:20])
    features = keras.Model(f.inputs[0], [f.get_layer("c1").output, f.get_layer("fc").output, f.output])
    c1, fc, logits = (np.asarray(o, np.float64) for o in features(x_clean[rows]))
    predicted = logits.argmax(1)
    probe = x_adv[:6]
    p_c1, p_fc, _ = (np.asarray(o, np.float64) for o in features(probe))
    expected = []
    for fit_h, probe_h in ((c1.mean(axis=(1, 2)), p_c1.mean(axis=(1, 2))), (fc, p_fc)):
        classes = np.unique(predicted)
        means = {c: fit_h[predicted == c].mean(0) for c in classes}
        centred = fit_h - np.stack([means[c] for c in predicted])
        precision = np.linalg.pinv(centred.T @ centred / len(centred))
        d = np.stack(
            [np.einsum("nc,cd,nd->n", probe_h - means[c], precision, probe_h - means[c]) for c in classes]
        )
        expected.append(-d.min(axis=0))
    np.testing.assert_allclose(det.confidences(probe), np.stack(expected, axis=1), rtol=2e-3, atol=1e-4)


def test_mahalanobis_preprocessing_raises_the_confidence(trained_mnist_f, data):
    plain = MahalanobisDetector(trained_mnist_f, layers=["fc1"], random_state=0)
    plain.fit(data["x_train"][:300], data["x_train_adv"][:300])
    nudged = MahalanobisDetector(trained_mnist_f, layers=["fc1"], noise_magnitude=0.002, random_state=0)
    nudged.fit(data["x_train"][:300], data["x_train_adv"][:300])
    np.testing.assert_allclose(nudged.means_[0], plain.means_[0])  # the Gaussians do not depend on it
    gain = nudged.confidences(data["x_test"][:50]) - plain.confidences(data["x_test"][:50])
    assert np.mean(gain > 0) > 0.9  # one signed step up the confidence's gradient


def test_mahalanobis_refuses_bad_parameters(trained_mnist_f, data):
    with pytest.raises(ValueError, match="must name layers of the classifier"):
        MahalanobisDetector(trained_mnist_f, layers=["conv9"]).fit(
            data["x_train"][:40], data["x_train_adv"][:40]
        )
    with pytest.raises(ValueError, match="noise_magnitude"):
        MahalanobisDetector(trained_mnist_f, noise_magnitude=-0.1).fit(
            data["x_train"][:40], data["x_train_adv"][:40]
        )
    with pytest.raises(ValueError, match="at least 4 clean images"):
        MahalanobisDetector(trained_mnist_f).fit(data["x_train"][:3], data["x_train_adv"][:3])
    with pytest.raises(NotFittedError):
        MahalanobisDetector(trained_mnist_f).confidences(data["x_test"][:2])


def test_lid_streams_activations_batch_by_batch(trained_mnist_f, monkeypatch):
    # Full-scale runs (120,000 MNIST images) ran out of memory holding every layer's
    # activations at once; LIDs are now computed per batch, and only the reference batch's
    # activations are kept.
    from saliency_detect.detector import LIDDetector

    rng = np.random.default_rng(0)
    x = rng.random((300, 28, 28, 1), dtype=np.float32) * 0.5
    det = LIDDetector(trained_mnist_f, batch_size=64, random_state=0)
    calls = []
    original = LIDDetector._activations

    def counted(self, images):
        calls.append(len(images))
        return original(self, images)

    monkeypatch.setattr(LIDDetector, "_activations", counted)
    det.fit(x, np.clip(x + 0.3, 0, 1))
    assert calls == [100]  # the reference batch only
    assert all(len(r) == 100 for r in det.reference_)
    lids = det._lids(x[:130])
    assert lids.shape == (130, len(det.layers_)) and np.all(np.isfinite(lids))
    # Batch size does not change the estimate (the reference's own images included).
    det.batch_size = 7
    np.testing.assert_allclose(det._lids(x[:130]), lids, rtol=1e-4)
    # Scoring again, and scoring after a refit, reuse one compiled step: the reference
    # batch is an input of the step, not a constant baked into it.
    from saliency_detect._prepared import prepare

    det.decision_function(x[:10])
    det.fit(x[::-1].copy(), np.clip(x[::-1] + 0.3, 0, 1))
    det.decision_function(x[:10])
    steps = [g for key, g in prepare(trained_mnist_f)._functions.items() if key[0].__name__ == "_lid_step"]
    assert len(steps) == 1 and steps[0].experimental_get_tracing_count() == 1


def test_dropout_split_recomposes_the_model(trained_mnist_f):
    import keras

    from saliency_detect._prepared import prepare
    from saliency_detect.detector._baselines import _dropout_split

    model = prepare(trained_mnist_f).model
    head, tail = _dropout_split(model)
    assert not any(isinstance(layer, keras.layers.Dropout) for layer in head.layers)
    x = np.random.default_rng(0).random((4, 28, 28, 1), dtype=np.float32)
    np.testing.assert_allclose(tail(head(x)), model(x), rtol=1e-5, atol=1e-5)
    plain = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    identity, whole = _dropout_split(plain)
    assert whole is plain and identity(np.ones((1, 3))).shape == (1, 3)
