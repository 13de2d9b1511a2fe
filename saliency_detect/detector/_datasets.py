"""Checks for the `tf.data.Dataset`s `fit` trains and validates on, batch by batch.

Array inputs are checked whole by `_validation`; a dataset cannot be, so every batch is
checked inside the input pipeline (`checked_dataset`) as the array path checks arrays:
finite pixels in the clip range, one 0/1 label per image. A scan before training
(`scan_dataset`) finds the first bad batch with a message naming it and counts the
classes, so a dataset of one class is refused before any weight moves; the in-pipeline
check stays on during training for pipelines that are random (augmentation) and so may
differ from the scan.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator, Sequence

import tensorflow as tf

# Problems a batch can have, as bit flags computed in the graph.
_PROBLEMS = {
    1: "holds NaN or infinite pixel values; every pixel must be finite",
    2: "has pixel values outside the clip range {clip}",
    4: "has labels other than 0 (clean) and 1 (adversarial)",
    8: "does not hold one label per image",
}
_MARKER = "saliency_detect dataset check:"


def _element_parts(element):
    if not isinstance(element, tuple) or len(element) < 2:
        raise ValueError(
            "A dataset passed to `fit` must yield `(images, is_adversarial)` batches. "
            f"Received elements of type {type(element).__name__}."
        )
    return element[0], element[1]


def _check_spec(dataset: tf.data.Dataset, name: str, expected_shape: Sequence[int | None] | None) -> None:
    """Static checks, from the dataset's element spec: structure, rank, dtype, image shape."""
    images, labels = _element_parts(dataset.element_spec)
    if images.shape.rank is not None and images.shape.rank != 4:
        hint = " Batch it first: `dataset.batch(32)`." if images.shape.rank == 3 else ""
        raise ValueError(
            f"The {name} must yield batches of images (N, H, W, C). Received batches of shape "
            f"{tuple(images.shape)}.{hint}"
        )
    if not images.dtype.is_floating:
        hint = (
            " Convert with `dataset.map(lambda x, y: (tf.cast(x, 'float32') / 255, y))`."
            if images.dtype == tf.uint8
            else ""
        )
        raise ValueError(
            f"The {name} must yield floating-point images. Received: dtype={images.dtype.name}.{hint}"
        )
    if not (labels.dtype.is_integer or labels.dtype.is_floating or labels.dtype == tf.bool):
        raise ValueError(f"The {name} must yield 0/1 labels. Received: dtype={labels.dtype.name}")
    if expected_shape is not None and images.shape.rank == 4:
        for got, want in zip(images.shape[1:], expected_shape, strict=True):
            if got is not None and want is not None and got != want:
                raise ValueError(
                    f"The {name}'s images do not match the classifier's input: expected "
                    f"(N, {', '.join('?' if e is None else str(e) for e in expected_shape)}). "
                    f"Received batches of shape {tuple(images.shape)}."
                )


def _problems(images, labels, clip_range):
    """The bit flags of `_PROBLEMS` for one batch, as an int32 scalar tensor."""
    images = tf.cast(images, tf.float32)
    labels = tf.reshape(tf.cast(labels, tf.float32), [-1])
    finite = tf.math.is_finite(images)
    code = tf.where(tf.reduce_all(finite), 0, 1)
    if clip_range is not None:
        low, high = float(clip_range[0]), float(clip_range[1])
        seen = tf.where(finite, images, low)
        outside = tf.logical_or(tf.reduce_min(seen) < low - 1e-6, tf.reduce_max(seen) > high + 1e-6)
        code += tf.where(outside, 2, 0)
    binary = tf.reduce_all(tf.logical_or(tf.equal(labels, 0.0), tf.equal(labels, 1.0)))
    code += tf.where(binary, 0, 4)
    code += tf.where(tf.equal(tf.size(labels), tf.shape(images)[0]), 0, 8)
    return code


