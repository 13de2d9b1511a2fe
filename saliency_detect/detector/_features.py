"""The detector's input, computed inside the graph: the image, its saliency, or both stacked.

`SaliencyFeatures` is a Keras layer wrapping the classifier f. On a batch of images it
runs f once under the library's gradient tape (`_gradients.score_gradients`), takes the
gradient of the predicted class's logit with respect to the image (the detection paper's
saliency) and returns the detector's input. Because it is a layer, the same computation
serves training (inside `Model.fit`), scoring, the exported guard and the adaptive
attack, which differentiates through it (second-order gradients).
"""

from __future__ import annotations

from collections.abc import Callable

import keras
import tensorflow as tf

from saliency_detect._classes import PREDICTED
from saliency_detect._gradients import score_gradients
from saliency_detect._prepared import Prepared, prepare
from saliency_detect._validation import one_of
from saliency_detect.saliency._common import select_scores

#: Saliency methods the detector can compute in one gradient pass inside its graph.
DETECTOR_SALIENCY = {"gradient": "vanilla", "guided_backprop": "guided", "deconvnet": "deconvnet"}
#: What the detector sees: the paper's stacked input, or one of the two ablations.
INPUT_MODES = ("image+saliency", "image", "saliency")


class _Unwatched:
    """Holds a `Prepared` view without Keras tracking it (its variables are not the layer's)."""

    def __init__(self, prepared: Prepared):
        self.prepared = prepared


#: How `SaliencyFeatures` turns the gradient into the saliency channel.
NORMALIZATIONS = ("global", "image")


@keras.saving.register_keras_serializable(package="saliency_detect")
class SaliencyFeatures(keras.layers.Layer):
    """Maps images to the detector's input: `[image ‖ scale · saliency]` on the channel axis.

    Args:
        classifier: the classifier f (logits, or a softmax read at its input).
        saliency: `"gradient"`, `"guided_backprop"` or `"deconvnet"`.
        input_mode: `"image+saliency"`, `"image"` or `"saliency"`.
        scale: multiplies the saliency map, so its values are of the image's order
            (`normalization="global"` only).
        normalization: how the gradient becomes the saliency channel. `"global"`: the
            signed gradient times `scale` (one factor for every image). `"image"`: the
            gradient's magnitude divided by its largest value in each image, in [0, 1]
            (Simonyan et al.'s saliency map, as saliency maps are drawn).
        return_logits: also return f's logits from the same forward pass.
    """

    def __init__(
        self,
        classifier: keras.Model,
        saliency: str = "gradient",
        input_mode: str = "image+saliency",
        scale: float = 1.0,
        return_logits: bool = False,
        normalization: str = "global",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.classifier = classifier
        self.saliency = saliency
        self.input_mode = input_mode
        self.scale = float(scale)
        self.return_logits = bool(return_logits)
        self.normalization = one_of(NORMALIZATIONS).check(normalization, "normalization")
        self._view = _Unwatched(prepare(classifier, DETECTOR_SALIENCY[saliency]))

    @property
    def metrics(self):
        # A compiled classifier carries its own training metrics; they are not the
        # detector's, and a training model that listed them would fail on unbuilt ones.
        return []

    def call(self, images):
        prepared = self._view.prepared
        # Views that copy f's weights (a fused-softmax head, ReLU-rule clones) re-read them
        # here, so a loaded artefact never runs on the copies' initial values.
        prepared.refresh()
        logits, features = detector_input(
            prepared,
            images,
            input_mode=self.input_mode,
            scale=self.scale,
            normalization=self.normalization,
            logits=self.return_logits,
        )
        return (logits, features) if self.return_logits else features

    def compute_output_shape(self, input_shape):
        channels = input_shape[-1] * (2 if self.input_mode == "image+saliency" else 1)
        features = (*input_shape[:-1], channels)
        if self.return_logits:
            return (input_shape[0], self._view.prepared.num_classes(tuple(input_shape[1:]))), features
        return features

    def get_config(self):
        return {
            **super().get_config(),
            "classifier": keras.saving.serialize_keras_object(self.classifier),
            "saliency": self.saliency,
            "input_mode": self.input_mode,
            "scale": self.scale,
            "return_logits": self.return_logits,
            "normalization": self.normalization,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["classifier"] = keras.saving.deserialize_keras_object(config["classifier"])
        return cls(**config)


def detector_input(
    prepared: Prepared,
    images: tf.Tensor,
    *,
    input_mode: str,
    scale: float,
    normalization: str,
    logits: bool = False,
) -> tuple[tf.Tensor | None, tf.Tensor]:
    """`(f's logits or None, the detector's input)` of a batch, as TensorFlow ops.

    The one computation behind `SaliencyFeatures` and the compiled `features_step`: the
    gradient of the predicted class's logit (one pass under `score_gradients`), scaled
    or normalised per image, stacked on the image or alone. Logits are computed for
    `input_mode="image"` only when asked for.
    """
    if input_mode == "image":
        return (prepared.model(images, training=False) if logits else None), images

    def score_fn(z):
        outputs = prepared.model(z, training=False)
        return select_scores(outputs, tf.fill(tf.shape(outputs)[:1], PREDICTED))[0], (outputs,)

    _, (outputs,), grads = score_gradients(score_fn, images)
    if normalization == "image":
        magnitude = tf.abs(grads[0])
        peak = tf.reduce_max(magnitude, axis=tf.range(1, tf.rank(magnitude)), keepdims=True)
        saliency = magnitude / tf.maximum(peak, 1e-12)
    else:
        saliency = grads[0] * scale
    features = saliency if input_mode == "saliency" else tf.concat([images, saliency], axis=-1)
    return outputs, features


def features_step(prepared: Prepared, *, input_mode: str, normalization: str):
    """The compiled-step builder (`Prepared.compiled`) of the detector's input of a batch.

    The saliency scale is an input, not a constant: detectors fitted with different
    scales (the global normalization's, one per fit) share one graph.
    """

    def step(images, scale):
        _, features = detector_input(
            prepared, images, input_mode=input_mode, scale=scale, normalization=normalization
        )
        return features

    return step


def compiled_features(
    classifier: keras.Model,
    image_shape: tuple[int, ...],
    *,
    saliency: str,
    input_mode: str,
    scale: float,
    normalization: str,
) -> Callable[[tf.Tensor], tf.Tensor]:
    """The detector's input of an image batch, through one compiled step per classifier.

    The step is cached with the classifier's other steps: every detector of one
    classifier with the same saliency, input and normalization shares it, so fitting many
    detectors (an experiment) traces the saliency once, not once per fit.
    """
    prepared = prepare(classifier, DETECTOR_SALIENCY[saliency])
    constants = {"input_mode": input_mode, "normalization": normalization}
    signature = [tf.TensorSpec((None, *image_shape), tf.float32), tf.TensorSpec((), tf.float32)]
    step = prepared.compiled(features_step, constants, signature)
    scale = tf.constant(float(scale), tf.float32)
    return lambda images: step(images, scale)
