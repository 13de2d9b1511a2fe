"""Per-model state shared by saliency methods and attacks: views of the model and compiled steps.

A call on a model prepares, once, the model to differentiate (its logits view, or
another registered view such as the ReLU-rule clones of guided backprop and deconvnet)
and keeps the `tf.function` of every step it ran, so repeated calls neither rebuild nor
retrace.
Before every call, variables copied from the user's model are refreshed from it, so a
model trained further between two calls is never explained with stale weights.

The cache is keyed weakly by the user's model and never holds a strong reference to
it, so models are freed as usual.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Hashable, Mapping, Sequence

import keras
import numpy as np
import tensorflow as tf

from saliency_detect._batching import map_batches
from saliency_detect._validation import model_image_shape, model_num_classes
from saliency_detect.models._io import logits_model_and_links

_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
# view name -> function(model) returning (view model outputting logits, [(copy, original) variables])
_VIEWS: dict[str, Callable] = {"vanilla": logits_model_and_links}


def register_view(name: str, build: Callable) -> None:
    """Make `prepare(model, name)` build its view of a model with `build(model)`."""
    _VIEWS[name] = build


class Prepared:
    """One view of a user model (its logits, or a ReLU-rule clone) and the steps compiled on it."""

    def __init__(self, original: keras.Model, rule: str):
        derived, links = _VIEWS[rule](original)
        # Hold the derived model strongly only when it is a different object; holding
        # the user's model itself would keep it alive through the weak cache.
        self._strong = None if derived is original else derived
        self._weak = weakref.ref(derived)
        self._links = links
        self._functions: dict[Hashable, Callable] = {}
        self._feature_models: dict[tuple[str, ...], keras.Model] = {}
        self._num_classes: int | None = None
        if rule != "vanilla":
            self._check_matches(original)

    @property
    def model(self) -> keras.Model:
        """The model whose output is the logits to differentiate."""
        model = self._strong if self._strong is not None else self._weak()
        if model is None:  # pragma: no cover - the caller holds the user's model
            raise RuntimeError("The model this saliency state was prepared for no longer exists.")
        return model

    def num_classes(self, image_shape: tuple[int, ...]) -> int:
        """The number of logits; subclassed models, which do not declare it, are run once to see."""
        if self._num_classes is None:
            self._num_classes = model_num_classes(self.model, image_shape)
        return self._num_classes

    def refresh(self) -> None:
        """Copy the user's current weights into every variable this view copied."""
        for copy, original in self._links:
            copy.assign(original)

    def feature_model(self, layer_names: tuple[str, ...]) -> keras.Model:
        """A model returning `[output of each named layer..., logits]`."""
        if layer_names not in self._feature_models:
            model = self.model
            outputs = [model.get_layer(name).output for name in layer_names]
            self._feature_models[layer_names] = keras.Model(model.inputs[0], [*outputs, model.outputs[0]])
        return self._feature_models[layer_names]

    def compiled(
        self,
        build: Callable[..., Callable],
        constants: Mapping[str, Hashable],
        signature: Sequence[tf.TensorSpec],
        *,
        cache: bool = True,
        owner: object | None = None,
    ) -> Callable:
        """Return `tf.function(build(self, **constants))` for `signature`, compiled once.

        `build` must be a module-level function (no closure): everything the step it
        returns reads besides the view comes in through `constants`, which with `build`
        and the signature's shapes is the cache key. A constant cannot be left out of the
        key, so a call with other settings never runs a graph compiled for the old ones.

        A step that also reads a fitted detector (the joint attacks) passes it as
        `owner`: the step is then kept on the detector, not in this view's cache (which
        would keep the detector, and through it the classifier, alive), and dropped when
        the detector's fitted state changes (`owner_steps`). `cache=False` compiles for
        this call only (a bare Keras model as the detector).
        """
        if getattr(build, "__closure__", None):
            captured = ", ".join(build.__code__.co_freevars)
            raise TypeError(
                f"A compiled step's builder must read its constants from its arguments, not a closure: "
                f"{build.__qualname__} captures {captured}."
            )
        if not cache:
            return tf.function(build(self, **constants), input_signature=list(signature))
        store = self._functions if owner is None else owner_steps(owner)
        # The view is part of the key for the steps kept on a detector, which may be
        # attacked through several classifiers' views.
        key = (build, tuple(sorted(constants.items())), tuple(tuple(spec.shape) for spec in signature), self)
        try:
            function = store.get(key)
        except TypeError:
            raise TypeError(
                f"The constants of {build.__qualname__} must be hashable to key its compiled step. "
                f"Received: {constants!r}"
            ) from None
        if function is None:
            function = tf.function(build(self, **constants), input_signature=list(signature))
            store[key] = function
        return function

    def _check_matches(self, original: keras.Model) -> None:
        shape = model_image_shape(original)
        if shape is None or None in shape:
            return
        probe = np.random.default_rng(0).random((2, *shape), dtype=np.float32)
        expected = logits_model_and_links(original)[0](probe, training=False)
        received = self.model(probe, training=False)
        if not np.allclose(expected, received, rtol=1e-4, atol=1e-4):
            raise RuntimeError(
                "The model rebuilt with modified ReLU gradients does not compute the same logits "
                f"as {original.name!r} (largest difference "
                f"{float(np.max(np.abs(np.asarray(expected) - np.asarray(received)))):.3g}). "
                "Please report this with the model's summary."
            )


