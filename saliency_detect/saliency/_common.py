"""What every saliency method shares: argument checks, class selection, reduction, the batch loop."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping

import keras
import numpy as np
import tensorflow as tf

from saliency_detect._classes import predicted_classes, resolve_classes
from saliency_detect._prepared import prepare, run_compiled
from saliency_detect._validation import check_images, check_labels, check_positive_int, model_image_shape

REDUCTIONS = ("none", "abs", "max_abs")


def resolve_targets(target, labels, *, n: int, num_classes: int) -> np.ndarray:
    """Turn a `target=` argument into int32 class indices, `PREDICTED` (-1) meaning "predicted".

    Raises:
        ValueError: for an unknown target name, `"true"` without `labels`, or indices of
            the wrong length or outside the model's classes.
    """
    if isinstance(target, str):
        if target == "predicted":
            return predicted_classes(n)
        if target == "true":
            if labels is None:
                raise ValueError("`target='true'` needs the true classes: pass `labels=` (one per image).")
            return check_labels(labels, n=n, num_classes=num_classes, name="labels").astype(np.int32)
        raise ValueError(
            "`target` must be 'predicted', 'true' (with `labels=`) or an array of class indices. "
            f"Received: target={target!r}"
        )
    if target is None:
        raise ValueError("`target` must be 'predicted', 'true' or an array of class indices. Received: None")
    if np.isscalar(target):
        target = np.full(n, target)
    return check_labels(target, n=n, num_classes=num_classes, name="target").astype(np.int32)


def select_scores(logits: tf.Tensor, target: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Return each image's logit for its target class, and the classes (predicted where `PREDICTED`)."""
    classes = resolve_classes(logits, target)
    return tf.gather(logits, classes, batch_dims=1), classes


def reduce_channels(maps: tf.Tensor, reduce: str) -> tf.Tensor:
    """Apply a `reduce=` option to (N, H, W, C) gradient maps."""
    if reduce == "abs":
        return tf.abs(maps)
    if reduce == "max_abs":
        return tf.reduce_max(tf.abs(maps), axis=-1)
    return maps


def check_reduce(reduce: str) -> str:
    if reduce not in REDUCTIONS:
        raise ValueError(f"`reduce` must be one of {REDUCTIONS}. Received: reduce={reduce!r}")
    return reduce


def run_method(
    model: keras.Model,
    x,
    *,
    target,
    labels,
    batch_size: int,
    rule: str,
    build: Callable[..., Callable],
    constants: Mapping[str, Hashable],
    extra: tuple[np.ndarray, ...] = (),
    extra_specs: tuple[tf.TensorSpec, ...] = (),
):
    """Validate, prepare the model's view `rule`, then compile and run `build(prepared, **constants)`.

    The step built by `build` is called as `step(x, target, *extra)` on each batch, with
    `target` holding class indices or -1 for "predicted".
    """
    x = check_images(x, expected_shape=model_image_shape(model))
    batch_size = check_positive_int(batch_size, "batch_size")
    prepared = prepare(model, rule)
    targets = resolve_targets(target, labels, n=len(x), num_classes=prepared.num_classes(x.shape[1:]))
    return run_compiled(
        prepared,
        x,
        targets,
        build=build,
        constants=constants,
        batch_size=batch_size,
        extra=extra,
        extra_specs=extra_specs,
    )
