"""SaliencyDetector: the paper's accuracy on real MNIST, the estimator contract, persistence, bad input."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
import tensorflow as tf
from sklearn.exceptions import NotFittedError

from saliency_detect.attacks import fgsm
from saliency_detect.detector import SaliencyDetector, SaliencyFeatures
from saliency_detect.models import mnist_net_f
from saliency_detect.saliency import gradient


@pytest.fixture(scope="module")
def real_mnist(shared_data):
    from saliency_detect.data import load_dataset

    return load_dataset("mnist", data_dir=shared_data)


@pytest.fixture(scope="module")
def fgsm_sets(trained_mnist_f, real_mnist):
    """FGSM at ε = 0.3 (f's accuracy falls below 30%, the paper's protocol) on real MNIST.

    Training images are 10,000-14,000 of the MNIST training set (f saw the first 10,000);
    test images 2,000-4,000 of the test set (mnist-sample holds the first 2,000).
    """
    f = trained_mnist_f
    x_train = real_mnist.x_train[10_000:14_000]
    x_test, y_test = real_mnist.x_test[2_000:4_000], real_mnist.y_test[2_000:4_000]
    return {
        "x_train": x_train,
        "x_train_adv": fgsm(f, x_train, eps=0.3),
        "x_test": x_test,
        "y_test": y_test,
        "x_test_adv": fgsm(f, x_test, eps=0.3),
    }


@pytest.fixture(scope="module")
def fitted(trained_mnist_f, fgsm_sets):
    """The paper's detector (image+saliency, Adam 1e-4, 10 epochs) fitted on 4,000 + 4,000 images."""
    detector = SaliencyDetector(trained_mnist_f, cache_saliency=True, random_state=0, verbose=0)
    return detector.fit(fgsm_sets["x_train"], fgsm_sets["x_train_adv"])


@pytest.fixture(scope="module")
def tiny(trained_mnist_f, fgsm_sets):
    """A detector fitted in seconds, for contract tests that do not measure accuracy."""
    x, x_adv = fgsm_sets["x_train"][:256], fgsm_sets["x_train_adv"][:256]
    return SaliencyDetector(trained_mnist_f, epochs=1, random_state=0, verbose=0).fit(x, x_adv)


def test_paper_accuracy_on_real_mnist_fgsm(trained_mnist_f, fitted, fgsm_sets):
    # Paper: 0.99-1.00 on MNIST; the issue asks >= 0.98 on clean and on adversarial images.
    accuracy = trained_mnist_f.predict(fgsm_sets["x_test_adv"], verbose=0).argmax(1) == fgsm_sets["y_test"]
    assert accuracy.mean() < 0.30  # the attack is as strong as the protocol asks
    n = len(fgsm_sets["x_test"])
    assert fitted.score(fgsm_sets["x_test"], np.zeros(n)) >= 0.98
    assert fitted.score(fgsm_sets["x_test_adv"], np.ones(n)) >= 0.98


def test_fit_returns_self_and_sets_fitted_state(fitted, trained_mnist_f):
    assert fitted.detector_.input_shape == (None, 28, 28, 2)
    assert fitted.threshold_ == 0.0 and fitted.saliency_scale_ > 0
    assert fitted.input_shape_ == (28, 28, 1)
    assert len(fitted.history_["loss"]) == 10 and fitted.history_["loss"][-1] < fitted.history_["loss"][0]
    np.testing.assert_array_equal(fitted.classes_, [0, 1])
    from saliency_detect.models import model_fingerprint

    assert fitted.classifier_fingerprint_ == model_fingerprint(trained_mnist_f)


def test_fit_leaves_the_classifier_untouched(trained_mnist_f, fgsm_sets):
    before = [w.copy() for w in trained_mnist_f.get_weights()]
    flags = [layer.trainable for layer in trained_mnist_f.layers]
    x, x_adv = fgsm_sets["x_train"][:64], fgsm_sets["x_train_adv"][:64]
    SaliencyDetector(trained_mnist_f, epochs=1, learning_rate=0.1, verbose=0).fit(x, x_adv)
    for old, new in zip(before, trained_mnist_f.get_weights(), strict=True):
        np.testing.assert_array_equal(old, new)
    assert [layer.trainable for layer in trained_mnist_f.layers] == flags
    assert all(w.trainable for w in trained_mnist_f.trainable_weights) and trained_mnist_f.trainable_weights


