"""Clones of a model whose ReLUs back-propagate by guided-backprop or deconvnet rules.

At a ReLU with input z and incoming gradient g, the three rules pass back:

- vanilla gradient:  g * [z > 0]
- guided backprop:   g * [z > 0] * [g > 0]   (Springenberg et al. 2014)
- deconvnet:         g * [g > 0]             (Zeiler & Fergus 2014; ignores z)

Bounded ReLUs (`ReLU(max_value=6)`) also gate at the bound in guided backprop, where
their forward derivative is zero, and thresholded ReLUs gate at the threshold.
"""

from __future__ import annotations

import warnings

import keras
import tensorflow as tf

from saliency_detect._prepared import register_view
from saliency_detect.models._io import activation_name, output_layer

RULES = ("guided", "deconvnet")
_NON_RELU = (keras.layers.LeakyReLU, keras.layers.PReLU, keras.layers.ELU)


def rule_relu(rule: str, max_value: float | None = None, threshold: float = 0.0):
    """Return a ReLU whose forward pass is the usual one and whose gradient follows `rule`."""

    @tf.custom_gradient
    def relu(z):
        y = tf.where(z > threshold, z, tf.zeros_like(z))
        if max_value is not None:
            y = tf.minimum(y, tf.cast(max_value, z.dtype))

        def grad(g):
            positive = tf.cast(g > 0, g.dtype)
            if rule == "deconvnet":
                return g * positive
            gate = z > threshold
            if max_value is not None:
                gate = tf.logical_and(gate, z < tf.cast(max_value, z.dtype))
            return g * positive * tf.cast(gate, g.dtype)

        return y, grad

    relu.__name__ = f"{rule}_relu"
    return relu


class RuleReLU(keras.layers.Layer):
    """A ReLU layer whose gradient follows a guided-backprop or deconvnet rule."""

    def __init__(self, rule: str, max_value: float | None = None, threshold: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.rule, self.max_value, self.threshold = rule, max_value, threshold
        self._relu = rule_relu(rule, max_value, threshold)

    def call(self, inputs):
        return self._relu(inputs)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "rule": self.rule,
            "max_value": self.max_value,
            "threshold": self.threshold,
        }


class Passthrough(keras.layers.Layer):
    """Returns its input: stands in for a final softmax, so the clone outputs logits."""

    def call(self, inputs, mask=None):
        return inputs

    def compute_output_shape(self, input_shape):
        return input_shape


def relu_rule_clone(model: keras.Model, rule: str) -> tuple[keras.Model, list[tuple]]:
    """Clone `model` with every ReLU following `rule` and a final softmax removed.

    Returns:
        `(clone, links)`: links pair each of the clone's variables with the original's.

    Raises:
        TypeError: if `model` is not a functional or Sequential model.
    """
    final = output_layer(model)
    skipped: list[str] = []
    non_relu: list[str] = []

    def clone_layer(layer):
        config = layer.get_config()
        config["dtype"] = "float32"  # saliency in float32, also for a mixed-precision model
        is_final = layer is final
        if isinstance(layer, keras.layers.ReLU):
            if config.get("negative_slope"):
                non_relu.append(f"{layer.name} (leaky ReLU)")
                return layer.__class__.from_config(config)
            limits = (config.get("max_value"), config.get("threshold") or 0.0)
            return RuleReLU(rule, *limits, name=layer.name, dtype="float32")
        if isinstance(layer, keras.layers.Softmax) and is_final:
            return Passthrough(name=layer.name, dtype="float32")
        if isinstance(layer, _NON_RELU):
            non_relu.append(f"{layer.name} ({type(layer).__name__})")
        elif isinstance(layer, keras.layers.Lambda):
            skipped.append(f"{layer.name} (Lambda)")
            # The function is in memory already: rebuild from it, not from a (safe-mode) config.
            return keras.layers.Lambda(
                layer.function, arguments=layer.arguments, name=layer.name, dtype="float32"
            )
        elif hasattr(layer, "activation"):
            name = activation_name(layer.activation)
            if name == "relu":
                if isinstance(layer, keras.layers.Activation):
                    return RuleReLU(rule, name=layer.name, dtype="float32")
                config["activation"] = rule_relu(rule)
            elif name == "softmax" and is_final:
                if isinstance(layer, keras.layers.Activation):
                    return Passthrough(name=layer.name, dtype="float32")
                config["activation"] = "linear"
            elif name not in (None, "linear"):
                non_relu.append(f"{layer.name} ({name})")
        elif not type(layer).__module__.startswith("keras."):
            skipped.append(f"{layer.name} ({type(layer).__name__})")
        return layer.__class__.from_config(config)

    try:
        clone = keras.models.clone_model(model, clone_function=clone_layer, recursive=True)
    except ValueError as e:
        raise TypeError(
            f"Guided backprop and deconvnet rebuild the model with modified ReLUs, which needs a "
            f"functional or Sequential Keras model. Received {type(model).__name__} {model.name!r} ({e})"
        ) from e
    if skipped:
        warnings.warn(
            f"{rule} rules cannot reach ReLUs inside these layers, which keep their vanilla "
            f"gradient: {', '.join(skipped)}. Use keras.layers.ReLU or activation='relu' instead.",
            stacklevel=4,
        )
    if non_relu:
        warnings.warn(
            f"{rule} rules are defined for ReLU only; these non-ReLU nonlinearities keep their "
            f"vanilla gradient: {', '.join(non_relu)}.",
            stacklevel=4,
        )
    original, copied = model.weights, clone.weights
    if len(original) != len(copied) or any(a.shape != b.shape for a, b in zip(original, copied, strict=True)):
        raise RuntimeError(f"Could not pair the weights of {model.name!r} with its {rule} clone.")
    clone.set_weights(model.get_weights())
    return clone, list(zip(copied, original, strict=True))


for _rule in RULES:
    register_view(_rule, lambda model, rule=_rule: relu_rule_clone(model, rule))