def owner_steps(owner: object) -> dict:
    """The compiled steps kept on `owner` (a fitted detector) for its current fitted state.

    The state is the detector itself and its public fitted attributes (scikit-learn's
    trailing `_`), by identity: a refit or a calibration replaces one of them, and the
    steps compiled for the old state are dropped; a `copy.copy` of the detector, whose
    `__dict__` starts as the original's, compiles its own steps rather than sharing the
    original's (a step holds the detector it was built for). The state is held beside
    the steps, so no identity can be reused while they live. Kept in the detector's
    `__dict__`, so the steps (which hold the detector) are freed with it.
    """
    fitted = tuple(
        (name, value)
        for name, value in vars(owner).items()
        if name.endswith("_") and not name.startswith("_")
    )
    identity = (id(owner), *((name, id(value)) for name, value in fitted))
    held = vars(owner).get("_compiled_steps")
    if held is None or held[0] != identity:
        held = (identity, fitted, {})
        vars(owner)["_compiled_steps"] = held
    return held[2]


def owner_function(
    owner: object, name: str, build: Callable[[], Callable], signature: Sequence[tf.TensorSpec]
) -> Callable:
    """`tf.function(build(), input_signature=signature)`, kept on `owner` for its fitted state.

    The one cache for a step that reads a fitted detector's state (its scorer, its
    guard's step): keyed by `name` and the signature's shapes among `owner_steps(owner)`,
    so a refit or a calibration (a fitted attribute replaced) compiles it afresh instead
    of running a graph that captured the old state. `build` is called only then.
    """
    store = owner_steps(owner)
    key = (name, tuple((tuple(spec.shape), spec.dtype) for spec in signature))
    function = store.get(key)
    if function is None:
        function = store[key] = tf.function(build(), input_signature=list(signature))
    return function


def prepare(model: keras.Model, rule: str = "vanilla") -> Prepared:
    """Return the cached `Prepared` view `rule` of `model`, refreshed from its weights."""
    if not isinstance(model, keras.Model):
        raise TypeError(f"`model` must be a Keras model. Received: {type(model).__name__}")
    per_model = _CACHE.setdefault(model, {})
    if rule not in per_model:
        per_model[rule] = Prepared(model, rule)
    prepared = per_model[rule]
    prepared.refresh()
    return prepared


def run_compiled(
    prepared: Prepared,
    x: np.ndarray,
    labels: np.ndarray,
    *,
    build: Callable[..., Callable],
    constants: Mapping[str, Hashable],
    batch_size: int,
    extra: Sequence[np.ndarray] = (),
    extra_specs: Sequence[tf.TensorSpec] = (),
    cache: bool = True,
    owner: object | None = None,
    progress: bool = False,
):
    """Compile `build(prepared, **constants)` once per constants and image shape, then run it batch by batch.

    The step is called as `step(x, labels, *extra)` on each batch; `labels` are int32 class
    indices where -1 means "the model's prediction". Its input signature has a `None`
    batch dimension, so the last, smaller batch does not retrace. See `Prepared.compiled`
    for `build`, `constants`, `cache` and `owner`.
    """
    signature = [
        tf.TensorSpec((None, *x.shape[1:]), tf.float32),
        tf.TensorSpec((None,), tf.int32),
        *extra_specs,
    ]
    step = prepared.compiled(build, constants, signature, cache=cache, owner=owner)
    return map_batches(step, (x, labels, *extra), batch_size, progress=progress)