def test_detector_input_is_the_image_and_the_scaled_gradient(trained_mnist_f, fitted, fgsm_sets):
    x = fgsm_sets["x_test"][:8]
    layer = SaliencyFeatures(trained_mnist_f, scale=fitted.saliency_scale_)
    stacked = layer(tf.constant(x)).numpy()
    np.testing.assert_array_equal(stacked[..., :1], x)
    expected = gradient(trained_mnist_f, x) * fitted.saliency_scale_
    np.testing.assert_allclose(stacked[..., 1:], expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(("mode", "channels"), [("image", 1), ("saliency", 1), ("image+saliency", 2)])
def test_input_mode_is_one_argument(trained_mnist_f, fgsm_sets, mode, channels):
    x, x_adv = fgsm_sets["x_train"][:64], fgsm_sets["x_train_adv"][:64]
    det = SaliencyDetector(trained_mnist_f, input_mode=mode, epochs=1, verbose=0, random_state=0).fit(
        x, x_adv
    )
    assert det.detector_.input_shape == (None, 28, 28, channels)
    assert det.predict_proba(x[:4]).shape == (4, 2)


def test_both_fit_forms_and_cached_saliency_agree(trained_mnist_f, fgsm_sets):
    x, x_adv = fgsm_sets["x_train"][:128], fgsm_sets["x_train_adv"][:128]
    probe = fgsm_sets["x_test"][:32]
    kwargs = {"epochs": 2, "verbose": 0, "random_state": 3}
    a = SaliencyDetector(trained_mnist_f, **kwargs).fit(x, x_adv)
    labels = np.r_[np.zeros(128), np.ones(128)].astype(int)
    b = SaliencyDetector(trained_mnist_f, **kwargs).fit(np.concatenate([x, x_adv]), labels)
    np.testing.assert_allclose(a.decision_function(probe), b.decision_function(probe), rtol=1e-5, atol=1e-5)
    c = SaliencyDetector(trained_mnist_f, cache_saliency=True, **kwargs).fit(x, x_adv)
    np.testing.assert_allclose(a.decision_function(probe), c.decision_function(probe), rtol=1e-3, atol=1e-3)


def test_fit_and_score_a_tf_data_pipeline(trained_mnist_f, fgsm_sets):
    x, x_adv = fgsm_sets["x_train"][:128], fgsm_sets["x_train_adv"][:128]
    images = np.concatenate([x, x_adv])
    labels = np.r_[np.zeros(128), np.ones(128)].astype("float32")
    data = tf.data.Dataset.from_tensor_slices((images, labels)).shuffle(256, seed=0).batch(32)
    det = SaliencyDetector(trained_mnist_f, epochs=2, verbose=0, random_state=0).fit(data)
    assert len(det.history_["loss"]) == 2
    probe = fgsm_sets["x_test"][:50]
    from_arrays = det.decision_function(probe)
    from_dataset = det.decision_function(tf.data.Dataset.from_tensor_slices(probe).batch(16))
    np.testing.assert_allclose(from_arrays, from_dataset, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="`y` must be None"):
        det.fit(data, labels)


def test_a_dataset_is_checked_batch_by_batch_as_arrays_are(tiny, fgsm_sets):
    probe = fgsm_sets["x_test"][:20].copy()
    labelled = tf.data.Dataset.from_tensor_slices((probe, np.zeros(20))).batch(8)
    np.testing.assert_allclose(tiny.decision_function(labelled), tiny.decision_function(probe), rtol=1e-5)
    bad = probe.copy()
    bad[12, 3, 3] = np.nan  # in the second batch of 8
    with pytest.raises(ValueError, match=r"batch 1 of the dataset.*NaN"):
        tiny.decision_function(tf.data.Dataset.from_tensor_slices(bad).batch(8))
    with pytest.raises(ValueError, match=r"batch 0 of the dataset.*clip range \[0.0, 1.0\]"):
        tiny.decision_function(tf.data.Dataset.from_tensor_slices(probe * 255).batch(8))
    with pytest.raises(ValueError, match=r"expected images of shape \(N, 28, 28, 1\)"):
        tiny.decision_function(tf.data.Dataset.from_tensor_slices(probe[:, :20, :20]).batch(8))
    uint8 = tf.data.Dataset.from_tensor_slices((probe * 255).astype(np.uint8)).batch(8)
    with pytest.raises(ValueError, match="floating-point"):
        tiny.decision_function(uint8)
    with pytest.raises(ValueError, match="empty"):
        tiny.decision_function(tf.data.Dataset.from_tensor_slices(probe).batch(8).take(0))


def test_predict_proba_predict_and_decision_function_agree(tiny, fgsm_sets):
    x = np.concatenate([fgsm_sets["x_test"][:20], fgsm_sets["x_test_adv"][:20]])
    scores = tiny.decision_function(x)
    proba = tiny.predict_proba(x)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(proba[:, 1], 1 / (1 + np.exp(-scores.astype(np.float64))), rtol=1e-5)
    np.testing.assert_array_equal(tiny.predict(x), (scores > tiny.threshold_).astype(int))
    labels = np.r_[np.zeros(20), np.ones(20)].astype(int)
    assert tiny.score(x, labels) == pytest.approx(np.mean(tiny.predict(x) == labels))


def test_calibrate_reaches_the_requested_false_positive_rate(fitted, real_mnist):
    # Calibrate on one set of clean images, measure on another.
    calibration, held_out = real_mnist.x_test[4_000:6_000], real_mnist.x_test[6_000:8_000]
    for fpr in (0.05, 0.10):
        fitted.calibrate(calibration, fpr=fpr)
        measured = fitted.predict(held_out).mean()
        assert abs(measured - fpr) <= 0.02, (fpr, measured)
    fitted.threshold_ = 0.0


def test_get_params_and_set_params(trained_mnist_f):
    det = SaliencyDetector(trained_mnist_f, epochs=3, saliency="guided_backprop")
    params = det.get_params()
    assert params["epochs"] == 3 and params["saliency"] == "guided_backprop"
    assert params["classifier"] is trained_mnist_f
    assert det.set_params(epochs=5, input_mode="image") is det
    assert (det.epochs, det.input_mode) == (5, "image")
    with pytest.raises(ValueError, match="Invalid parameter"):
        det.set_params(epoch=5)


def test_unfitted_detector_raises_a_clear_error(trained_mnist_f):
    det = SaliencyDetector(trained_mnist_f)
    x = np.zeros((2, 28, 28, 1), np.float32)
    for call in (det.predict, det.predict_proba, det.decision_function, lambda z: det.score(z, [0, 1])):
        with pytest.raises(NotFittedError, match="not fitted"):
            call(x)
    with pytest.raises(NotFittedError):
        det.calibrate(x)
    with pytest.raises(NotFittedError):
        det.save("unused")


def test_guided_backprop_saliency_fits(trained_mnist_f, fgsm_sets):
    x, x_adv = fgsm_sets["x_train"][:64], fgsm_sets["x_train_adv"][:64]
    det = SaliencyDetector(trained_mnist_f, saliency="guided_backprop", epochs=1, verbose=0).fit(x, x_adv)
    assert np.isfinite(det.decision_function(x[:4])).all()


# ---------------------------------------------------------------- persistence


def test_save_load_gives_identical_scores(tiny, trained_mnist_f, fgsm_sets, tmp_path):
    tiny.calibrate(fgsm_sets["x_test"][:200], fpr=0.1)
    path = tiny.save(tmp_path / "det")
    probe = fgsm_sets["x_test_adv"][:64]
    for loaded in (SaliencyDetector.load(path), SaliencyDetector.load(path, trained_mnist_f)):
        np.testing.assert_array_equal(loaded.decision_function(probe), tiny.decision_function(probe))
        assert loaded.threshold_ == tiny.threshold_ and loaded.get_params()["epochs"] == 1
    # Saving again replaces the folder; nothing temporary is left beside it.
    tiny.save(path, include_classifier=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["det"]
    with pytest.raises(FileNotFoundError, match="without its classifier"):
        SaliencyDetector.load(path)
    tiny.threshold_ = 0.0


def test_load_refuses_another_classifier(tiny, tmp_path):
    path = tiny.save(tmp_path / "det", include_classifier=False)
    other = mnist_net_f()
    with pytest.raises(ValueError, match="not the one the detector"):
        SaliencyDetector.load(path, other)
    assert SaliencyDetector.load(path, other, check_fingerprint=False).classifier is other


def test_load_refuses_tampered_or_corrupt_files(tiny, tmp_path):
    path = tiny.save(tmp_path / "det")
    data = bytearray((path / "detector.keras").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (path / "detector.keras").write_bytes(bytes(data))
    with pytest.raises(ValueError, match="modified"):
        SaliencyDetector.load(path)
    (path / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="not a valid SaliencyDetector configuration"):
        SaliencyDetector.load(path)
    config = tiny.save(tmp_path / "det2") / "config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "format": "something-else"}))
    with pytest.raises(ValueError, match="format"):
        SaliencyDetector.load(tmp_path / "det2")
    with pytest.raises(FileNotFoundError, match="No saved SaliencyDetector"):
        SaliencyDetector.load(tmp_path / "missing")


def test_a_failed_save_leaves_nothing_behind(tiny, tmp_path, monkeypatch):
    import saliency_detect.detector._detector as module

    def broken(model, path):
        raise OSError("disk full")

    monkeypatch.setattr(module, "save_model", broken)
    with pytest.raises(OSError, match="disk full"):
        tiny.save(tmp_path / "det")
    assert list(tmp_path.iterdir()) == []


def test_save_refuses_to_replace_an_unrelated_folder(tiny, tmp_path):
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "cat.jpg").write_bytes(b"x")
    with pytest.raises(FileExistsError, match="not a saved SaliencyDetector"):
        tiny.save(tmp_path / "photos")
    assert (tmp_path / "photos" / "cat.jpg").is_file()


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("params", "error", "match"),
    [
        ({"saliency": "grad_cam"}, ValueError, "`saliency` must be one of"),
        ({"input_mode": "both"}, ValueError, "`input_mode` must be one of"),
        ({"epochs": 0}, ValueError, "`epochs` must be a positive integer"),
        ({"learning_rate": -1.0}, ValueError, "`learning_rate` must be a positive number"),
        ({"validation_split": 1.0}, ValueError, r"`validation_split` must be in \[0, 1\)"),
        ({"detector": "mnist_net_d"}, TypeError, "`detector` must be a Keras model"),
        ({"cache_saliency": "yes"}, ValueError, "`cache_saliency` must be True or False"),
    ],
)
def test_invalid_parameters_are_reported_by_fit(trained_mnist_f, params, error, match):
    x = np.zeros((4, 28, 28, 1), np.float32)
    det = SaliencyDetector(trained_mnist_f, **params)  # stored as given, checked in fit
    with pytest.raises(error, match=match):
        det.fit(x, x + 0.5)


def test_classifier_must_be_a_keras_model():
    with pytest.raises(TypeError, match="`classifier` must be a Keras model"):
        SaliencyDetector("f.keras").fit(
            np.zeros((2, 28, 28, 1), np.float32), np.ones((2, 28, 28, 1), np.float32)
        )


def test_a_user_detector_must_fit_the_input(trained_mnist_f):
    x = np.zeros((4, 28, 28, 1), np.float32)
    wrong_input = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Flatten(), keras.layers.Dense(1)])
    with pytest.raises(ValueError, match=r"must take the detector's input of shape \(28, 28, 2\)"):
        SaliencyDetector(trained_mnist_f, detector=wrong_input).fit(x, x + 0.5)
    two_outputs = keras.Sequential([keras.Input((28, 28, 2)), keras.layers.Flatten(), keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="must output one logit"):
        SaliencyDetector(trained_mnist_f, detector=two_outputs).fit(x, x + 0.5)


def test_a_user_detector_is_cloned_not_trained_in_place(trained_mnist_f):
    user = keras.Sequential([keras.Input((28, 28, 2)), keras.layers.Flatten(), keras.layers.Dense(1)])
    before = [w.copy() for w in user.get_weights()]
    x = np.random.default_rng(0).random((32, 28, 28, 1), dtype=np.float32) * 0.5
    det = SaliencyDetector(trained_mnist_f, detector=user, epochs=1, verbose=0).fit(x, x + 0.5)
    assert det.detector_ is not user
    for old, new in zip(before, user.get_weights(), strict=True):
        np.testing.assert_array_equal(old, new)


@pytest.mark.parametrize(
    ("x_adv", "match"),
    [
        (np.zeros((4, 28, 28, 3), np.float32), "does not match the model's input"),
        (np.zeros((4, 28, 28), np.float32), "0/1 label per image"),
        (np.full((4, 28, 28, 1), 255, np.uint8), "floating-point"),
        (np.full((4, 28, 28, 1), np.nan, np.float32), "NaN"),
        (np.full((4, 28, 28, 1), 2.0, np.float32), "clip range"),
        (np.zeros((0, 28, 28, 1), np.float32), "empty batch"),
        (np.array([0, 1, 2, 1]), "0 \\(clean\\) or 1"),
        (np.array([1, 1, 1, 1]), "both classes"),
        (None, "needs the adversarial examples"),
    ],
)
def test_bad_fit_data_gets_a_clear_error(trained_mnist_f, x_adv, match):
    x = np.zeros((4, 28, 28, 1), np.float32)
    with pytest.raises(ValueError, match=match):
        SaliencyDetector(trained_mnist_f, epochs=1, verbose=0).fit(x, x_adv)


@pytest.mark.parametrize(
    ("x", "match"),
    [
        (np.zeros((2, 32, 32, 3), np.float32), "does not match the model's input"),
        (np.zeros((2, 28, 28), np.float32), "rank 4"),
        (np.full((2, 28, 28, 1), np.inf, np.float32), "NaN or infinite"),
        (np.zeros((0, 28, 28, 1), np.float32), "empty batch"),
    ],
)
def test_bad_images_to_score_get_a_clear_error(tiny, x, match):
    with pytest.raises(ValueError, match=match):
        tiny.predict_proba(x)


def test_wrong_labels_to_score_get_a_clear_error(tiny):
    with pytest.raises(ValueError, match="one 0/1 label per image"):
        tiny.score(np.zeros((3, 28, 28, 1), np.float32), [0, 1])