def _describe(code: int, clip_range) -> str:
    clip = None if clip_range is None else [float(clip_range[0]), float(clip_range[1])]
    return "; ".join(text.format(clip=clip) for bit, text in _PROBLEMS.items() if code & bit)


def scan_dataset(
    dataset: tf.data.Dataset,
    *,
    name: str,
    clip_range: tuple[float, float] | None,
    expected_shape: Sequence[int | None] | None = None,
    need_both_classes: bool = True,
) -> tuple[int, int]:
    """Check every batch of `dataset` in one pass and return its (clean, adversarial) counts.

    Raises:
        ValueError: naming the first bad batch and what is wrong with it, if the dataset
            is empty, infinite, or (with `need_both_classes`) holds one class only.
    """
    _check_spec(dataset, name, expected_shape)
    if dataset.cardinality() == tf.data.INFINITE_CARDINALITY:
        raise ValueError(
            f"The {name} is infinite (`repeat()` without a count): `fit` needs one pass per epoch."
        )

    def step(state, indexed):
        index, element = indexed
        images, labels = _element_parts(element)
        clean, adversarial, first_bad, first_code = state
        code = _problems(images, labels, clip_range)
        labels = tf.reshape(tf.cast(labels, tf.float32), [-1])
        n_adv = tf.reduce_sum(tf.cast(tf.equal(labels, 1.0), tf.int64))
        n_clean = tf.reduce_sum(tf.cast(tf.equal(labels, 0.0), tf.int64))
        new_bad = tf.logical_and(first_bad < 0, code > 0)
        return (
            clean + n_clean,
            adversarial + n_adv,
            tf.where(new_bad, index, first_bad),
            tf.where(new_bad, code, first_code),
        )

    initial = (tf.constant(0, tf.int64), tf.constant(0, tf.int64), tf.constant(-1, tf.int64), tf.constant(0))
    clean, adversarial, first_bad, code = (int(v) for v in dataset.enumerate().reduce(initial, step))
    if first_bad >= 0:
        raise ValueError(f"Batch {first_bad} of the {name} {_describe(code, clip_range)}.")
    if clean + adversarial == 0:
        raise ValueError(f"The {name} is empty: expected batches of `(images, is_adversarial)`.")
    if need_both_classes and min(clean, adversarial) == 0:
        only = "clean (0)" if adversarial == 0 else "adversarial (1)"
        raise ValueError(
            f"The {name} must hold both classes (0: clean, 1: adversarial) to fit a detector. "
            f"Received only {only} labels, {clean + adversarial} images."
        )
    return clean, adversarial


def checked_dataset(
    dataset: tf.data.Dataset, *, name: str, clip_range: tuple[float, float] | None
) -> tf.data.Dataset:
    """`dataset` with every batch checked in the pipeline; a bad batch stops iteration.

    The failure surfaces as `tf.errors.InvalidArgumentError`; `dataset_errors` turns it
    into a `ValueError` saying what is wrong.
    """

    def check(images, labels, *rest):
        code = _problems(images, labels, clip_range)
        ok = tf.debugging.Assert(tf.equal(code, 0), [f"{_MARKER}{name}|", code])
        with tf.control_dependencies([ok]):
            images = tf.identity(images)
        return (images, labels, *rest)

    return dataset.map(check, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


@contextlib.contextmanager
def dataset_errors(clip_range: tuple[float, float] | None) -> Iterator[None]:
    """Turn a failed `checked_dataset` check into a `ValueError` saying what is wrong."""
    try:
        yield
    except tf.errors.InvalidArgumentError as e:
        found = re.search(re.escape(_MARKER) + r"(.*?)\|\]\s*\[(\d+)\]", str(e.message))
        if found is None:
            raise
        raise ValueError(
            f"A batch of the {found.group(1)} {_describe(int(found.group(2)), clip_range)} (found during "
            "training: the pipeline yields different batches on each pass, e.g. random augmentation)."
        ) from None
