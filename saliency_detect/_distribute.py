"""`tf.distribute` support shared by training, the detector and adversarial-set generation.

The library never schedules devices itself: training runs Keras's `Model.fit` under the
strategy's scope, and every batched computation (saliency, attacks, scoring) goes through
`_batching.map_batches`, which spreads each batch over the local replicas of the current
strategy. This module resolves the `strategy=` arguments, builds the strategies the CLI
names, and trains a model created outside a strategy's scope through a twin created
inside it.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator

import keras
import tensorflow as tf

#: The strategies the CLI's `--strategy` names.
STRATEGIES = ("default", "mirrored", "multiworker")


def resolve_strategy(
    strategy: tf.distribute.Strategy | None, model: keras.Model | None = None
) -> tf.distribute.Strategy:
    """`strategy`; for None, the strategy `model` was built under, else the current one.

    The current strategy is the one whose `scope()` the caller is in (TensorFlow's
    single-device default outside any scope).
    """
    if strategy is None:
        if model is not None and isinstance(model, keras.Model):
            return model.distribute_strategy  # its own, or the current one
        return tf.distribute.get_strategy()
    if not isinstance(strategy, tf.distribute.Strategy):
        raise TypeError(
            "`strategy` must be a tf.distribute.Strategy (e.g. tf.distribute.MirroredStrategy()) or None "
            f"for the current one. Received: {type(strategy).__name__}"
        )
    return strategy


def make_strategy(name: str) -> tf.distribute.Strategy:
    """Build the strategy the CLI's `--strategy NAME` names.

    `"default"` is the current strategy (one device); `"mirrored"` is
    `tf.distribute.MirroredStrategy()` over every local GPU (or the CPU);
    `"multiworker"` is `tf.distribute.MultiWorkerMirroredStrategy()`, configured by the
    `TF_CONFIG` environment variable of each worker.
    """
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multiworker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ValueError(f"`strategy` must be one of {STRATEGIES}. Received: {name!r}")


@contextlib.contextmanager
def fitting_under(strategy: tf.distribute.Strategy) -> Iterator[None]:
    """`strategy.scope()` for Keras's `fit`, with a fix for multi-worker strategies.

    Keras 3's TensorFlow trainer (up to at least 3.15) calls `strategy.reduce` on a
    nested `(x, y)` batch to build the model, and with `axis=0` on per-replica scalar
    metrics; `MultiWorkerMirroredStrategy.reduce` accepts neither, so `fit` fails on
    every multi-worker run. While the block runs, this strategy object's `reduce` is
    wrapped to reduce each tensor of a structure separately and to drop `axis` for
    scalars (the mean over replicas Keras means); it is restored afterwards.
    """
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) or "reduce" in vars(strategy):
        with strategy.scope():
            yield
        return
    original = strategy.reduce

    def reduce(reduce_op, value, axis=None):
        def one(v):
            local = v.values[0] if isinstance(v, tf.distribute.DistributedValues) else v
            rank = getattr(getattr(local, "shape", None), "rank", None)
            return original(reduce_op, v, axis=None if rank == 0 else axis)

        return tf.nest.map_structure(one, value)

    strategy.reduce = reduce
    try:
        with strategy.scope():
            yield
    finally:
        del strategy.reduce


def _created_in(model: keras.Model, strategy: tf.distribute.Strategy) -> bool:
    variables = [getattr(w, "value", w) for w in model.weights]
    return all(strategy.extended.variable_created_in_scope(v) for v in variables)


@contextlib.contextmanager
def trainable_in(model: keras.Model, strategy: tf.distribute.Strategy) -> Iterator[keras.Model]:
    """Yield a model to compile and fit under `strategy`, whose weights end up in `model`.

    A model whose variables were created under `strategy`'s scope is yielded as it is.
    Otherwise a twin is cloned under the scope with `model`'s weights, trained in its
    place, and its weights are copied back into `model` when the block succeeds — so a
    model built before the strategy existed is still "trained in place".
    """
    if _created_in(model, strategy):
        with fitting_under(strategy):
            yield model
        return
    try:
        with strategy.scope():
            twin = keras.models.clone_model(model)
    except Exception as error:  # subclassed models cannot be cloned from their config
        raise ValueError(
            f"The model {model.name!r} was created outside the scope of the {type(strategy).__name__} "
            "it is trained with, and cannot be cloned into it. Build the model inside "
            "`with strategy.scope():`."
        ) from error
    twin.set_weights(model.get_weights())
    with fitting_under(strategy):
        yield twin
    model.set_weights(twin.get_weights())


def training_rows(
    strategy: tf.distribute.Strategy, batch_size: int, n: int, *, name: str = "batch_size"
) -> int:
    """The number of training rows to use so every replica gets a slice of the first batch.

    Keras (3.x, TensorFlow backend) averages the first batch across replicas to build the
    model, which fails when the batch does not split evenly. So under several replicas the
    batch size must be a multiple of the replica count, and a training set smaller than
    one batch is trimmed (with a warning) to a multiple of it.
    """
    replicas = strategy.num_replicas_in_sync
    if replicas == 1:
        return n
    if batch_size % replicas:
        raise ValueError(
            f"`{name}` must be a multiple of the number of replicas ({replicas}) under "
            f"{type(strategy).__name__}, so each replica gets an equal share. Received: {name}={batch_size}"
        )
    if n < batch_size and n % replicas:
        kept = n - n % replicas
        warnings.warn(
            f"Training on {kept} of {n} images: a first batch smaller than `{name}` must split "
            f"evenly over the {replicas} replicas.",
            stacklevel=3,
        )
        return kept
    return n
