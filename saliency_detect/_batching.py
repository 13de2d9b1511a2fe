"""The library's one batching helper: run a compiled function over fixed-size batches."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import keras
import numpy as np
import tensorflow as tf


def map_batches(
    fn: Callable[..., tf.Tensor | tuple[tf.Tensor, ...]],
    arrays: Sequence[np.ndarray] | tf.data.Dataset,
    batch_size: int,
    *,
    progress: bool = False,
) -> np.ndarray | tuple[np.ndarray, ...]:
    """Apply `fn` to consecutive slices of `arrays` and concatenate the results.

    `fn` is meant to be a `tf.function` with a `None` batch dimension in its input
    signature, so the last, smaller batch does not trigger a retrace. Results stay
    tensors until every batch is done and become NumPy once, at the end.

    Args:
        fn: called as `fn(*batches)`; returns a tensor or a tuple of tensors whose first
            axis is the batch.
        arrays: arrays of equal length, sliced together; or a batched `tf.data.Dataset`
            whose elements (a tensor or a tuple of tensors) are passed as they come,
            so data larger than memory streams through.
        batch_size: images per call (ignored for a dataset, which is batched already).
        progress: show a Keras progress bar.

    Returns:
        A NumPy array, or a tuple of them when `fn` returns a tuple.
    """
    outputs = []
    if isinstance(arrays, tf.data.Dataset):
        bar = keras.utils.Progbar(None, unit_name="batch") if progress else None
        for i, batch in enumerate(arrays):
            outputs.append(fn(*(batch if isinstance(batch, tuple) else (batch,))))
            if bar is not None:
                bar.update(i + 1)
        if not outputs:
            raise ValueError("The dataset is empty: expected at least one batch of images.")
    else:
        n = len(arrays[0])
        bar = keras.utils.Progbar(n) if progress else None
        for start in range(0, n, batch_size):
            batch = [tf.convert_to_tensor(a[start : start + batch_size]) for a in arrays]
            outputs.append(fn(*batch))
            if bar is not None:
                bar.update(min(start + batch_size, n))
    if isinstance(outputs[0], (tuple, list)):
        return tuple(tf.concat([o[i] for o in outputs], axis=0).numpy() for i in range(len(outputs[0])))
    return tf.concat(outputs, axis=0).numpy()
