"""The projected-gradient loop behind `bim`, `iterative_l2` and `pgd`."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from saliency_detect._classes import resolve_classes
from saliency_detect._prepared import run_compiled
from saliency_detect._validation import check_positive_float, check_positive_int
from saliency_detect.attacks._common import (
    Objective,
    as_column,
    attack_loss,
    check_eps,
    check_loss,
    check_norm,
    clip_to_ball,
    image_seeds,
    loss_gradient_and_success,
    per_image,
    random_in_ball,
    setup,
    steepest_step,
    step_owner,
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


def iterate(x, adv, move, *, eps, norm, nb_iter, low, high, track=False):
    """`nb_iter` times: `adv + move(adv)`, clipped to `[low, high]`, projected onto the eps-ball around `x`.

    `move(adv)` returns the step (already of its length); `eps` is (N, 1, 1, 1). With
    `track`, `move(adv)` returns `(step, success of adv)` (from the pass that computed
    the step) and each image returns its last successful iterate before the final one,
    if any, as `(final, kept, found)`: the caller checks the final iterate (an attack
    that oscillates across its goal keeps a success).
    """
    kept, found = adv, tf.zeros(tf.shape(adv)[:1], tf.bool)
    for _ in tf.range(nb_iter):
        step = move(adv)
        if track:
            step, won = step
            kept, found = tf.where(won[:, None, None, None], adv, kept), found | won
        adv = tf.clip_by_value(adv + step, low, high)
        adv = tf.clip_by_value(x + clip_to_ball(adv - x, eps, norm), low, high)
    return (adv, kept, found) if track else adv


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
    loss="cross_entropy",
    confidence: float = np.inf,
    objective: Objective | None = None,
    detector=None,
) -> np.ndarray:
    """Iterate `steepest step -> clip to range -> project on the eps-ball` from `x` or a random start.

    The loss ascended is `attack_loss` (`loss`: f's cross-entropy or logit margin, capped
    at `confidence`), or the joint attacks' `objective`, which also says which images
    succeed: then each run returns its final iterate if it succeeds, else its last
    successful one (checked on the pass that computes each step, at no extra cost). With
    several restarts each image keeps the run with the highest final loss, a successful
    run first. The per-image labels are fixed from the clean images. `objective` must
    compare equal across calls with the same settings (a frozen dataclass) for its step
    to be reused; it is kept on `detector` (`attacks._common.step_owner`).
    """
    prepared, x, labels = setup(model, x, y, clip_range=clip_range, targeted=targeted, batch_size=batch_size)
    eps, norm, nb_iter, eps_iter = check_iterative(
        eps, norm, nb_iter, eps_iter, clip_range=clip_range, image_shape=x.shape[1:]
    )
    restarts = check_positive_int(restarts, "restarts")
    loss = check_loss(loss)
    if not isinstance(rand_init, bool):
        raise ValueError(f"`rand_init` must be True or False. Received: rand_init={rand_init!r}")
    low, high = float(clip_range[0]), float(clip_range[1])

    constants = {
        "norm": norm,
        "low": low,
        "high": high,
        "targeted": targeted,
        "nb_iter": nb_iter,
        "rand_init": rand_init,
        "restarts": restarts,
        "loss": loss,
        "confidence": confidence,
        "objective": objective,
    }
    n = len(x)
    # A step holding a detector (the joint attacks' objective) is kept on the detector:
    # the classifier's cache must not keep the detector alive.
    cache, owner = step_owner(detector)
    return run_compiled(
        prepared, x, labels, build=_projected_gradient_step, constants=constants, cache=cache, owner=owner,
        batch_size=batch_size,
        extra=(image_seeds(random_state, n), per_image(eps, n), per_image(eps_iter, n)),
        extra_specs=(tf.TensorSpec((None,), tf.int64), *[tf.TensorSpec((None,), tf.float32)] * 2),
    )  # fmt: skip


def _projected_gradient_step(
    prepared, *, norm, low, high, targeted, nb_iter, rand_init, restarts, loss, confidence, objective
):
    def evaluate(adv, labels):
        return attack_loss(prepared, adv, labels, targeted, objective, loss, confidence)

    def attack_once(x, labels, seed, eps, eps_iter):
        """One run from `x` or a random start: its result, loss and (joint attacks) success."""
        adv = x
        if rand_init:
            adv = tf.clip_by_value(x + random_in_ball(tf.shape(x), eps, norm, seed), low, high)

        def move(adv):
            grad, won = loss_gradient_and_success(
                prepared, adv, labels, targeted, objective, loss, confidence
            )
            step = steepest_step(grad, eps_iter, norm)
            return step if objective is None else (step, won)

        if objective is None:
            adv = iterate(x, adv, move, eps=eps, norm=norm, nb_iter=nb_iter, low=low, high=high)
            return adv, (evaluate(adv, labels)[0] if restarts > 1 else None), None
        final, kept, found = iterate(
            x, adv, move, eps=eps, norm=norm, nb_iter=nb_iter, low=low, high=high, track=True
        )
        final_loss, won = evaluate(final, labels)
        # The final iterate if it succeeds, else the last one that did, else the final one.
        use_kept = found & ~won
        adv = tf.where(use_kept[:, None, None, None], kept, final)
        if restarts > 1:  # the kept iterate's loss, for ranking restarts
            final_loss = tf.where(use_kept, evaluate(adv, labels)[0], final_loss)
        return adv, final_loss, won | found

    def step(x, labels, seeds, eps, eps_iter):
        eps, eps_iter = as_column(eps), as_column(eps_iter)
        labels = resolve_classes(prepared.model(x, training=False), labels)
        best, best_loss, had = attack_once(
            x, labels, tf.stack([seeds[0], tf.constant(0, tf.int64)]), eps, eps_iter
        )
        for r in range(1, restarts):
            seed = tf.stack([seeds[0], tf.constant(r, tf.int64)])
            adv, adv_loss, won = attack_once(x, labels, seed, eps, eps_iter)
            better = adv_loss > best_loss
            if won is not None:  # a successful restart first
                better = (won & ~had) | ((won == had) & better)
                had = had | won
            best = tf.where(better[:, None, None, None], adv, best)
            best_loss = tf.where(better, adv_loss, best_loss)
        return best

    return step
