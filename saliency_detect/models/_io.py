"""Saving and loading models atomically, and reading a classifier's logits."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import keras

from saliency_detect._files import atomic_path


def save_model(model: keras.Model, path: str | os.PathLike[str]) -> Path:
    """Save `model` to a `.keras` file, atomically.

    The model is written to a temporary file in the same folder and renamed into place,
    so a crash never leaves a half-written file at `path`. Missing parent folders are
    created.

    Args:
        model: the Keras model to save.
        path: destination, ending in `.keras`.

    Returns:
        The path written.

    Raises:
        ValueError: if `path` does not end in `.keras`.

    Examples:
        >>> import tempfile, os
        >>> from saliency_detect.models import mnist_net_d, save_model, load_model
        >>> path = save_model(mnist_net_d(), os.path.join(tempfile.mkdtemp(), "d.keras"))
        >>> load_model(path).name
        'mnist_net_d'
    """
    path = Path(path)
    if path.suffix != ".keras":
        raise ValueError(f"`path` must end in '.keras' (Keras's native format). Received: path='{path}'")
    with atomic_path(path, suffix=".tmp.keras") as tmp:
        model.save(tmp)
    return path


def load_model(path: str | os.PathLike[str], *, compile: bool = True) -> keras.Model:
    """Load a `.keras` model file in Keras's safe mode (no arbitrary code is run).

    Args:
        path: a file written by `save_model` or `keras.Model.save`.
        compile: whether to restore the training configuration too.

    Returns:
        The model.

    Raises:
        FileNotFoundError: if `path` does not exist.
        ValueError: if the file is not a readable `.keras` model.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No model file at '{path}'.")
    try:
        return keras.saving.load_model(path, compile=compile, safe_mode=True)
    except Exception as e:
        raise ValueError(
            f"Could not load a Keras model from '{path}': expected a .keras file written by "
            f"keras.Model.save ({type(e).__name__}: {e})"
        ) from e


def output_layer(model: keras.Model) -> keras.layers.Layer | None:
    """Return the layer producing a single-output model's output, or None."""
    outputs = getattr(model, "outputs", None)
    if not outputs or len(outputs) != 1:
        return None
    history = getattr(outputs[0], "_keras_history", None)
    return history.operation if history is not None else None


def activation_name(activation) -> str | None:
    """Return the registered name of a Keras activation function (`"relu"`), or None."""
    if activation is None:
        return None
    try:
        name = keras.activations.serialize(activation)
    except (ValueError, TypeError):
        return None
    return name if isinstance(name, str) else None


def _is_softmax(activation) -> bool:
    return activation_name(activation) == "softmax"


def ends_in_softmax(model: keras.Model) -> bool:
    """Return whether `model`'s output is a softmax (probabilities) rather than logits.

    Recognises a final `Softmax` layer, `Activation("softmax")`, and a final layer with
    `activation="softmax"`.

    Examples:
        >>> import keras
        >>> from saliency_detect.models import ends_in_softmax
        >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])
        >>> ends_in_softmax(model)
        True
    """
    layer = output_layer(model)
    if layer is None:
        return False
    if isinstance(layer, keras.layers.Softmax):
        return True
    return _is_softmax(getattr(layer, "activation", None))


def logits_model(model: keras.Model) -> keras.Model:
    """Return a model computing `model`'s pre-softmax logits; `model` itself if it has no softmax.

    The returned model shares every layer and weight with `model` except a final layer
    with a fused softmax, which is copied with a linear activation: the copy holds the
    weights of the moment it was made. `model` is not changed.

    Args:
        model: a functional or Sequential classifier.

    Returns:
        A model with the same input whose output is the logits.

    Examples:
        >>> import keras, numpy as np
        >>> from saliency_detect.models import logits_model
        >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])
        >>> z = logits_model(model)(np.ones((1, 4), "float32"))
        >>> bool(np.allclose(keras.ops.softmax(z), model(np.ones((1, 4), "float32")), atol=1e-6))
        True
    """
    return logits_model_and_links(model)[0]


def _computes_in_low_precision(layer) -> bool:
    """Whether the layer, or any layer nested in it, computes below float32 (mixed precision)."""
    if getattr(getattr(layer, "dtype_policy", None), "compute_dtype", "float32") != "float32":
        return True
    return any(_computes_in_low_precision(child) for child in getattr(layer, "layers", ()))


def _float32_twin(model: keras.Model) -> tuple[keras.Model, list[tuple]]:
    """A float32 clone of a mixed-precision model, linked to its variables."""

    def float32_layer(layer):
        config = layer.get_config()
        config["dtype"] = "float32"
        return layer.__class__.from_config(config)

    try:
        twin = keras.models.clone_model(model, clone_function=float32_layer)
    except Exception as error:  # subclassed models cannot be rebuilt from their config
        raise ValueError(
            f"The model {model.name!r} computes in reduced precision (mixed precision) and cannot be "
            "cloned to compute its saliency in float32. Build it with the float32 policy to explain it."
        ) from error
    twin.set_weights(model.get_weights())
    return twin, list(zip(twin.weights, model.weights, strict=True))


def logits_model_and_links(model: keras.Model) -> tuple[keras.Model, list[tuple]]:
    """Return `(logits model, links)`: links pair each copied variable with its original.

    Assigning every original to its copy (`copy.assign(original)`) brings the logits
    model up to date after `model` was trained further. A model built under a mixed
    precision policy (`keras.mixed_precision`) is differentiated through a float32 twin
    sharing its weights, so gradients and saliency are computed in float32.
    """
    links: list[tuple] = []
    if _computes_in_low_precision(model):
        model, links = _float32_twin(model)
    if not ends_in_softmax(model):
        return model, links
    layer = output_layer(model)
    inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs
    if isinstance(layer, (keras.layers.Softmax, keras.layers.Activation)):
        return keras.Model(inputs, layer.input, name=f"{model.name}_logits"), links
    config = layer.get_config()
    config.update(activation="linear", name=f"{layer.name}_logits")
    linear = layer.__class__.from_config(config)
    outputs = linear(layer.input)
    linear.set_weights(layer.get_weights())
    if links:  # `layer` is the twin's: link the head's copy to the user's own variables
        originals = {id(copy): original for copy, original in links}
        links += [(new, originals[id(old)]) for new, old in zip(linear.weights, layer.weights, strict=True)]
    else:
        links = list(zip(linear.weights, layer.weights, strict=True))
    return keras.Model(inputs, outputs, name=f"{model.name}_logits"), links


def model_fingerprint(model: keras.Model) -> str:
    """Return a SHA-256 hex digest of a model's architecture and weights.

    Two models share a fingerprint exactly when they have the same layers, configuration
    and weight values, so files made with one model can be recognised and refused for
    another. How a model is compiled (optimizer, loss, metrics) is not part of it: the
    same network trained here and reloaded with `compile=False` keeps its fingerprint.

    Examples:
        >>> import keras
        >>> from saliency_detect.models import mnist_net_d, model_fingerprint
        >>> keras.utils.set_random_seed(0)
        >>> a, b = mnist_net_d(), mnist_net_d()
        >>> model_fingerprint(a) == model_fingerprint(a), model_fingerprint(a) == model_fingerprint(b)
        (True, False)
    """
    architecture = json.loads(model.to_json())
    architecture.pop("compile_config", None)
    digest = hashlib.sha256(json.dumps(architecture, sort_keys=True).encode("utf-8"))
    for weight in model.weights:
        digest.update(weight.path.encode("utf-8"))
        digest.update(weight.numpy().tobytes())
    return digest.hexdigest()
