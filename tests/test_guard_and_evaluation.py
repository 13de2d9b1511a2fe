"""GuardedClassifier, the baselines, detection reports, generalization matrices and the adaptive attack."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from sklearn.exceptions import NotFittedError

from saliency_detect.attacks import detector_aware, fgsm
from saliency_detect.detector import (
    FeatureSqueezingDetector,
    GuardedClassifier,
    KernelDensityDetector,
    LIDDetector,
    MahalanobisDetector,
    SaliencyDetector,
    SaliencyFeatures,
)
from saliency_detect.evaluation import (
    changed_images,
    detection_report,
    detection_table,
    generalization_matrix,
)
from saliency_detect.models import classifier_accuracy, load_model, mnist_net_f, save_model


@pytest.fixture(scope="module")
def data(trained_mnist_f, mnist_sample):
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


@pytest.fixture(scope="module")
def detector(trained_mnist_f, data):
    det = SaliencyDetector(
        trained_mnist_f, epochs=4, learning_rate=1e-3, cache_saliency=True, random_state=0, verbose=0
    )
    return det.fit(data["x_train"], data["x_train_adv"])


# ---------------------------------------------------------------- guard


def test_guard_predicts_the_classifier_labels_and_the_detector_verdicts(trained_mnist_f, detector, data):
    x = np.concatenate([data["x_test"][:50], data["x_test_adv"][:50]])
    out = GuardedClassifier(trained_mnist_f, detector, batch_size=32).predict(x)
    np.testing.assert_array_equal(out.labels, trained_mnist_f.predict(x, verbose=0).argmax(1))
    np.testing.assert_allclose(out.scores, detector.predict_proba(x)[:, 1], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(out.flags, detector.predict(x).astype(bool))
    assert out.flags[50:].mean() > 0.8 > out.flags[:50].mean()


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


# ---------------------------------------------------------------- baselines


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


# ---------------------------------------------------------------- reports


def test_detection_report_columns_are_consistent(trained_mnist_f, detector, data):
    report = detection_report(
        trained_mnist_f, detector, data["x_test"], data["y_test"], data["x_test_adv"], name="fgsm"
    )
    assert report.f_accuracy_clean == pytest.approx(
        classifier_accuracy(trained_mnist_f, data["x_test"], data["y_test"])
    )
    assert report.f_accuracy_adversarial == pytest.approx(
        classifier_accuracy(trained_mnist_f, data["x_test_adv"], data["y_test"])
    )
    assert report.d_accuracy_clean == pytest.approx(1 - detector.predict(data["x_test"]).mean())
    # FGSM leaves an image whose loss gradient is exactly 0 unchanged: not an adversarial
    # example, so not counted on D's adversarial side.
    changed = changed_images(data["x_test"], data["x_test_adv"])
    assert report.n_adversarial == changed.sum() and report.n_unchanged == (~changed).sum()
    assert (
        report.d_accuracy_adversarial
        == report.tpr
        == pytest.approx(detector.predict(data["x_test_adv"][changed]).mean())
    )
    clean_scores = detector.decision_function(data["x_test"])
    at_most_5 = np.quantile(clean_scores, 0.95, method="higher")  # flags at most 5% of clean images
    assert np.mean(clean_scores > at_most_5) <= 0.05
    assert report.tpr_at_5_fpr >= np.mean(detector.decision_function(data["x_test_adv"]) > at_most_5)
    assert report.to_dict()["n_clean"] == 400
    table = detection_table([report, report])
    assert table.count("| fgsm |") == 2 and "TPR @ 5% FPR" in report.to_markdown()


def test_detection_report_rejects_mismatched_sets(trained_mnist_f, detector, data):
    with pytest.raises(ValueError, match="one adversarial image per clean image"):
        detection_report(trained_mnist_f, detector, data["x_test"], data["y_test"], data["x_test_adv"][:10])
    with pytest.raises(ValueError, match="one label per image"):
        detection_report(trained_mnist_f, detector, data["x_test"], data["y_test"][:5], data["x_test_adv"])


def test_generalization_matrix_entries_match_reports(trained_mnist_f, detector, data, tmp_path):
    image_only = SaliencyDetector(
        trained_mnist_f, input_mode="image", epochs=2, learning_rate=1e-3, verbose=0
    )
    image_only.fit(data["x_train"], data["x_train_adv"])
    detectors = {"saliency": detector, "image": image_only}
    sets = {"fgsm 0.3": data["x_test_adv"], "fgsm 0.1": data["x_test_weak"]}
    matrix = generalization_matrix(detectors, data["x_test"], sets)
    assert matrix.values.shape == (2, 2) and matrix.test_labels == ("fgsm 0.3", "fgsm 0.1")
    for i, det in enumerate(detectors.values()):
        for j, x_adv in enumerate(sets.values()):
            r = detection_report(trained_mnist_f, det, data["x_test"], data["y_test"], x_adv)
            assert matrix.values[i, j] == pytest.approx((r.d_accuracy_clean + r.d_accuracy_adversarial) / 2)
    rates = generalization_matrix(detectors, data["x_test"], sets, metric="detection_rate")
    assert rates.values[0, 0] == pytest.approx(detector.predict(data["x_test_adv"]).mean())
    text = matrix.to_csv(tmp_path / "m.csv")
    assert (tmp_path / "m.csv").read_text() == text and text.splitlines()[0] == "trained_on,fgsm 0.3,fgsm 0.1"
    assert "| saliency |" in matrix.to_markdown()
    ax = matrix.plot()
    assert len(ax.texts) == 4 and [t.get_text() for t in ax.get_xticklabels()] == list(matrix.test_labels)
    with pytest.raises(ValueError, match="`metric` must be one of"):
        generalization_matrix(detectors, data["x_test"], sets, metric="f1")


# ---------------------------------------------------------------- adaptive attack


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


def test_detection_report_leaves_unchanged_pairs_out_of_the_adversarial_side(trained_mnist_f, detector, data):
    x, y, x_adv = data["x_test"][:40], data["y_test"][:40], data["x_test_adv"][:40].copy()
    x_adv[:10] = x[:10]  # the attack "returned" ten clean images as they were
    report = detection_report(trained_mnist_f, detector, x, y, x_adv)
    assert report.n_unchanged == 10 and report.n_adversarial == 30 and report.n_clean == 40
    assert report.tpr == pytest.approx(detector.predict(x_adv[10:]).mean())
    # f's accuracy under attack still counts every image.
    assert report.f_accuracy_adversarial == pytest.approx(classifier_accuracy(trained_mnist_f, x_adv, y))
    with pytest.raises(ValueError, match="the attack changed nothing"):
        detection_report(trained_mnist_f, detector, x, y, x.copy())


def test_fit_warns_about_pairs_the_attack_left_unchanged(trained_mnist_f, data):
    x, x_adv = data["x_train"][:64], data["x_train_adv"][:64].copy()
    x_adv[:5] = x[:5]
    with pytest.warns(UserWarning, match="5 of the 64 images of `x_adv` equal their clean image"):
        SaliencyDetector(trained_mnist_f, epochs=1, verbose=0).fit(x, x_adv)


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


def test_changed_images_needs_paired_sets():
    with pytest.raises(
        ValueError, match=r"pair one image with each clean image: expected shape \(3, 2, 2, 1\)"
    ):
        changed_images(np.zeros((3, 2, 2, 1)), np.zeros((2, 2, 2, 1)))
