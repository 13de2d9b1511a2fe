"""The papers' networks: MNIST-NET, CIFAR10-NET, VGG16 (classifier f and detector D), ResNet-20.

Every builder takes `input_shape` and `num_classes` and returns an uncompiled functional
`keras.Model` whose output is **logits** (no softmax): the class scores saliency is taken
of, and what `train_classifier` trains with `from_logits=True`. The detectors D end in
`num_classes` logits too (one by default: the logit of "adversarial").
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import keras
from keras import layers

from saliency_detect._registry import Registry
from saliency_detect._validation import check_input_shape, check_positive_int

# ImageNet channel means of the Caffe-trained VGG16 weights, in RGB order (0-255 scale).
_VGG_MEAN_RGB = (123.68, 116.779, 103.939)


def _conv_stack(
    x: keras.KerasTensor, blocks: list[tuple[int, int]], dense: list[int], dropout: float
) -> keras.KerasTensor:
    """Blocks of (filters, number of 3x3 ReLU convolutions) each ending in 2x2 max pooling."""
    for b, (filters, n_conv) in enumerate(blocks, start=1):
        for c in range(1, n_conv + 1):
            x = layers.Conv2D(filters, 3, activation="relu", name=f"block{b}_conv{c}")(x)
        x = layers.MaxPooling2D(2, name=f"block{b}_pool")(x)
    x = layers.Flatten(name="flatten")(x)
    for i, units in enumerate(dense, start=1):
        x = layers.Dense(units, activation="relu", name=f"fc{i}")(x)
        if dropout and i == 1:
            x = layers.Dropout(dropout, name=f"dropout{i}")(x)
    return x


def _inputs(input_shape, num_classes, *, min_classes: int = 1) -> tuple[keras.KerasTensor, int]:
    shape = check_input_shape(input_shape)
    n = check_positive_int(num_classes, "num_classes")
    if n < min_classes:
        raise ValueError(f"`num_classes` must be at least {min_classes} for a classifier. Received: {n}")
    return keras.Input(shape=shape, name="image"), n


def mnist_net_f(input_shape: tuple[int, int, int] = (28, 28, 1), num_classes: int = 10) -> keras.Model:
    """MNIST-NET-f, the MNIST classifier of the detection paper (Figure 2).

    Two blocks of two 3x3 ReLU convolutions (32, then 64 filters) each followed by 2x2
    max pooling, then two 200-unit ReLU layers (dropout 0.5 after the first) and a
    linear layer of `num_classes` logits: 312,202 parameters at 28x28x1.

    Args:
        input_shape: `(height, width, channels)` of the images, at least 14x14.
        num_classes: number of classes (logits).

    Returns:
        An uncompiled `keras.Model` mapping images to logits.

    Raises:
        ValueError: if `input_shape` or `num_classes` is invalid.

    Examples:
        >>> from saliency_detect.models import mnist_net_f
        >>> model = mnist_net_f()
        >>> model.output_shape, model.count_params()
        ((None, 10), 312202)
    """
    inputs, n = _inputs(input_shape, num_classes, min_classes=2)
    x = _conv_stack(inputs, [(32, 2), (64, 2)], [200, 200], dropout=0.5)
    return keras.Model(inputs, layers.Dense(n, name="logits")(x), name="mnist_net_f")


def mnist_net_d(input_shape: tuple[int, int, int] = (28, 28, 2), num_classes: int = 1) -> keras.Model:
    """MNIST-NET-D, the binary detector for MNIST: smaller than the classifier.

    Its input is the image and its saliency map stacked on the channel axis (2 channels
    for MNIST). Two blocks of one 3x3 ReLU convolution (16, then 32 filters) with 2x2 max
    pooling, a 64-unit ReLU layer and `num_classes` logits (1: the logit of
    "adversarial").

    Args:
        input_shape: `(height, width, channels)`; channels = image channels x 2 for
            image+saliency input.
        num_classes: number of output logits (1 for a sigmoid detector, 2 for softmax).

    Returns:
        An uncompiled `keras.Model`.

    Raises:
        ValueError: if `input_shape` or `num_classes` is invalid.

    Examples:
        >>> from saliency_detect.models import mnist_net_d
        >>> mnist_net_d().output_shape
        (None, 1)
    """
    inputs, n = _inputs(input_shape, num_classes)
    x = _conv_stack(inputs, [(16, 1), (32, 1)], [64], dropout=0.0)
    return keras.Model(inputs, layers.Dense(n, name="logits")(x), name="mnist_net_d")


def cifar10_net_f(input_shape: tuple[int, int, int] = (32, 32, 3), num_classes: int = 10) -> keras.Model:
    """CIFAR10-NET-f, the CIFAR-10 classifier of the detection paper.

    Two blocks of two 3x3 ReLU convolutions (64, then 128 filters) each followed by 2x2
    max pooling, two 256-unit ReLU layers (dropout 0.5 after the first) and
    `num_classes` logits.

    Args:
        input_shape: `(height, width, channels)` of the images, at least 14x14.
        num_classes: number of classes (logits).

    Returns:
        An uncompiled `keras.Model` mapping images to logits.

    Raises:
        ValueError: if `input_shape` or `num_classes` is invalid.

    Examples:
        >>> from saliency_detect.models import cifar10_net_f
        >>> cifar10_net_f().output_shape
        (None, 10)
    """
    inputs, n = _inputs(input_shape, num_classes, min_classes=2)
    x = _conv_stack(inputs, [(64, 2), (128, 2)], [256, 256], dropout=0.5)
    return keras.Model(inputs, layers.Dense(n, name="logits")(x), name="cifar10_net_f")


def cifar10_net_d(input_shape: tuple[int, int, int] = (32, 32, 6), num_classes: int = 1) -> keras.Model:
    """CIFAR10-NET-D, the binary detector for CIFAR-10 (image + saliency: 6 channels).

    Two blocks of two 3x3 ReLU convolutions (32, then 64 filters) with 2x2 max pooling,
    a 128-unit ReLU layer and `num_classes` logits.

    Args:
        input_shape: `(height, width, channels)`.
        num_classes: number of output logits (1 for a sigmoid detector).

    Returns:
        An uncompiled `keras.Model`.

    Raises:
        ValueError: if `input_shape` or `num_classes` is invalid.

    Examples:
        >>> from saliency_detect.models import cifar10_net_d
        >>> cifar10_net_d().input_shape
        (None, 32, 32, 6)
    """
    inputs, n = _inputs(input_shape, num_classes)
    x = _conv_stack(inputs, [(32, 2), (64, 2)], [128], dropout=0.0)
    return keras.Model(inputs, layers.Dense(n, name="logits")(x), name="cifar10_net_d")


def _vgg16(input_shape, num_classes, *, weights, head_units: int, name: str, min_classes: int) -> keras.Model:
    inputs, n = _inputs(input_shape, num_classes, min_classes=min_classes)
    channels = inputs.shape[-1]
    if weights is not None and channels != 3:
        raise ValueError(
            f"`weights` needs 3-channel RGB images, as VGG16's pretrained weights do. "
            f"Received: input_shape={tuple(inputs.shape[1:])}, weights={weights!r}"
        )
    with warnings.catch_warnings():
        # Keras warns for channel counts other than 1 or 3; the detector takes 6 on purpose.
        warnings.filterwarnings("ignore", message="This model usually expects")
        base = keras.applications.VGG16(
            include_top=False, weights=weights, input_shape=tuple(inputs.shape[1:])
        )
    x = inputs
    if weights is not None:
        # The pretrained weights expect Caffe preprocessing: BGR, 0-255, mean removed.
        # Scale [0, 1] to [0, 255] and remove the mean here; the RGB->BGR flip is folded
        # into the first convolution's kernel below, so the model stays one plain graph.
        x = layers.Rescaling(255.0, offset=[-m for m in _VGG_MEAN_RGB], name="vgg_preprocess")(x)
    # Rebuild VGG16's layers into this graph (copies with the same weights), so that
    # `block2_conv1` etc. are layers of the returned model, not of a nested sub-model.
    for layer in base.layers[1:]:
        clone = layer.__class__.from_config(layer.get_config())
        x = clone(x)
        kernel_and_bias = layer.get_weights()
        if kernel_and_bias:
            if weights is not None and layer.name == "block1_conv1":
                kernel_and_bias[0] = kernel_and_bias[0][:, :, ::-1, :]
            clone.set_weights(kernel_and_bias)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(head_units, activation="relu", name="fc1")(x)
    x = layers.Dropout(0.5, name="dropout1")(x)
    return keras.Model(inputs, layers.Dense(n, name="logits")(x), name=name)


def vgg16_f(
    input_shape: tuple[int, int, int] = (224, 224, 3), num_classes: int = 10, *, weights: str | None = None
) -> keras.Model:
    """VGG16-f, the classifier of the detection paper's 10-class ImageNet experiment.

    The 13 convolution layers of `keras.applications.VGG16` (layer names `block1_conv1`
    … `block5_pool`, flat in this model) and a new head: Flatten, a 256-unit ReLU layer
    with dropout 0.5, and `num_classes` logits. The model takes images in [0, 1];
    with pretrained weights it does the Caffe preprocessing the weights expect itself.

    Args:
        input_shape: `(height, width, 3)`, at least 32x32.
        num_classes: number of classes (logits).
        weights: None (random initialisation, the default: no download), `"imagenet"`
            (Keras downloads the ImageNet weights) or the path to a VGG16 no-top weights
            file (`vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5`).

    Returns:
        An uncompiled `keras.Model` mapping images to logits.

    Raises:
        ValueError: if the shape, class count or weights are invalid.

    Examples:
        >>> from saliency_detect.models import vgg16_f
        >>> model = vgg16_f(input_shape=(32, 32, 3))
        >>> model.get_layer("block5_pool").output.shape
        (None, 1, 1, 512)
    """
    return _vgg16(input_shape, num_classes, weights=weights, head_units=256, name="vgg16_f", min_classes=2)


def vgg16_d(input_shape: tuple[int, int, int] = (224, 224, 6), num_classes: int = 1) -> keras.Model:
    """VGG16-D, the detector of the ImageNet experiment: VGG16 on image + saliency.

    The VGG16 convolution stack, randomly initialised, on 6-channel inputs (RGB image
    and its 3-channel saliency), a 256-unit head and `num_classes` logits.

    Args:
        input_shape: `(height, width, channels)`, at least 32x32.
        num_classes: number of output logits (1 for a sigmoid detector).

    Returns:
        An uncompiled `keras.Model`.

    Raises:
        ValueError: if `input_shape` or `num_classes` is invalid.

    Examples:
        >>> from saliency_detect.models import vgg16_d
        >>> vgg16_d(input_shape=(32, 32, 6)).output_shape
        (None, 1)
    """
    return _vgg16(input_shape, num_classes, weights=None, head_units=256, name="vgg16_d", min_classes=1)


def resnet20(
    input_shape: tuple[int, int, int] = (32, 32, 3), num_classes: int = 10, *, weight_decay: float = 1e-4
) -> keras.Model:
    """ResNet-20 for CIFAR-10 (He et al. 2016, section 4.2), the attention paper's model.

    A 3x3 convolution of 16 filters, then three stages of three basic residual blocks
    (16, 32, 64 filters; stride 2 at the start of stages 2 and 3, with a 1x1 projection
    shortcut), batch normalisation, ReLU, global average pooling and `num_classes`
    logits: 274,042 parameters at 32x32x3 (272,474 of them trainable).

    Args:
        input_shape: `(height, width, channels)`.
        num_classes: number of classes (logits).
        weight_decay: L2 penalty on the convolution and dense kernels (0 disables it).

    Returns:
        An uncompiled `keras.Model` mapping images to logits. The last convolution
        layer, for Grad-CAM, is `stage3_block3_conv2`.

    Raises:
        ValueError: if `input_shape` or `num_classes` is invalid.

    Examples:
        >>> from saliency_detect.models import resnet20
        >>> resnet20().count_params()
        274042
    """
    inputs, n = _inputs(input_shape, num_classes, min_classes=2)
    reg = keras.regularizers.L2(weight_decay) if weight_decay else None

    def conv(x, filters, kernel, stride, name):
        return layers.Conv2D(
            filters,
            kernel,
            strides=stride,
            padding="same",
            use_bias=False,
            kernel_initializer="he_normal",
            kernel_regularizer=reg,
            name=name,
        )(x)

    x = conv(inputs, 16, 3, 1, "stem_conv")
    x = layers.BatchNormalization(name="stem_bn")(x)
    x = layers.Activation("relu", name="stem_relu")(x)
    for stage, filters in enumerate((16, 32, 64), start=1):
        for block in range(1, 4):
            prefix = f"stage{stage}_block{block}"
            stride = 2 if stage > 1 and block == 1 else 1
            shortcut = x
            y = conv(x, filters, 3, stride, f"{prefix}_conv1")
            y = layers.BatchNormalization(name=f"{prefix}_bn1")(y)
            y = layers.Activation("relu", name=f"{prefix}_relu1")(y)
            y = conv(y, filters, 3, 1, f"{prefix}_conv2")
            y = layers.BatchNormalization(name=f"{prefix}_bn2")(y)
            if stride != 1 or shortcut.shape[-1] != filters:
                shortcut = conv(shortcut, filters, 1, stride, f"{prefix}_shortcut")
                shortcut = layers.BatchNormalization(name=f"{prefix}_shortcut_bn")(shortcut)
            x = layers.Add(name=f"{prefix}_add")([shortcut, y])
            x = layers.Activation("relu", name=f"{prefix}_relu2")(x)
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    outputs = layers.Dense(n, kernel_regularizer=reg, name="logits")(x)
    return keras.Model(inputs, outputs, name="resnet20")


#: Every builder is called `builder(input_shape, num_classes, **options)`: no inputs.
_BUILDERS = Registry(
    "model",
    {
        "mnist_net_f": mnist_net_f,
        "mnist_net_d": mnist_net_d,
        "cifar10_net_f": cifar10_net_f,
        "cifar10_net_d": cifar10_net_d,
        "vgg16_f": vgg16_f,
        "vgg16_d": vgg16_d,
        "resnet20": resnet20,
    },
    inputs=0,
)


def available_models() -> dict[str, dict[str, Any]]:
    """Return every zoo builder's name with its keyword parameters and their defaults.

    The same shape as `attacks.available_attacks()` and `saliency.available_methods()`.

    Examples:
        >>> from saliency_detect.models import available_models
        >>> available_models()["resnet20"]
        {'input_shape': (32, 32, 3), 'num_classes': 10, 'weight_decay': 0.0001}
    """
    return _BUILDERS.defaults()


def get_model_builder(name: str) -> Callable[..., keras.Model]:
    """Return the zoo builder called `name`.

    Args:
        name: one of `available_models()`, e.g. `"mnist_net_f"`.

    Returns:
        The builder function, called as `builder(input_shape, num_classes)`.

    Raises:
        ValueError: for an unknown name; the message lists the valid ones.

    Examples:
        >>> from saliency_detect.models import get_model_builder
        >>> get_model_builder("resnet20").__name__
        'resnet20'
    """
    return _BUILDERS.lookup(name)
