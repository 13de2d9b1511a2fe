"""Grad-CAM (Selvaraju et al. 2017) for one layer or several at once."""

from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np
import tensorflow as tf
from numpy.typing import ArrayLike

from saliency_detect._gradients import score_gradients
from saliency_detect.saliency._common import run_method, select_scores

_CONV_TYPES = (
    keras.layers.Conv2D,
    keras.layers.SeparableConv2D,
    keras.layers.DepthwiseConv2D,
    keras.layers.Conv2DTranspose,
)


def conv_layers(model: keras.Model) -> tuple[str, ...]:
    """The names of `model`'s own convolution layers, input to output (not those of nested models)."""
    return tuple(layer.name for layer in model.layers if isinstance(layer, _CONV_TYPES))


def _feature_map_layers(model: keras.Model) -> list[str]:
    names = []
    for layer in model.layers:
        try:
            shape = layer.output.shape
        except (AttributeError, ValueError):
            continue
        if len(shape) == 4 and not isinstance(layer, keras.layers.InputLayer):
            names.append(layer.name)
    return names


def _nested_owner(model: keras.Model, name: str) -> str | None:
    for layer in model.layers:
        if isinstance(layer, keras.Model) and (
            any(inner.name == name for inner in layer.layers) or _nested_owner(layer, name)
        ):
            return layer.name
    return None


def check_layers(model: keras.Model, layers: Sequence[str] | None) -> tuple[str, ...]:
    """Return the layer names to take Grad-CAM at (default: the last convolution), or raise."""
    if not isinstance(model, keras.Model):
        raise TypeError(f"`model` must be a Keras model. Received: {type(model).__name__}")
    if layers is None:
        convs = conv_layers(model)
        if not convs:
            raise ValueError(
                f"{model.name!r} has no convolution layer at its top level to take Grad-CAM at: pass "
                f"`layer=` naming a layer whose output is a feature map (N, h, w, channels)."
            )
        return (convs[-1],)
    if isinstance(layers, str) or not all(isinstance(n, str) for n in layers) or not layers:
        raise ValueError(f"`layers` must be a non-empty list of layer names. Received: {layers!r}")
    candidates = _feature_map_layers(model)
    for name in layers:
        if name in candidates:
            continue
        names = [layer.name for layer in model.layers]
        if name in names:
            shape = model.get_layer(name).output.shape
            raise ValueError(
                f"Layer {name!r} is not a convolutional feature map: Grad-CAM needs a layer whose "
                f"output is (N, h, w, channels); {name!r} outputs {tuple(shape)}. "
                f"Layers that fit: {', '.join(candidates)}."
            )
        owner = _nested_owner(model, name)
        if owner:
            raise ValueError(
                f"Layer {name!r} is inside the nested model {owner!r}. Grad-CAM takes layers of the "
                f"model's own graph: build the model on the nested model's layers (e.g. "
                f"keras.applications with `input_tensor=`), or pick one of: {', '.join(candidates)}."
            )
        raise ValueError(f"{model.name!r} has no layer {name!r}. Layers that fit: {', '.join(candidates)}.")
    return tuple(layers)


def _cam(features: tf.Tensor, grads: tf.Tensor, size, upsample: bool) -> tf.Tensor:
    weights = tf.reduce_mean(grads, axis=[1, 2], keepdims=True)  # alpha_k: pooled gradients
    cam = tf.nn.relu(tf.reduce_sum(features * weights, axis=-1))
    if upsample:
        cam = tf.image.resize(cam[..., None], size, method="bilinear")[..., 0]
    return cam


