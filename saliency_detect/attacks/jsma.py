"""Jacobian-based Saliency Map Attack with the paper's pairwise saliency map."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf
from numpy.typing import ArrayLike

from saliency_detect._classes import resolve_classes
from saliency_detect._gradients import score_gradients
from saliency_detect._prepared import Prepared, run_compiled
from saliency_detect._validation import check_positive_float, validates_once
from saliency_detect.attacks._common import setup
from saliency_detect.models._training import predict_labels

# Elements of one chunk of the pair map (batch x rows x features): ~64 MB of float32.
_PAIR_CHUNK = 1 << 24
# What the saliency map differentiates: Carlini & Wagner (2017) call the two JSMA-F and JSMA-Z.
_OUTPUTS = ("probabilities", "logits")


def _class_gradients(
    prepared: Prepared, x: tf.Tensor, classes: tf.Tensor, probabilities: bool
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """(logits, d F_class / dx, d sum_{j != class} F_j / dx), gradients flattened per image.

    F is the softmax output when `probabilities`, else the logits. Softmax outputs sum
    to one, so the others' gradient is minus the class's and one backward pass suffices.
    """

    def class_score(z):
        logits = prepared.model(z, training=False)
        outputs = tf.nn.softmax(logits) if probabilities else logits
        return tf.gather(outputs, classes, batch_dims=1), (logits,)

    def others_score(z):
        logits = prepared.model(z, training=False)
        return tf.reduce_sum(logits, axis=-1) - tf.gather(logits, classes, batch_dims=1), ()

    features = int(np.prod(x.shape[1:]))
    _, (logits,), (g_class, _) = score_gradients(class_score, x)
    g_class = tf.reshape(g_class, [-1, features])
    if probabilities:
        return logits, g_class, -g_class
    g_others = score_gradients(others_score, x)[2][0]
    return logits, g_class, tf.reshape(g_others, [-1, features])


def _prefix_second_largest(values: tf.Tensor) -> tf.Tensor:
    """Per row, the second-largest of the values strictly before each position (-inf if none).

    A Hillis-Steele scan carrying (largest, second largest): ceil(log2 n) elementwise
    passes over the (batch, n) tensor instead of an (n x n) comparison.
    """
    lowest = tf.constant(-np.inf, values.dtype)
    pad = tf.fill(tf.shape(values[:, :1]), lowest)
    first = tf.concat([pad, values[:, :-1]], axis=1)  # exclusive: shift right by one
    n = tf.shape(values)[1]

    def body(shift, first, second):
        head = tf.fill(tf.shape(values[:, :shift]), lowest)
        first_before = tf.concat([head, first[:, : n - shift]], axis=1)
        second_before = tf.concat([head, second[:, : n - shift]], axis=1)
        second = tf.maximum(tf.minimum(first, first_before), tf.maximum(second, second_before))
        return shift * 2, tf.maximum(first, first_before), second

    _, _, second = tf.while_loop(
        lambda shift, *_: shift < n, body, (tf.constant(1), first, tf.fill(tf.shape(values), lowest))
    )
    return second


def _strict_candidates(alpha: tf.Tensor, beta: tf.Tensor, domain: tf.Tensor) -> tf.Tensor:
    """Indices (batch, k) of the features that can belong to the best pair, padded with -1.

    The best pair maximises (alpha_p + alpha_q) * (v_p + v_q) with v = -beta and both
    sums positive. If feature q' has alpha and v at least those of q, swapping q for q'
    keeps both sums positive and the product no smaller. Ordering the domain by alpha
    (descending, ties by v), a feature weakly dominated by two earlier features can
    always be swapped for one of them that is not its partner, so some best pair lies
    among the features dominated by at most one other: the first two Pareto layers of
    (alpha, v). On gradient maps these are a few dozen features, so the pair map is
    built on them instead of all n (the exact search is kept: the worst case is n).
    """
    lowest = tf.constant(-np.inf, alpha.dtype)
    a, v = tf.where(domain, alpha, lowest), tf.where(domain, -beta, lowest)
    by_v = tf.argsort(v, axis=1, direction="DESCENDING", stable=True)
    order = tf.gather(
        by_v,
        tf.argsort(tf.gather(a, by_v, batch_dims=1), axis=1, direction="DESCENDING", stable=True),
        batch_dims=1,
    )
    v_sorted = tf.gather(v, order, batch_dims=1)
    keep = tf.gather(domain, order, batch_dims=1) & (_prefix_second_largest(v_sorted) < v_sorted)
    k = tf.maximum(1, tf.reduce_max(tf.reduce_sum(tf.cast(keep, tf.int32), axis=1)))
    kept_first = tf.argsort(tf.cast(tf.logical_not(keep), tf.int32), axis=1, stable=True)[:, :k]
    indices = tf.gather(order, kept_first, batch_dims=1)
    return tf.where(tf.gather(keep, kept_first, batch_dims=1), indices, -1)


def _best_strict_pair(
    alpha: tf.Tensor, beta: tf.Tensor, allowed: tf.Tensor
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """(p, q, found): the allowed pair p != q maximising alpha_pq * |beta_pq| with alpha_pq > 0 > beta_pq.

    The (n x n) map is scanned in row chunks so memory stays bounded.
    """
    batch, n = tf.shape(alpha)[0], tf.shape(alpha)[1]
    rows = tf.maximum(1, _PAIR_CHUNK // tf.maximum(1, batch * n))
    a_q, b_q, d_q = alpha[:, None, :], beta[:, None, :], allowed[:, None, :]
    columns = tf.range(n)[None, None, :]
    lowest = tf.constant(-np.inf, alpha.dtype)

    def body(start, best_score, best_index):
        stop = tf.minimum(start + rows, n)
        a_pq = alpha[:, start:stop, None] + a_q
        b_pq = beta[:, start:stop, None] + b_q
        pair_ok = (
            allowed[:, start:stop, None] & d_q & tf.not_equal(tf.range(start, stop)[None, :, None], columns)
        )
        score = tf.where(pair_ok & (a_pq > 0) & (b_pq < 0), a_pq * -b_pq, lowest)
        flat = tf.reshape(score, [batch, -1])
        chunk_best = tf.reduce_max(flat, axis=1)
        chunk_index = tf.argmax(flat, axis=1, output_type=tf.int32) + start * n
        better = chunk_best > best_score
        return stop, tf.where(better, chunk_best, best_score), tf.where(better, chunk_index, best_index)

    _, best_score, best_index = tf.while_loop(
        lambda start, *_: start < n,
        body,
        (tf.constant(0), tf.fill([batch], lowest), tf.zeros([batch], tf.int32)),
    )
    return best_index // n, best_index % n, best_score > lowest


def _best_pairs(
    alpha: tf.Tensor, beta: tf.Tensor, domain: tf.Tensor
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """The pair (p, q) maximising alpha_pq * |beta_pq| with alpha_pq > 0 > beta_pq, per image.

    alpha_pq = alpha_p + alpha_q and beta_pq = beta_p + beta_q (Papernot et al. 2016,
    Algorithm 3), over features p != q of the search domain. The search is exact but
    runs on the few features that can win (`_strict_candidates`) rather than the whole
    (n x n) map. Where no pair meets the sign conditions (the paper's rule would
    stall), the pair with the largest alpha_pq - beta_pq, i.e. the top two of
    alpha - beta, is taken instead. Returns (p, q, found): found is False only when the
    search domain holds fewer than two features.
    """
    lowest = tf.constant(-np.inf, alpha.dtype)
    candidates = _strict_candidates(alpha, beta, domain)
    safe = tf.maximum(candidates, 0)
    p, q, strict = _best_strict_pair(
        tf.gather(alpha, safe, batch_dims=1), tf.gather(beta, safe, batch_dims=1), candidates >= 0
    )
    strict_p, strict_q = tf.gather(safe, p, batch_dims=1), tf.gather(safe, q, batch_dims=1)
    loose_score, loose_pair = tf.math.top_k(tf.where(domain, alpha - beta, lowest), k=2)
    found = loose_score[:, 1] > lowest
    p = tf.where(strict, strict_p, loose_pair[:, 0])
    q = tf.where(strict, strict_q, loose_pair[:, 1])
    return p, q, found


@validates_once
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
    output: str = "probabilities",
) -> np.ndarray:
    """Jacobian-based Saliency Map Attack (Papernot et al. 2016).

    Papernot, McDaniel, Jha, Fredrikson, Celik & Swami, "The limitations of deep learning
    in adversarial settings", IEEE EuroS&P 2016.

    An L0 attack. At each step the two features (p, q) with the largest pairwise saliency
    `alpha_pq * |beta_pq|` — alpha from the gradient of the target class's output F_t,
    beta from the gradient of the sum of the other outputs, with alpha_pq > 0 > beta_pq —
    are moved by `theta` times the clip range's width (and clipped), and leave the search
    domain once at their bound. The attack stops per image as soon as it succeeds or has
    changed `gamma` of the features. Where no pair meets the paper's sign conditions, the
    pair with the largest alpha_pq - beta_pq is moved instead, so an image does not
    stall. Untargeted (the default), the source class's output is driven down by the
    same rule.

    F is the softmax output by default (JSMA-F in Carlini & Wagner's 2017 naming), or the
    logits with `output="logits"` (JSMA-Z). The outputs of a softmax sum to one, so
    there beta = -alpha and the pairwise rule picks the two features with the largest
    alpha: one gradient per step instead of two. On an MNIST-NET-f it reached the +1
    target more often than the logits' map and than ART, with fewer pixels changed
    (docs/attacks.md). The search for the best pair is exact but does not build the
    (n x n) map: only features on the first two Pareto layers of (alpha, -beta) can
    form the best pair, usually a few dozen of n. Images are attacked in batches (ART
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
        output: what the saliency map differentiates: `"probabilities"` (the softmax
            of the logits, JSMA-F) or `"logits"` (JSMA-Z, as cleverhans).

    Returns:
        Adversarial images, float32, same shape as `x`, inside `clip_range`.

    Raises:
        ValueError: for invalid images, labels, `theta` = 0, `gamma` outside (0, 1] or an
            unknown `output`.

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
    if output not in _OUTPUTS:
        raise ValueError(f"`output` must be one of {list(_OUTPUTS)}. Received: output={output!r}")
    probabilities = output == "probabilities"
    low, high = float(clip_range[0]), float(clip_range[1])
    n_features = int(np.prod(x.shape[1:]))
    max_changes = int(np.floor(gamma * n_features))
    step_size = float(theta) * (high - low)
    increase = theta > 0

    constants = {
        "low": low,
        "high": high,
        "targeted": bool(targeted),
        "step_size": step_size,
        "increase": bool(increase),
        "max_changes": max_changes,
        "probabilities": probabilities,
    }
    return run_compiled(prepared, x, labels, build=_jsma_step, constants=constants, batch_size=batch_size)


def _jsma_step(prepared, *, low, high, targeted, step_size, increase, max_changes, probabilities):
    def step(x, labels):
        shape, batch = tf.shape(x), tf.shape(x)[0]
        classes = resolve_classes(prepared.model(x, training=False), labels)
        flat = tf.reshape(x, [batch, -1])
        domain = flat < high if increase else flat > low
        changed = tf.zeros([batch], tf.int32)

        def cond(adv, changed, domain, active):
            return tf.reduce_any(active)

        def body(adv, changed, domain, active):
            # The gradient pass's logits tell which images are done, before they move.
            logits, g_class, g_others = _class_gradients(prepared, adv, classes, probabilities)
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
