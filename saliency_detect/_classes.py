"""Which class a per-image score refers to: one convention for saliency, attacks and the detector.

Class indices travel as int32 tensors in which `PREDICTED` (-1) stands for "the class
the model predicts for this image", resolved inside the compiled step by
`resolve_classes`, so one graph serves given classes and predicted ones.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

#: The marker for "the model's predicted class" in an int32 class vector.
PREDICTED = -1


def predicted_classes(n: int) -> np.ndarray:
    """An int32 class vector of `n` images, each "the model's predicted class"."""
    return np.full(n, PREDICTED, np.int32)


def resolve_classes(logits: tf.Tensor, classes: tf.Tensor) -> tf.Tensor:
    """`classes` with every `PREDICTED` entry replaced by the argmax of its row of `logits`."""
    return tf.where(classes >= 0, classes, tf.argmax(logits, axis=-1, output_type=tf.int32))
