"""Jacobian-based Saliency Map Attack with the paper's pairwise saliency map."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf
from numpy.typing import ArrayLike

from saliency_detect._gradients import score_gradients
from saliency_detect._prepared import Prepared, run_compiled
from saliency_detect._validation import check_positive_float
from saliency_detect.attacks._common import resolve_labels, setup
from saliency_detect.models._training import predict_labels

# Elements of one chunk of the pair map (batch x rows x features): ~64 MB of float32.
_PAIR_CHUNK = 1 << 24


def _logit_gradients(
    prepared: Prepared, x: tf.Tensor, classes: tf.Tensor
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """(logits Z, d Z_class / dx, d sum_{j != class} Z_j / dx), gradients flattened per image."""

    def target_score(z):
        logits = prepared.model(z, training=False)
        return tf.gather(logits, classes, batch_dims=1), (logits,)

    def others_score(z):
        logits = prepared.model(z, training=False)
        return tf.reduce_sum(logits, axis=-1) - tf.gather(logits, classes, batch_dims=1), ()

    n = tf.shape(x)[0]
    _, (logits,), (g_target, _) = score_gradients(target_score, x)
    g_others = score_gradients(others_score, x)[2][0]
    return logits, tf.reshape(g_target, [n, -1]), tf.reshape(g_others, [n, -1])


def _best_pairs(
    alpha: tf.Tensor, beta: tf.Tensor, domain: tf.Tensor
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """The pair (p, q) maximising alpha_pq * |beta_pq| with alpha_pq > 0 > beta_pq, per image.

    alpha_pq = alpha_p + alpha_q and beta_pq = beta_p + beta_q (Papernot et al. 2016,
    Algorithm 3), over features p != q of the search domain. Where no pair meets the sign
    conditions (the paper's rule would stall), the pair with the largest
    alpha_pq - beta_pq is taken instead. The (n x n) map is scanned in row chunks so
    memory stays bounded. Returns (p, q, found): found is False only when the search
    domain holds fewer than two features.
    """
    batch, n = tf.shape(alpha)[0], tf.shape(alpha)[1]
    rows = tf.maximum(1, _PAIR_CHUNK // tf.maximum(1, batch * n))
    a_q, b_q, d_q = alpha[:, None, :], beta[:, None, :], domain[:, None, :]
    columns = tf.range(n)[None, None, :]

    def running_best(score, start, best_score, best_index):
        flat = tf.reshape(score, [batch, -1])
        chunk_best = tf.reduce_max(flat, axis=1)
        chunk_index = tf.argmax(flat, axis=1, output_type=tf.int32) + start * n
        better = chunk_best > best_score
        return tf.where(better, chunk_best, best_score), tf.where(better, chunk_index, best_index)

    def body(start, strict_score, strict_index, loose_score, loose_index):
        stop = tf.minimum(start + rows, n)
        a_pq = alpha[:, start:stop, None] + a_q
        b_pq = beta[:, start:stop, None] + b_q
        p_index = tf.range(start, stop)[None, :, None]
        allowed = domain[:, start:stop, None] & d_q & tf.not_equal(p_index, columns)
        none = tf.fill(tf.shape(a_pq), tf.constant(-np.inf, alpha.dtype))
        strict = tf.where(allowed & (a_pq > 0) & (b_pq < 0), a_pq * -b_pq, none)
        loose = tf.where(allowed, a_pq - b_pq, none)
        return (
            stop,
            *running_best(strict, start, strict_score, strict_index),
            *running_best(loose, start, loose_score, loose_index),
        )

    lowest = tf.fill([batch], tf.constant(-np.inf, alpha.dtype))
    first = tf.zeros([batch], tf.int32)
    _, strict_score, strict_index, loose_score, loose_index = tf.while_loop(
        lambda start, *_: start < n, body, (tf.constant(0), lowest, first, lowest, first)
    )
    index = tf.where(strict_score > -np.inf, strict_index, loose_index)
    return index // n, index % n, loose_score > -np.inf


def jsma(
    model: keras.Model,
    x: ArrayLike,
    y: ArrayLike | None = None,
    *,
    clip_range: tuple[float, float] = (0.0, 1.0),
    targeted: bool = False,
    batch_size: int = 128,
    random_state: int | None = None,
    theta: float = 1.0,
    gamma: float = 0.1,
) -> np.ndarray:
    """Jacobian-based Saliency Map Attack (Papernot et al. 2016).

    Papernot, McDaniel, Jha, Fredrikson, Celik & Swami, "The limitations of deep learning
    in adversarial settings", IEEE EuroS&P 2016.

    An L0 attack. At each step the two features (p, q) with the largest pairwise saliency
    `alpha_pq * |beta_pq|` — alpha from the target logit's gradient, beta from the sum of
    the other logits' gradients, with alpha_pq > 0 > beta_pq — are moved by `theta` times
    the clip range's width (and clipped), and leave the search domain once at their
    bound. The attack stops per image as soon as it succeeds or has changed `gamma` of
    the features. Where no pair meets the paper's sign conditions, the pair with the
    largest alpha_pq - beta_pq is moved instead, so an image does not stall. Untargeted
    (the default), the source class's logit is driven down by the same rule. Images are
    attacked in batches, the pair map scanned in row chunks so memory stays bounded (ART
    loops over images one at a time).

    Args:
        model: a Keras classifier.
        x: clean images (N, H, W, C) in `clip_range`.
        y: untargeted: the true labels (None: the model's predictions); targeted: the
            target classes (None: a random class other than the prediction).
        clip_range: `(low, high)` valid pixel values.
        targeted: reach the target class instead of leaving the source class.
        batch_size: images per compiled step.
        random_state: seed for random targets.
        theta: change per selected feature, as a share of the clip range (+1: set to the
            maximum, as the paper on MNIST; negative values decrease features).
        gamma: largest share of features that may change (0.1 = 10%).

    Returns:
        Adversarial images, float32, same shape as `x`, inside `clip_range`.

    Raises:
        ValueError: for invalid images, labels, `theta` = 0 or `gamma` outside (0, 1].

    Examples:
        >>> import numpy as np
        >>> from saliency_detect.attacks import jsma
        >>> from saliency_detect.models import mnist_net_f
        >>> x = np.random.default_rng(0).random((2, 28, 28, 1), dtype=np.float32) * 0.5
        >>> x_adv = jsma(mnist_net_f(), x, gamma=0.02)
        >>> bool(np.count_nonzero(x_adv != x) <= 2 * int(0.02 * 784))
        True
    """
    targets_given = y is not None
    prepared, x, labels = setup(
        model, x, y, clip_range=clip_range, targeted=targeted and targets_given, batch_size=batch_size
    )
    if isinstance(theta, bool) or not isinstance(theta, (int, float)) or not np.isfinite(theta) or theta == 0:
        raise ValueError(f"`theta` must be a non-zero number. Received: theta={theta!r}")
    gamma = check_positive_float(gamma, "gamma")
    if gamma > 1:
        raise ValueError(f"`gamma` must lie in (0, 1]. Received: gamma={gamma!r}")
    if targeted and not targets_given:
        predicted = predict_labels(model, x, batch_size=batch_size, clip_range=None)
        classes = prepared.num_classes(x.shape[1:])
        shift = np.random.default_rng(random_state).integers(1, classes, size=len(x))
        labels = ((predicted + shift) % classes).astype(np.int32)
    low, high = float(clip_range[0]), float(clip_range[1])
    n_features = int(np.prod(x.shape[1:]))
    max_changes = int(np.floor(gamma * n_features))
    step_size = float(theta) * (high - low)
    increase = theta > 0

    def build(prepared):
        def step(x, labels):
            shape, batch = tf.shape(x), tf.shape(x)[0]
            classes = resolve_labels(prepared.model(x, training=False), labels)
            flat = tf.reshape(x, [batch, -1])
            domain = flat < high if increase else flat > low
            changed = tf.zeros([batch], tf.int32)

            def cond(adv, changed, domain, active):
                return tf.reduce_any(active)

            def body(adv, changed, domain, active):
                # The gradient pass's logits tell which images are done, before they move.
                logits, g_class, g_others = _logit_gradients(prepared, adv, classes)
                predicted = tf.argmax(logits, axis=-1, output_type=tf.int32)
                reached = tf.equal(predicted, classes) if targeted else tf.not_equal(predicted, classes)
                active = active & tf.logical_not(reached) & (changed + 2 <= max_changes)
                if not targeted:  # drive the source class down: swap the roles' signs
                    g_class, g_others = -g_class, -g_others
                if not increase:
                    g_class, g_others = -g_class, -g_others
                p, q, found = _best_pairs(g_class, g_others, domain)
                move = active & found
                hot = tf.one_hot(p, tf.shape(domain)[1]) + tf.one_hot(q, tf.shape(domain)[1])
                hot *= tf.cast(move, hot.dtype)[:, None]
                flat_adv = tf.clip_by_value(tf.reshape(adv, [batch, -1]) + step_size * hot, low, high)
                at_bound = flat_adv >= high if increase else flat_adv <= low
                domain = domain & ~((hot > 0) & at_bound)
                changed += 2 * tf.cast(move, tf.int32)
                adv = tf.reshape(flat_adv, shape)
                return adv, changed, domain, active & found

            adv, *_ = tf.while_loop(cond, body, (x, changed, domain, tf.ones([batch], tf.bool)))
            return adv

        return step

    key = ("jsma", low, high, targeted, step_size, max_changes)
    return run_compiled(prepared, x, labels, key=key, build=build, batch_size=batch_size)
