"""Input checks shared by every public function.

Each check names the argument, says what was expected and what was received, in the
style of Keras's own error messages. None of them uses `assert`.

Images are validated once per call: a public function that hands its checked images on
to others (an evaluation scoring a detector, a search running an attack) is decorated
with `validates_once`, and within it `check_images` does not scan the same array's
values again (the structural checks, cheap, still run). The memo lives for that one
outermost call, so an array a user changes between calls is always checked afresh.
"""

from __future__ import annotations

import contextvars
import dataclasses
import functools
import numbers
import weakref
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

import keras
import numpy as np

#: Within a `validates_once` call: id of each array whose values were scanned, with a
#: weak reference to it (a dead one cannot vouch for a new array at the same id) and the
#: range it was checked against (None: finite values only).
_SCANNED: contextvars.ContextVar[dict[int, tuple[weakref.ref, tuple[float, float] | None]] | None]
_SCANNED = contextvars.ContextVar("saliency_detect_scanned_images", default=None)

_F = TypeVar("_F", bound=Callable[..., Any])


def validates_once(fn: _F) -> _F:
    """Decorate a public function whose checked images flow into other checking functions.

    For the duration of the outermost such call, `check_images` remembers the arrays it
    scanned (finite values, range) and does not scan them again; arrays derived from
    them (slices, perturbed copies) are new objects and are checked.
    """

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        if _SCANNED.get() is not None:  # an outer call already holds the memo
            return fn(*args, **kwargs)
        token = _SCANNED.set({})
        try:
            return fn(*args, **kwargs)
        finally:
            _SCANNED.reset(token)

    return wrapper  # type: ignore[return-value]


def _covers(checked: tuple[float, float] | None, wanted: tuple[float, float] | None) -> bool:
    """Whether values found within `checked` (None: any finite) are within `wanted`."""
    if wanted is None:
        return True
    return checked is not None and checked[0] >= wanted[0] and checked[1] <= wanted[1]


def check_images(
    x: Any,
    *,
    name: str = "x",
    clip_range: tuple[float, float] | None = None,
    expected_shape: Sequence[int | None] | None = None,
) -> np.ndarray:
    """Return `x` as a float32 NumPy batch of images (N, H, W, C), or raise.

    Args:
        x: images as a NumPy array or a tensor.
        name: the argument's name, used in error messages.
        clip_range: `(low, high)` the pixel values must lie in, or None to skip.
        expected_shape: the per-image shape `(H, W, C)` a model expects (entries may be
            None for "any"), or None to skip.

    Returns:
        A float32 NumPy array of rank 4.

    Raises:
        TypeError: if `x` is not numeric.
        ValueError: if `x` is not of rank 4, is empty, holds NaN or infinity, is not a
            float array, lies outside `clip_range` or does not match `expected_shape`.
    """
    if hasattr(x, "numpy") and not isinstance(x, np.ndarray):
        x = x.numpy()
    x = np.asarray(x)
    if x.dtype == object or not np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_:
        raise TypeError(f"`{name}` must be a numeric array of images (N, H, W, C). Received: dtype={x.dtype}")
    if not np.issubdtype(x.dtype, np.floating):
        hint = " Convert with `x.astype('float32') / 255`." if x.dtype == np.uint8 else ""
        raise ValueError(
            f"`{name}` must hold floating-point pixel values"
            + (f" in {tuple(clip_range)}" if clip_range else "")
            + f". Received: dtype={x.dtype}.{hint}"
        )
    if x.ndim != 4:
        hint = " For grayscale images add a channel axis: `x[..., None]`." if x.ndim == 3 else ""
        raise ValueError(
            f"`{name}` must be a batch of images of rank 4 (N, H, W, C), channels last. "
            f"Received: shape={x.shape}.{hint}"
        )
    if x.shape[0] == 0:
        raise ValueError(
            f"`{name}` is an empty batch: expected at least one image. Received: shape={x.shape}"
        )
    if expected_shape is not None:
        expected = tuple(expected_shape)
        if len(expected) != 3 or any(
            e is not None and e != s for e, s in zip(expected, x.shape[1:], strict=True)
        ):
            raise ValueError(
                f"`{name}` does not match the model's input: expected images of shape "
                f"(N, {', '.join('?' if e is None else str(e) for e in expected)}). "
                f"Received: shape={x.shape}"
            )
    x = x.astype(np.float32, copy=False)
    wanted = None if clip_range is None else (float(clip_range[0]), float(clip_range[1]))
    scanned = _SCANNED.get()
    if scanned is not None:
        ref, checked = scanned.get(id(x), (None, None))
        if ref is not None and ref() is x and _covers(checked, wanted):
            return x
    _scan_values(x, name, wanted)
    if scanned is not None:
        scanned[id(x)] = (weakref.ref(x), wanted)
    return x


