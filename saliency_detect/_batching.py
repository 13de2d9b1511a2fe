"""The library's one batching helper: run a compiled function over fixed-size batches.

Under a `tf.distribute.Strategy` scope with several local replicas (`MirroredStrategy`
over GPUs, or logical CPU devices), each batch is split into one contiguous slice per
replica, the slices run in `strategy.run`, and the per-replica results are joined back
in input order, so every saliency method, attack and scorer built on `map_batches` uses
all the devices without code of its own.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterator, Sequence

import keras
import numpy as np
import tensorflow as tf


def map_batches(
    fn: Callable[..., tf.Tensor | tuple[tf.Tensor, ...]],
    arrays: Sequence[np.ndarray] | tf.data.Dataset | Iterator,
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
            (or an iterator of batches) whose elements (a tensor or a tuple of tensors)
            are passed as they come, so data larger than memory streams through.
        batch_size: images per call (ignored for a dataset, which is batched already).
        progress: show a Keras progress bar.

    Returns:
        A NumPy array, or a tuple of them when `fn` returns a tuple.
    """
    fn = _on_replicas(fn)
    outputs = []
    if isinstance(arrays, (tf.data.Dataset, Iterator)):
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


# fn -> {strategy: compiled distributed call}; weak both ways so neither is kept alive.
_DISTRIBUTED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def local_replicas(strategy: tf.distribute.Strategy) -> int:
    """The number of replicas `strategy` runs in this process (1 without a strategy)."""
    devices = getattr(strategy.extended, "worker_devices", ())
    return max(1, min(strategy.num_replicas_in_sync, len(devices)))


def _on_replicas(fn: Callable) -> Callable:
    """`fn`, or `fn` spread over the current strategy's replicas when it has several here.

    Only strategies whose replicas are all in this process are split (one machine's GPUs,
    logical devices); with several workers each worker computes its own batches whole,
    since a worker holds only its own replicas' results.
    """
    strategy = tf.distribute.get_strategy()
    replicas = strategy.num_replicas_in_sync
    if replicas == 1 or local_replicas(strategy) != replicas:
        return fn
    per_fn = _DISTRIBUTED.setdefault(fn, weakref.WeakKeyDictionary())
    if strategy not in per_fn:

        @tf.function(reduce_retracing=True)
        def run(values):
            return strategy.run(lambda batch: fn(*batch), args=(values,))

        per_fn[strategy] = run
    run = per_fn[strategy]

    def split_call(*batch):
        size = int(batch[0].shape[0])
        bounds = np.linspace(0, size, replicas + 1).round().astype(int)

        def value_fn(context):
            i = context.replica_id_in_sync_group
            return tuple(t[bounds[i] : bounds[i + 1]] for t in batch)

        values = strategy.experimental_distribute_values_from_function(value_fn)
        parts = strategy.experimental_local_results(run(values))
        if isinstance(parts[0], (tuple, list)):
            return tuple(tf.concat([part[i] for part in parts], axis=0) for i in range(len(parts[0])))
        return tf.concat(list(parts), axis=0)

    return split_call
