"""One contract, checked over every detector (as scikit-learn's `check_estimator` does).

Every detector of `saliency_detect.detector` must behave the same way to the code around
it (reports, the guard, the experiments): parameters stored as given, `NotFittedError`
before `fit`, `fit` returning `self`, scores, probabilities and verdicts that agree with
one another and with `threshold_`, a working `calibrate`, clear errors for bad images, and
scikit-learn's `clone`.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.model_selection import cross_val_score

from saliency_detect.detector import (
    FeatureSqueezingDetector,
    KernelDensityDetector,
    LIDDetector,
    MahalanobisDetector,
    SaliencyDetector,
    stack_pairs,
)
from saliency_detect.models import mnist_net_f

#: Each detector's class and the parameters the suite builds it with (small and fast).
DETECTORS = {
    "saliency": (SaliencyDetector, {"epochs": 1, "verbose": 0, "random_state": 0}),
    "image_only": (
        SaliencyDetector,
        {"input_mode": "image", "recipe": "paper", "epochs": 1, "verbose": 0, "random_state": 0},
    ),
    "kernel_density": (KernelDensityDetector, {"mc_samples": 4, "random_state": 0}),
    "lid": (LIDDetector, {"k": 5, "n_reference": 20, "random_state": 0}),
    "mahalanobis": (MahalanobisDetector, {"random_state": 0}),
    "feature_squeezing": (FeatureSqueezingDetector, {"fpr": 0.1}),
}


def make(name, classifier):
    cls, params = DETECTORS[name]
    return cls(classifier, **params)


@pytest.fixture(scope="module")
def classifier():
    keras.utils.set_random_seed(0)
    return mnist_net_f()


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    clean = (rng.random((64, 28, 28, 1)) * 0.5).astype(np.float32)
    adversarial = np.clip(clean + 0.4, 0.0, 1.0).astype(np.float32)
    return clean, adversarial


@pytest.fixture(scope="module", params=sorted(DETECTORS))
def fitted(request, classifier, images):
    detector = make(request.param, classifier)
    return request.param, detector, detector.fit(*images)


@pytest.mark.parametrize("name", sorted(DETECTORS))
def test_parameters_are_stored_as_given_and_set_params_returns_self(classifier, name):
    cls, given = DETECTORS[name]
    odd = {"batch_size": -7}  # stored as given: checked in `fit`, not in `__init__`
    detector = cls(classifier, **given, **odd)
    params = detector.get_params()
    assert params["classifier"] is classifier
    for key, value in {**given, **odd}.items():
        assert params[key] == value, key
    with pytest.raises(ValueError, match="batch_size"):
        detector.fit(np.zeros((32, 28, 28, 1), np.float32), np.full((32, 28, 28, 1), 0.5, np.float32))
    assert detector.set_params(batch_size=32) is detector and detector.get_params()["batch_size"] == 32


@pytest.mark.parametrize("name", sorted(DETECTORS))
def test_every_method_refuses_an_unfitted_detector(classifier, images, name):
    detector = make(name, classifier)
    x = images[0][:2]
    for call in (
        detector.decision_function,
        detector.predict,
        detector.predict_proba,
        lambda z: detector.score(z, [0, 1]),
        lambda z: detector.calibrate(z),
    ):
        with pytest.raises(NotFittedError):
            call(x)


def test_fit_returns_self_with_fitted_state_ending_in_underscore(fitted):
    name, detector, returned = fitted
    assert returned is detector, name
    assert isinstance(detector.threshold_, float) and np.isfinite(detector.threshold_), name
    np.testing.assert_array_equal(detector.classes_, [0, 1])
    assert isinstance(detector.threshold_source_, str) and detector.threshold_source_, name


def test_scores_probabilities_and_verdicts_agree(fitted, images):
    name, detector, _ = fitted
    x = np.concatenate([images[0][:10], images[1][:10]])
    scores = detector.decision_function(x)
    assert scores.shape == (20,) and np.isfinite(scores).all(), name
    np.testing.assert_array_equal(detector.predict(x), (scores > detector.threshold_).astype(int))
    proba = detector.predict_proba(x)
    assert proba.shape == (20, 2) and np.all((proba >= 0) & (proba <= 1)), name
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    # Probabilities rank images as the scores do.
    order = np.argsort(scores, kind="stable")
    assert np.all(np.diff(proba[order, 1]) >= -1e-12), name
    labels = np.r_[np.zeros(10), np.ones(10)]
    assert detector.score(x, labels) == pytest.approx(np.mean(detector.predict(x) == labels))


def test_the_same_images_get_the_same_scores(fitted, images):
    """A score that changes from call to call (e.g. unseeded Monte-Carlo dropout) is silently wrong."""
    name, detector, _ = fitted
    x = images[1][:12]
    np.testing.assert_array_equal(detector.decision_function(x), detector.decision_function(x), err_msg=name)


def test_calibrate_sets_the_stated_false_positive_rate_and_returns_self(fitted, images):
    name, detector, _ = fitted
    before = (detector.threshold_, detector.threshold_source_)
    try:
        assert detector.calibrate(images[0], fpr=0.1) is detector
        assert detector.predict(images[0]).mean() <= 0.1, name
        assert detector.threshold_source_ == "calibrated at FPR 0.1"
    finally:
        detector.threshold_, detector.threshold_source_ = before


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (np.zeros((2, 28, 28), np.float32), "rank 4"),
        (np.zeros((2, 28, 28, 3), np.float32), r"\(N, 28, 28, 1\)"),
        (np.full((2, 28, 28, 1), np.nan, np.float32), "NaN"),
        (np.full((2, 28, 28, 1), 200.0, np.float32), "clip range"),
        (np.zeros((2, 28, 28, 1), np.uint8), "floating-point"),
        (np.zeros((0, 28, 28, 1), np.float32), "empty"),
    ],
    ids=["rank", "channels", "nan", "range", "uint8", "empty"],
)
def test_bad_images_get_errors_that_say_what_was_expected(fitted, bad, message):
    _, detector, _ = fitted
    with pytest.raises(ValueError, match=message):
        detector.decision_function(bad)


def test_clone_gives_an_unfitted_detector_with_the_same_parameters(fitted):
    name, detector, _ = fitted
    copy = clone(detector)
    assert type(copy) is type(detector), name
    params, copied = detector.get_params(), copy.get_params()
    assert set(params) == set(copied)
    for key, value in params.items():
        if key != "classifier":  # scikit-learn deep-copies parameters that are not estimators
            assert copied[key] == value, (name, key)
    with pytest.raises(NotFittedError):
        copy.decision_function(np.zeros((1, 28, 28, 1), np.float32))


@pytest.mark.parametrize("name", sorted(DETECTORS))
def test_the_pairs_form_is_the_labelled_form(classifier, images, name):
    # fit(x_clean, x_adv) is fit(*stack_pairs(x_clean, x_adv)): the same scores after either.
    x_eval = np.concatenate([images[0][:8], images[1][:8]])
    by_pairs = make(name, classifier).fit(*images).decision_function(x_eval)
    by_labels = make(name, classifier).fit(*stack_pairs(*images)).decision_function(x_eval)
    np.testing.assert_allclose(by_pairs, by_labels, rtol=1e-5, atol=1e-5)


def test_stack_pairs_labels_and_checks_its_batches(images):
    X, y = stack_pairs(*images)
    assert X.shape == (128, 28, 28, 1) and X.dtype == np.float32 and y.dtype == np.int64
    assert y.tolist() == [0] * 64 + [1] * 64 and np.array_equal(X[64:], images[1])
    with pytest.raises(ValueError, match="x_adv"):
        stack_pairs(images[0], images[1][..., :0])
    with pytest.warns(UserWarning, match="2 of the 64 images of `x_adv` equal their clean image"):
        stack_pairs(images[0], np.concatenate([images[0][:2], images[1][2:]]))


def test_scikit_learn_tools_take_every_detector(classifier, images):
    # The labelled form is what scikit-learn's model selection slices and refits.
    X, y = stack_pairs(*images)
    for name in sorted(DETECTORS):
        scores = cross_val_score(make(name, classifier), X, y, cv=2)
        assert scores.shape == (2,) and np.all((scores >= 0) & (scores <= 1)), name


def test_decision_tensor_is_decision_function_inside_the_graph(fitted, images):
    """The score an adaptive attack differentiates is the score the detector reports."""
    import tensorflow as tf

    from saliency_detect.detector._baselines import _seeded_dropout

    name, detector, _ = fitted
    x = np.concatenate([images[0][:6], images[1][:6]])
    expected = detector.decision_function(x)
    # Monte-Carlo dropout draws the masks `decision_function` seeds; seed them the same way.
    with _seeded_dropout(classifier_of(detector), getattr(detector, "random_state", None)):
        received = detector.decision_tensor(tf.constant(x)).numpy()
    np.testing.assert_allclose(received, expected, rtol=1e-4, atol=1e-4, err_msg=name)


def test_decision_tensor_has_a_gradient_for_every_detector(fitted, images):
    """Every score reaches the images backward (BPDA where a step has no gradient of its own)."""
    import tensorflow as tf

    name, detector, _ = fitted
    x = tf.constant(images[1][:4])
    with tf.GradientTape() as tape:
        tape.watch(x)
        score = detector.decision_tensor(x)
    grad = tape.gradient(score, x)
    assert grad is not None and np.isfinite(grad.numpy()).all(), name
    assert np.abs(grad.numpy()).sum() > 0, name


def test_joint_pgd_with_zero_detector_weight_is_pgd(fitted, images):
    from saliency_detect.attacks import joint_pgd, pgd

    name, detector, _ = fitted
    f, x = classifier_of(detector), images[0][:8]
    for loss in ("margin", "cross_entropy"):
        plain = pgd(f, x, eps=0.1, nb_iter=3, random_state=0, loss=loss)
        joint = joint_pgd(
            f, x, eps=0.1, nb_iter=3, random_state=0, loss=loss, confidence=np.inf,
            detector=detector, detector_weight=0.0, mode="sum",
        )  # fmt: skip
        np.testing.assert_array_equal(joint, plain, err_msg=f"{name}, {loss}")


def classifier_of(detector):
    return detector.get_params()["classifier"]
