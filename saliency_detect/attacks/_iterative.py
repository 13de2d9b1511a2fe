"""The projected-gradient loop behind `bim`, `iterative_l2` and `pgd`."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from saliency_detect._classes import resolve_classes
from saliency_detect._prepared import run_compiled
from saliency_detect._validation import check_positive_float, check_positive_int
from saliency_detect.attacks._common import (
    as_column,
    check_eps,
    check_norm,
    clip_to_ball,
    image_seeds,
    loss_gradient,
    per_image,
    random_in_ball,
    setup,
    steepest_step,
)


def check_iterative(
    eps, norm, nb_iter, eps_iter, *, clip_range, image_shape
) -> tuple[float, float, int, float]:
    """Validate an iterative attack's sizes; `eps_iter=None` becomes Madry's `2.5 * eps / nb_iter`."""
    norm = check_norm(norm)
    eps = check_eps(eps, norm, clip_range, image_shape)
    nb_iter = check_positive_int(nb_iter, "nb_iter")
    eps_iter = 2.5 * eps / nb_iter if eps_iter is None else check_positive_float(eps_iter, "eps_iter")
    return eps, norm, nb_iter, eps_iter


def iterate(x, adv, move, *, eps, norm, nb_iter, low, high):
    """`nb_iter` times: `adv + move(adv)`, clipped to `[low, high]`, projected onto the eps-ball around `x`.

    `move(adv)` returns the step (already of its length); `eps` is (N, 1, 1, 1).
    """
    for _ in tf.range(nb_iter):
        adv = tf.clip_by_value(adv + move(adv), low, high)
        adv = tf.clip_by_value(x + clip_to_ball(adv - x, eps, norm), low, high)
    return adv


def projected_gradient(
    model,
    x,
    y,
    *,
    eps,
    norm,
    clip_range,
    targeted,
    batch_size,
    random_state,
    eps_iter,
    nb_iter,
    rand_init,
    restarts,
) -> np.ndarray:
    """Iterate `steepest step -> clip to range -> project on the eps-ball` from `x` or a random start.

    With several restarts each image keeps the run with the highest final loss (lowest
    for targeted attacks). The per-image labels are fixed from the clean images.
    """
    prepared, x, labels = setup(model, x, y, clip_range=clip_range, targeted=targeted, batch_size=batch_size)
    eps, norm, nb_iter, eps_iter = check_iterative(
        eps, norm, nb_iter, eps_iter, clip_range=clip_range, image_shape=x.shape[1:]
    )
    restarts = check_positive_int(restarts, "restarts")
    if not isinstance(rand_init, bool):
        raise ValueError(f"`rand_init` must be True or False. Received: rand_init={rand_init!r}")
    low, high = float(clip_range[0]), float(clip_range[1])

    def build(prepared):
        def attack_once(x, labels, seed, eps, eps_iter):
            adv = x
            if rand_init:
                adv = tf.clip_by_value(x + random_in_ball(tf.shape(x), eps, norm, seed), low, high)

            def move(adv):
                return steepest_step(loss_gradient(prepared, adv, labels, targeted), eps_iter, norm)

            return iterate(x, adv, move, eps=eps, norm=norm, nb_iter=nb_iter, low=low, high=high)

        def step(x, labels, seeds, eps, eps_iter):
            eps, eps_iter = as_column(eps), as_column(eps_iter)
            labels = resolve_classes(prepared.model(x, training=False), labels)
            best = attack_once(x, labels, tf.stack([seeds[0], tf.constant(0, tf.int64)]), eps, eps_iter)
            if restarts == 1:
                return best
            sign = -1.0 if targeted else 1.0

            def loss(adv):
                logits = prepared.model(adv, training=False)
                return sign * tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)

            best_loss = loss(best)
            for r in range(1, restarts):
                adv = attack_once(x, labels, tf.stack([seeds[0], tf.constant(r, tf.int64)]), eps, eps_iter)
                adv_loss = loss(adv)
                better = adv_loss > best_loss
                best = tf.where(better[:, None, None, None], adv, best)
                best_loss = tf.where(better, adv_loss, best_loss)
            return best

        return step

    key = ("projected_gradient", norm, low, high, targeted, nb_iter, rand_init, restarts)
    n = len(x)
    return run_compiled(
        prepared, x, labels, key=key, build=build, batch_size=batch_size,
        extra=(image_seeds(random_state, n), per_image(eps, n), per_image(eps_iter, n)),
        extra_specs=(tf.TensorSpec((None,), tf.int64), *[tf.TensorSpec((None,), tf.float32)] * 2),
    )  # fmt: skip