def _scan_values(x: np.ndarray, name: str, clip_range: tuple[float, float] | None) -> None:
    """Raise unless every value of `x` is finite and (with `clip_range`) within it."""
    finite = np.isfinite(x)
    if not finite.all():
        bad = int(x.size - np.count_nonzero(finite))
        raise ValueError(f"`{name}` holds {bad} NaN or infinite value(s); every pixel must be finite.")
    if clip_range is not None:
        low, high = clip_range
        x_min, x_max = float(x.min()), float(x.max())
        if x_min < low - 1e-6 or x_max > high + 1e-6:
            raise ValueError(
                f"`{name}` must lie in the clip range [{low}, {high}]. "
                f"Received values in [{x_min:.6g}, {x_max:.6g}]."
                + (" Did you forget to divide by 255?" if x_max > 1.5 and high <= 1.0 else "")
            )


def check_labels(y: Any, *, n: int, num_classes: int | None = None, name: str = "y") -> np.ndarray:
    """Return integer class labels as an int64 vector of length `n`, or raise.

    Labels of shape (N,) and (N, 1) (Keras's CIFAR layout) are accepted.

    Raises:
        ValueError: if `y` has the wrong length or shape, is not integer-valued or holds a
            class outside `[0, num_classes)`.
    """
    if hasattr(y, "numpy") and not isinstance(y, np.ndarray):
        y = y.numpy()
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise ValueError(
            f"`{name}` must be integer class labels of shape (N,) or (N, 1). "
            f"Received: shape={y.shape}"
            + (" (one-hot labels? use `y.argmax(axis=1)`)" if y.ndim == 2 else "")
        )
    if y.shape[0] != n:
        raise ValueError(
            f"`{name}` must hold one label per image: expected {n}. Received: {y.shape[0]} labels"
        )
    whole_floats = np.issubdtype(y.dtype, np.floating) and np.all(np.isfinite(y)) and np.all(y == np.round(y))
    if not np.issubdtype(y.dtype, np.integer) and not whole_floats:
        raise ValueError(f"`{name}` must hold integer class labels. Received: dtype={y.dtype}")
    y = y.astype(np.int64)
    if num_classes is not None and y.size and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(
            f"`{name}` must hold class indices in [0, {num_classes - 1}]. "
            f"Received labels in [{y.min()}, {y.max()}]"
        )
    return y


@dataclasses.dataclass(frozen=True)
class Constraint:
    """What a parameter must be: the words of the error message and the test.

    The one definition of "a positive integer", "a positive number", ... that every
    check of the library uses: `check_positive_int` and the others below, and the
    configs' declared field constraints (`check_declared`).
    """

    describe: str
    accepts: Callable[[Any], bool]

    def check(self, value: Any, name: str) -> Any:
        """Return `value` if it is accepted, else raise ValueError naming `name`."""
        if not self.accepts(value):
            raise ValueError(f"`{name}` must be {self.describe}. Received: {name}={value!r}")
        return value


