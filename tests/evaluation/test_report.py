"""`detection_report`, `generalization_matrix` and `changed_images`."""

from __future__ import annotations

import numpy as np
import pytest

from saliency_detect.detector import (
    SaliencyDetector,
)
from saliency_detect.evaluation import (
    changed_images,
    detection_report,
    detection_table,
    generalization_matrix,
)
from saliency_detect.models import classifier_accuracy


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


def test_changed_images_needs_paired_sets():
    with pytest.raises(
        ValueError, match=r"pair one image with each clean image: expected shape \(3, 2, 2, 1\)"
    ):
        changed_images(np.zeros((3, 2, 2, 1)), np.zeros((2, 2, 2, 1)))


def test_reports_and_matrices_read_back_from_their_dicts():
    import json

    from saliency_detect.evaluation import DetectionReport, GeneralizationMatrix

    report = DetectionReport(
        "fgsm", 0.99, 0.1, 0.98, 0.97, 0.97, 0.02, 0.995, 0.96, 100, 90, 0.25, tpr_at_1_fpr=0.9, n_unchanged=1
    )
    values = json.loads(json.dumps(report.to_dict()))
    assert DetectionReport.from_dict(values) == report
    row = {**values, "attack": "fgsm", "detector": "image"}  # a table row's extra columns are ignored
    assert DetectionReport.from_dict(row) == report
    del values["roc_auc"], values["threshold"]
    with pytest.raises(ValueError, match=r"needs the field\(s\) \['roc_auc', 'threshold'\]"):
        DetectionReport.from_dict(values)
    matrix = GeneralizationMatrix(("a", "b"), ("a", "b", "c"), np.arange(6.0).reshape(2, 3) / 6, "roc_auc")
    again = GeneralizationMatrix.from_dict(json.loads(json.dumps(matrix.to_dict())))
    assert (again.train_labels, again.test_labels, again.metric) == (("a", "b"), ("a", "b", "c"), "roc_auc")
    np.testing.assert_array_equal(again.values, matrix.values)
