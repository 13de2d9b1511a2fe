"""The library's one use of `tf.GradientTape`.

Saliency methods, Grad-CAM, the attacks and the Mahalanobis detector's pre-processing
differentiate a per-example score through this function, so there is a single place to
reason about watched tensors, unconnected gradients and dtypes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import tensorflow as tf

ScoreFn = Callable[[tf.Tensor], tuple[tf.Tensor, Sequence[tf.Tensor]]]


def score_gradients(
    score_fn: ScoreFn, x: tf.Tensor
) -> tuple[tf.Tensor, Sequence[tf.Tensor], list[tf.Tensor]]:
    """Differentiate per-example scores with respect to the input and intermediate tensors.

    Args:
        score_fn: maps `x` to `(scores, intermediates)`: scores of shape (N,) and a
            sequence of tensors computed from `x` (e.g. a convolution layer's output) whose
            gradients are wanted too.
        x: the input batch.

    Returns:
        `(scores, intermediates, [d scores/d x, d scores/d intermediate_1, ...])`. The gradient of the sum
        of the scores is taken; with the model in inference mode the examples do not
        interact, so each example's slice is the gradient of its own score. Unconnected
        gradients are zeros, never None.
    """
    with tf.GradientTape() as tape:
        tape.watch(x)
        scores, intermediates = score_fn(x)
    grads = tape.gradient(scores, [x, *intermediates], unconnected_gradients=tf.UnconnectedGradients.ZERO)
    return scores, intermediates, grads