def _integer(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and bool(np.isfinite(value))


POSITIVE_INT = Constraint("a positive integer", lambda v: _integer(v) and v >= 1)
NON_NEGATIVE_INT = Constraint("a non-negative integer", lambda v: _integer(v) and v >= 0)
POSITIVE_NUMBER = Constraint("a positive number", lambda v: _real(v) and v > 0)
NON_NEGATIVE_NUMBER = Constraint("a number >= 0", lambda v: _real(v) and v >= 0)
FRACTION = Constraint("in [0, 1)", lambda v: _real(v) and 0 <= v < 1)
OPEN_UNIT = Constraint("in (0, 1)", lambda v: _real(v) and 0 < v < 1)
SHARE = Constraint("in (0, 1]", lambda v: _real(v) and 0 < v <= 1)
BOOLEAN = Constraint("true or false", lambda v: isinstance(v, bool))


def one_of(choices: Iterable[Any], note: str = "") -> Constraint:
    """One of `choices` (a tuple, or a mapping's keys); `note` says what they are."""
    allowed = tuple(choices)
    describe = f"one of {allowed}" + (f" ({note})" if note else "")
    return Constraint(describe, lambda v: isinstance(v, Hashable) and v in allowed)


def optional(constraint: Constraint) -> Constraint:
    """`constraint`, or None."""
    return Constraint(f"{constraint.describe} or None", lambda v: v is None or constraint.accepts(v))


def each(constraint: Constraint, describe: str) -> Constraint:
    """A sequence whose every item meets `constraint` ("positive numbers", ...)."""
    return Constraint(
        describe,
        lambda v: isinstance(v, Sequence) and not isinstance(v, str) and all(map(constraint.accepts, v)),
    )


def check_declared(obj: Any, constraints: Mapping[str, Constraint]) -> None:
    """Check each attribute `obj.NAME` against `constraints[NAME]`, in order; raise on the first failure."""
    for name, constraint in constraints.items():
        constraint.check(getattr(obj, name), name)


def check_positive_int(value: Any, name: str) -> int:
    """Return `value` if it is an integer >= 1, else raise ValueError naming `name`."""
    return int(POSITIVE_INT.check(value, name))


def check_positive_float(value: Any, name: str) -> float:
    """Return `value` as a float if it is a finite number > 0, else raise ValueError."""
    return float(POSITIVE_NUMBER.check(value, name))


def check_non_negative_float(value: Any, name: str) -> float:
    """Return `value` as a float if it is a finite number >= 0, else raise ValueError."""
    return float(NON_NEGATIVE_NUMBER.check(value, name))


def check_fraction(value: Any, name: str) -> float:
    """Return `value` as a float if it is a number in [0, 1), else raise ValueError."""
    return float(FRACTION.check(value, name))


def check_input_shape(input_shape: Any, name: str = "input_shape") -> tuple[int, int, int]:
    """Return `input_shape` as an (H, W, C) tuple of positive ints, else raise ValueError."""
    try:
        shape = tuple(input_shape)
    except TypeError:
        shape = ()
    if len(shape) != 3 or any(
        isinstance(s, bool) or not isinstance(s, numbers.Integral) or s < 1 for s in shape
    ):
        raise ValueError(
            f"`{name}` must be (height, width, channels), three positive integers. "
            f"Received: {name}={input_shape!r}"
        )
    return tuple(int(s) for s in shape)  # type: ignore[return-value]


def model_num_classes(model: keras.Model, image_shape: Sequence[int]) -> int:
    """The number of outputs of a classifier.

    A subclassed model, which does not declare it, is run once on a blank image of
    `image_shape` to see.
    """
    try:
        return int(model.output_shape[-1])
    except (AttributeError, ValueError):
        probe = np.zeros((1, *image_shape), np.float32)
        return int(keras.ops.shape(model(probe, training=False))[-1])


def model_image_shape(model: keras.Model) -> tuple[int | None, ...] | None:
    """Return the (H, W, C) a model takes, or None when the model does not say."""
    try:
        shape = model.input_shape
    except (AttributeError, ValueError):
        return None
    if isinstance(shape, list):
        if len(shape) != 1:
            raise ValueError(
                f"The model must take one image input. Received a model with {len(shape)} inputs."
            )
        shape = shape[0]
    if shape is None or len(shape) != 4:
        raise ValueError(
            "The model must take images of rank 4 (N, H, W, C). "
            f"Received a model whose input shape is {shape}."
        )
    return tuple(shape[1:])
