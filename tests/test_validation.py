"""The declared constraints of `_validation.py`: one definition per kind of value."""

from __future__ import annotations

import numpy as np
import pytest

from saliency_detect._validation import POSITIVE_INT, check_declared, one_of, optional


def test_one_of_names_the_choices_and_what_was_received():
    recipe = one_of({"converge": {}, "paper": {}}, "training recipes")
    assert recipe.check("paper", "recipe") == "paper"
    expected = (
        r"^`recipe` must be one of \('converge', 'paper'\) \(training recipes\)\. Received: recipe='fast'$"
    )
    with pytest.raises(ValueError, match=expected):
        recipe.check("fast", "recipe")
    # Unhashable values are refused with the same message, not a TypeError.
    for value in (["paper"], np.array(["paper"])):
        with pytest.raises(ValueError, match="must be one of"):
            recipe.check(value, "recipe")
    assert optional(recipe).check(None, "recipe") is None


def test_check_declared_stops_at_the_first_failure_in_order():
    class Params:
        a, b = 0, "x"

    with pytest.raises(ValueError, match=r"`a` must be a positive integer\. Received: a=0"):
        check_declared(Params(), {"a": POSITIVE_INT, "b": one_of(("y",))})


def _counting_scans(monkeypatch):
    """Patch `_validation`'s value scan to record the id of every array it scans."""
    from saliency_detect import _validation

    scanned: list[int] = []
    scan = _validation._scan_values

    def counting(x, name, clip_range):
        scanned.append(id(x))
        return scan(x, name, clip_range)

    monkeypatch.setattr(_validation, "_scan_values", counting)
    return scanned


def test_images_are_scanned_once_within_a_validating_call(monkeypatch):
    from saliency_detect._validation import check_images, validates_once

    scanned = _counting_scans(monkeypatch)
    x = np.full((4, 3, 3, 1), 0.5, np.float32)

    @validates_once
    def outer(images):
        checked = check_images(images, clip_range=(0.0, 1.0))
        assert check_images(checked, clip_range=None) is checked  # a looser check: no scan
        assert check_images(checked, clip_range=(-1.0, 2.0)) is checked
        inner(checked)
        check_images(checked[1:], clip_range=(0.0, 1.0))  # a slice is a new array: scanned
        return checked

    @validates_once
    def inner(images):  # called inside `outer`: joins its memo
        return check_images(images, clip_range=(0.0, 1.0))

    assert outer(x) is x  # float32 images are not copied
    assert scanned.count(id(x)) == 1 and len(scanned) == 2
    # Checked with no range first, a range later still scans the values against it.
    scanned.clear()

    @validates_once
    def widening(images):
        check_images(images)
        check_images(images, clip_range=(0.0, 1.0))

    widening(x)
    assert scanned == [id(x), id(x)]


def test_each_outermost_call_checks_the_images_afresh():
    from saliency_detect._validation import check_images, validates_once

    @validates_once
    def score(images):
        return check_images(images, clip_range=(0.0, 1.0))

    x = np.full((2, 3, 3, 1), 0.5, np.float32)
    score(x)
    x[0, 0, 0, 0] = np.nan  # the user changes the array between two calls
    with pytest.raises(ValueError, match="holds 1 NaN or infinite value"):
        score(x)
    x[0, 0, 0, 0] = 2.0
    with pytest.raises(ValueError, match=r"must lie in the clip range \[0.0, 1.0\]"):
        score(x)


def test_detection_report_scans_the_clean_images_once(monkeypatch, trained_mnist_f, detector, data):
    """The report checks x_test, then f's labels and D's scores use it without scanning it again."""
    from saliency_detect.evaluation import detection_report

    scanned = _counting_scans(monkeypatch)
    x_test, x_adv = data["x_test"][:64], data["x_test_adv"][:64]
    report = detection_report(trained_mnist_f, detector, x_test, data["y_test"][:64], x_adv)
    assert report.n_clean == 64
    assert scanned.count(id(x_test)) == 1 and scanned.count(id(x_adv)) == 1
    # Without the report, D's own public method still checks what it is given.
    scanned.clear()
    detector.decision_function(x_test)
    assert scanned == [id(x_test)]
