"""The detector's input, computed inside the graph: the image, its saliency, or both stacked.

`SaliencyFeatures` is a Keras layer wrapping the classifier f. On a batch of images it
runs f once under the library's gradient tape (`_gradients.score_gradients`), takes the
gradient of the predicted class's logit with respect to the image (the detection paper's
saliency) and returns the detector's input. Because it is a layer, the same computation
serves training (inside `Model.fit`), scoring, the exported guard and the adaptive
attack, which differentiates through it (second-order gradients).
"""

from __future__ import annotations

import keras
import tensorflow as tf

from saliency_detect._classes import PREDICTED
from saliency_detect._gradients import score_gradients
from saliency_detect._prepared import Prepared, prepare
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
        if normalization not in NORMALIZATIONS:
            raise ValueError(
                f"`normalization` must be one of {NORMALIZATIONS}. Received: normalization={normalization!r}"
            )
        self.normalization = normalization
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
        if self.input_mode == "image":
            if self.return_logits:
                return prepared.model(images, training=False), images
            return images

        def score_fn(z):
            logits = prepared.model(z, training=False)
            return select_scores(logits, tf.fill(tf.shape(logits)[:1], PREDICTED))[0], (logits,)

        _, (logits,), grads = score_gradients(score_fn, images)
        if self.normalization == "image":
            magnitude = tf.abs(grads[0])
            peak = tf.reduce_max(magnitude, axis=tf.range(1, tf.rank(magnitude)), keepdims=True)
            saliency = magnitude / tf.maximum(peak, 1e-12)
        else:
            saliency = grads[0] * self.scale
        features = saliency if self.input_mode == "saliency" else tf.concat([images, saliency], axis=-1)
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
