"""Pixel Attack: few-pixel black-box attack by differential evolution."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf
from numpy.typing import ArrayLike

from saliency_detect._classes import resolve_classes
from saliency_detect._prepared import run_compiled
from saliency_detect._validation import check_positive_float, check_positive_int
from saliency_detect.attacks._common import image_seeds, setup

# Most candidate images evaluated in one model call: a generation's batch_size x popsize
# candidates are scored in groups of whole images' populations that fit under this.
_EVALUATIONS_PER_CALL = 8192


def pixel_attack(
    model: keras.Model,
    x: ArrayLike,
    y: ArrayLike | None = None,
    *,
    clip_range: tuple[float, float] = (0.0, 1.0),
    targeted: bool = False,
    batch_size: int = 128,
    random_state: int | None = None,
    pixels: int = 1,
    popsize: int = 400,
    nb_iter: int = 100,
    mutation: float = 0.5,
) -> np.ndarray:
    """Pixel Attack (Su, Vargas & Sakurai 2019, "One pixel attack for fooling deep neural networks").

    A black-box L0 attack: only the model's output probabilities are used, never its
    gradients. Each candidate sets `pixels` pixels (row, column and a value per channel).
    Differential evolution (DE/rand/1: three distinct parents, none the child's own
    slot; scale `mutation`; no crossover, the authors' choice) evolves `popsize`
    candidates per image for up to `nb_iter` generations, keeping a child when it lowers
    the probability of the true class (raises the target's, when targeted). An image
    stops evolving once a candidate fools the model, and costs no model evaluation after
    that. The populations of the images still evolving are evaluated in one batched model
    call per generation. Defaults are the authors' (population 400, up to 100 generations).

    Args:
        model: a Keras classifier (only its outputs are read).
        x: clean images (N, H, W, C) in `clip_range`.
        y: true labels, or targets when `targeted`; None uses the model's predictions.
        clip_range: `(low, high)` valid pixel values; candidate values are drawn in it.
        targeted: reach `y` instead of leaving it.
        batch_size: images evolved together. Their `batch_size * popsize` candidates
            are scored in model calls of at most 8,192 images (whole populations; a
            population larger than that is one call), which bounds the memory.
        random_state: seed; the same seed and `batch_size` give the same images.
        pixels: pixels changed per image (k).
        popsize: candidates per image.
        nb_iter: generations at most.
        mutation: DE's scale factor F.

    Returns:
        Adversarial images, float32, same shape as `x`, each differing from `x` in at most
        `pixels` pixels: the best candidate found per image.

    Raises:
        ValueError: for invalid images, labels or parameters.

    Examples:
        >>> import numpy as np
        >>> from saliency_detect.attacks import pixel_attack
        >>> from saliency_detect.models import mnist_net_f
        >>> x = np.random.default_rng(0).random((2, 28, 28, 1), dtype=np.float32)
        >>> x_adv = pixel_attack(mnist_net_f(), x, pixels=2, popsize=20, nb_iter=3, random_state=0)
        >>> [int(np.count_nonzero(np.any(a != b, axis=-1))) <= 2 for a, b in zip(x_adv, x)]
        [True, True]
    """
    prepared, x, labels = setup(model, x, y, clip_range=clip_range, targeted=targeted, batch_size=batch_size)
    pixels = check_positive_int(pixels, "pixels")
    popsize = check_positive_int(popsize, "popsize")
    if popsize < 4:
        raise ValueError(f"`popsize` must be at least 4 (DE/rand/1 draws three parents). Received: {popsize}")
    nb_iter = check_positive_int(nb_iter, "nb_iter")
    mutation = check_positive_float(mutation, "mutation")
    low, high = float(clip_range[0]), float(clip_range[1])
    constants = {
        "image_shape": tuple(int(d) for d in x.shape[1:]),
        "low": low,
        "high": high,
        "targeted": targeted,
        "pixels": pixels,
        "popsize": popsize,
        "nb_iter": nb_iter,
        "mutation": mutation,
        "num_classes": prepared.num_classes(tuple(x.shape[1:])),
        "evaluations_per_call": _EVALUATIONS_PER_CALL,
    }
    return run_compiled(
        prepared, x, labels, build=_pixel_attack_step, constants=constants, batch_size=batch_size,
        extra=(image_seeds(random_state, len(x)),), extra_specs=(tf.TensorSpec((None,), tf.int64),),
    )  # fmt: skip


def _pixel_attack_step(
    prepared,
    *,
    image_shape,
    low,
    high,
    targeted,
    pixels,
    popsize,
    nb_iter,
    mutation,
    num_classes,
    evaluations_per_call,
):
    height, width, channels = image_shape
    genes = pixels * (2 + channels)
    # Per gene: bounds of (row, column, value per channel) x pixels.
    lower_bounds = np.tile([0.0, 0.0] + [low] * channels, pixels).astype(np.float32)
    upper_bounds = np.tile([height - 1e-3, width - 1e-3] + [high] * channels, pixels).astype(np.float32)
    lo, hi = tf.constant(lower_bounds), tf.constant(upper_bounds)

    def perturb(x, candidates):
        """Images (B*K, H, W, C): each image of x with each of its K candidates' pixels set."""
        count = tf.shape(candidates)[1]
        total = tf.shape(x)[0] * count
        images = tf.repeat(x, count, axis=0)
        flat = tf.reshape(candidates, [total, pixels, 2 + channels])
        rows = tf.cast(tf.floor(flat[..., 0]), tf.int32)
        cols = tf.cast(tf.floor(flat[..., 1]), tf.int32)
        owner = tf.repeat(tf.range(total)[:, None], pixels, axis=1)
        indices = tf.reshape(tf.stack([owner, rows, cols], axis=-1), [-1, 3])
        return tf.tensor_scatter_nd_update(images, indices, tf.reshape(flat[..., 2:], [-1, channels]))

    def candidate_logits(x, candidates):
        """Logits (B, K, classes) of every candidate, B*K images scored in bounded model calls.

        The images are split into G equal groups (the last padded by repeating images)
        of at most `evaluations_per_call // popsize` images each, scored one group
        after another.
        """
        batch = tf.shape(x)[0]
        most = max(1, evaluations_per_call // popsize)
        groups = (batch + most - 1) // most
        size = (batch + groups - 1) // groups
        order = tf.math.floormod(tf.range(groups * size), batch)
        grouped_x = tf.reshape(tf.gather(x, order), tf.concat([[groups, size], tf.shape(x)[1:]], axis=0))
        grouped_c = tf.reshape(tf.gather(candidates, order), [groups, size, popsize, genes])
        logits = tf.map_fn(
            lambda group: tf.reshape(
                tf.cast(prepared.model(perturb(*group), training=False), tf.float32),
                [size, popsize, num_classes],
            ),
            (grouped_x, grouped_c),
            fn_output_signature=tf.TensorSpec([None, popsize, num_classes], tf.float32),
            parallel_iterations=1,
        )
        return tf.reshape(logits, [groups * size, popsize, num_classes])[:batch]

    def evaluate(x, candidates, classes):
        """Fitness to minimise (probability of the true class, or minus the target's), and success."""
        logits = candidate_logits(x, candidates)
        probabilities = tf.nn.softmax(logits)
        predicted = tf.argmax(logits, axis=-1, output_type=tf.int32)
        p_class = tf.gather(probabilities, classes, axis=2, batch_dims=1)
        if targeted:
            return -p_class, tf.equal(predicted, classes[:, None])
        return p_class, tf.not_equal(predicted, classes[:, None])

    def parents(shape, key):
        """DE/rand/1's parents: per child i, three distinct indices in [0, popsize), none i.

        Uniform draws from ever smaller ranges are moved past the indices already
        taken (in increasing order), which maps them one-to-one onto the free ones.
        """
        taken = tf.broadcast_to(tf.range(popsize)[None, :, None], tf.concat([shape, [1]], axis=0))
        for k in range(3):
            draw = tf.random.stateless_uniform(
                shape, tf.stack([key[0], key[1] * 3 + k]), maxval=popsize - 1 - k, dtype=tf.int32
            )
            ordered = tf.sort(taken, axis=-1)
            for j in range(k + 1):
                draw += tf.cast(draw >= ordered[..., j], tf.int32)
            taken = tf.concat([taken, draw[..., None]], axis=-1)
        return taken[..., 1:]

    def step(x, labels, seeds):
        batch = tf.shape(x)[0]
        classes = resolve_classes(prepared.model(x, training=False), labels)
        seed = tf.stack([seeds[0], tf.constant(0, tf.int64)])
        unit = tf.random.stateless_uniform([batch, popsize, genes], seed)
        population = lo + unit * (hi - lo)
        fitness, success = evaluate(x, population, classes)
        done = tf.reduce_any(success, axis=1)
        for generation in tf.range(nb_iter):
            if tf.reduce_all(done):
                break
            # Only the images still unfooled evolve: a fooled image costs no more calls.
            active = tf.where(~done)[:, 0]
            current = tf.gather(population, active)
            key = tf.stack([seeds[0], tf.cast(generation, tf.int64) + 1])
            picked = tf.gather(current, parents(tf.shape(current)[:2], key), batch_dims=1)
            children = picked[:, :, 0] + mutation * (picked[:, :, 1] - picked[:, :, 2])
            children = tf.clip_by_value(children, lo, hi)
            child_fitness, child_success = evaluate(
                tf.gather(x, active), children, tf.gather(classes, active)
            )
            current_fitness = tf.gather(fitness, active)
            keep = child_fitness < current_fitness
            rows = active[:, None]
            population = tf.tensor_scatter_nd_update(
                population, rows, tf.where(keep[..., None], children, current)
            )
            fitness = tf.tensor_scatter_nd_update(
                fitness, rows, tf.where(keep, child_fitness, current_fitness)
            )
            success = tf.tensor_scatter_nd_update(
                success, rows, tf.where(keep, child_success, tf.gather(success, active))
            )
            done = done | tf.reduce_any(success, axis=1)
        # The best candidate: a successful one if any, else the fittest.
        score = tf.where(success, fitness - 2.0, fitness)
        best = tf.gather(population, tf.argmin(score, axis=1, output_type=tf.int32), batch_dims=1)
        return perturb(x, best[:, None, :])

    return step