def grad_cam_layers(
    model: keras.Model,
    x: ArrayLike,
    *,
    layers: Sequence[str],
    target: str | int | ArrayLike = "predicted",
    labels: ArrayLike | None = None,
    batch_size: int = 64,
    upsample: bool = True,
) -> dict[str, np.ndarray]:
    """Grad-CAM at several layers in one pass: the per-layer weighted feature maps.

    For each layer, the feature maps A_k are weighted by the spatial mean of
    d logit[class] / d A_k, summed over k and passed through a ReLU. The detection paper
    reads these maps layer by layer (VGG16 `block2_conv1`, `block4_conv1`,
    `block5_pool`) to show where adversarial noise takes hold.

    Args:
        model: a Keras classifier (functional or Sequential).
        x: images (N, H, W, C).
        layers: names of layers of the model whose output is a feature map (N, h, w, c).
        target: `"predicted"`, `"true"` (with `labels`) or class indices, as in `gradient`.
        labels: true classes, for `target="true"`.
        batch_size: images per compiled step.
        upsample: resize each map bilinearly to the input's (H, W); False keeps the
            layer's (h, w).

    Returns:
        A dict from layer name to float32 maps (N, H, W) (or (N, h, w)), unnormalised.

    Raises:
        ValueError: for a layer that does not exist, is not a feature map or sits in a
            nested sub-model, or for invalid images or arguments.

    Examples:
        >>> import numpy as np
        >>> from saliency_detect.models import mnist_net_f
        >>> from saliency_detect.saliency import grad_cam_layers
        >>> x = np.random.default_rng(0).random((2, 28, 28, 1), dtype=np.float32)
        >>> maps = grad_cam_layers(mnist_net_f(), x, layers=["block1_conv2", "block2_conv2"])
        >>> {name: m.shape for name, m in maps.items()}
        {'block1_conv2': (2, 28, 28), 'block2_conv2': (2, 28, 28)}
    """
    names = check_layers(model, layers)
    upsample = bool(upsample)

    maps = run_method(
        model, x, target=target, labels=labels, batch_size=batch_size, rule="vanilla",
        build=_grad_cam_step, constants={"names": tuple(names), "upsample": upsample},
    )  # fmt: skip
    return dict(zip(names, maps, strict=True))


def _grad_cam_step(prepared, *, names, upsample):
    feature_model = prepared.feature_model(names)

    def step(x, target):
        def score_fn(z):
            *features, logits = feature_model(z, training=False)
            return select_scores(logits, target)[0], features

        _, features, (_, *grads) = score_gradients(score_fn, x)
        return tuple(_cam(a, g, tf.shape(x)[1:3], upsample) for a, g in zip(features, grads, strict=True))

    return step


def grad_cam(
    model: keras.Model,
    x: ArrayLike,
    *,
    target: str | int | ArrayLike = "predicted",
    labels: ArrayLike | None = None,
    batch_size: int = 64,
    layer: str | None = None,
    upsample: bool = True,
) -> np.ndarray:
    """Grad-CAM (Selvaraju et al. 2017) at one layer, by default the last convolution.

    Args:
        model: a Keras classifier (functional or Sequential).
        x: images (N, H, W, C).
        target: `"predicted"`, `"true"` (with `labels`) or class indices, as in `gradient`.
        labels: true classes, for `target="true"`.
        batch_size: images per compiled step.
        layer: name of a layer whose output is a feature map; None takes the model's last
            convolution layer.
        upsample: resize the map bilinearly to the input's (H, W) (default); False keeps
            the layer's resolution.

    Returns:
        float32 maps (N, H, W), or (N, h, w) with `upsample=False`; non-negative and
        unnormalised.

    Raises:
        ValueError: for a layer that does not exist or is not a feature map, a model
            without convolutions, or invalid images or arguments.

    Examples:
        >>> import numpy as np
        >>> from saliency_detect.models import mnist_net_f
        >>> from saliency_detect.saliency import grad_cam
        >>> x = np.random.default_rng(0).random((2, 28, 28, 1), dtype=np.float32)
        >>> grad_cam(mnist_net_f(), x).shape, grad_cam(mnist_net_f(), x, upsample=False).shape
        ((2, 28, 28), (2, 8, 8))
    """
    names = check_layers(model, None if layer is None else [layer])
    maps = grad_cam_layers(
        model, x, layers=names, target=target, labels=labels, batch_size=batch_size, upsample=upsample
    )
    return maps[names[0]]
