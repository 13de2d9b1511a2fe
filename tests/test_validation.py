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
