"""Baseline detectors from the literature, with the same contract as `SaliencyDetector`.

- `KernelDensityDetector`: kernel density of the classifier's last hidden features under
  the predicted class, and Bayesian uncertainty from Monte-Carlo dropout (Feinman et al.
  2017, "Detecting adversarial samples from artifacts").
- `LIDDetector`: local intrinsic dimensionality of every layer's activations (Ma et al.
  2018, "Characterizing adversarial subspaces using local intrinsic dimensionality").

Both reduce each image to a few characteristics and fit scikit-learn's logistic
regression on them (standardised), as the papers do.
"""

from __future__ import annotations

import contextlib
import numbers
from collections.abc import Iterator

import keras
import numpy as np
import tensorflow as tf
from numpy.typing import ArrayLike
from sklearn.base import BaseEstimator
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KernelDensity
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.validation import check_is_fitted

from saliency_detect._batching import map_batches
from saliency_detect._prepared import prepare
from saliency_detect._validation import (
    check_images,
    check_positive_float,
    check_positive_int,
    model_image_shape,
)
from saliency_detect.detector._base import BinaryDetectorMixin, logistic_logit, split_fit_data
from saliency_detect.models._io import output_layer


def check_classifier(classifier) -> None:
    if not isinstance(classifier, keras.Model):
        raise TypeError(f"`classifier` must be a Keras model. Received: {type(classifier).__name__}")


def check_layers(model: keras.Model, names) -> list[str]:
    """Return `names` as a list if it is a non-empty list of `model`'s layer names, else raise ValueError."""
    names = list(names)
    known = {layer.name for layer in model.layers}
    unknown = [n for n in names if not isinstance(n, str) or n not in known]
    if unknown or not names:
        raise ValueError(
            f"`layers` must name layers of the classifier. Unknown: {unknown}. Known: {sorted(known)}"
        )
    return names


def _penultimate_layer(model: keras.Model) -> str:
    """The name of the layer feeding the logits layer (the last hidden features)."""
    head = output_layer(model)
    history = getattr(getattr(head, "input", None), "_keras_history", None)
    if history is None:
        raise ValueError(
            f"Could not find the last hidden layer of {model.name!r}; pass `layer=` with a layer name."
        )
    return history.operation.name


def _dropout_split(model: keras.Model) -> tuple:
    """`(head, tail)` of a model cut at its first dropout layer, for cheap Monte-Carlo passes.

    Only the tail holds dropout, so each of the `mc_samples` passes runs the tail alone
    on the head's output, computed once (for MNIST-NET-f the tail is the dense layers,
    a small fraction of the forward pass). A model without dropout, or whose first
    dropout does not cut the graph in two, gets an identity head and the whole model as
    its tail.
    """
    drops = [layer for layer in model.layers if isinstance(layer, keras.layers.Dropout)]
    if drops:
        try:
            cut = drops[0].input
            return keras.Model(model.inputs[0], cut), keras.Model(cut, model.outputs[0])
        except (ValueError, TypeError, AttributeError):
            pass
    return (lambda x, training=False: x), model


@contextlib.contextmanager
def _seeded_dropout(model: keras.Model, random_state) -> Iterator[None]:
    """Start every dropout layer's random stream from `random_state` (0 if None), then restore it.

    Monte-Carlo dropout draws from each layer's seed generator; without a reset the same
    images would get other masks, so other scores, on every call. The user's model leaves
    the block with the random state it entered with.
    """
    drops = [layer for layer in model.layers if isinstance(layer, keras.layers.Dropout)]
    saved = [layer.seed_generator.state.numpy() for layer in drops]
    seed = int(random_state) if isinstance(random_state, numbers.Integral) else 0
    for i, layer in enumerate(drops):
        layer.seed_generator.state.assign(np.array([seed + i, 0], dtype=saved[i].dtype))
    try:
        yield
    finally:
        for layer, state in zip(drops, saved, strict=True):
            layer.seed_generator.state.assign(state)


def _kernel_density_step(prepared, *, layer: str, mc_samples: int):
    """The hidden features at `layer`, the predicted class and the MC-dropout uncertainty of images."""
    features = prepared.feature_model((layer,))
    head, tail = _dropout_split(prepared.model)

    def step(x):
        hidden, logits = features(x, training=False)
        total = tf.zeros_like(logits)
        total_sq = tf.zeros(tf.shape(logits)[:1])
        entry = head(x, training=False)  # what comes before the first dropout, computed once
        for _ in tf.range(mc_samples):
            p = tf.nn.softmax(tail(entry, training=True))
            total += p
            total_sq += tf.reduce_sum(p * p, axis=-1)
        mean = total / mc_samples
        uncertainty = total_sq / mc_samples - tf.reduce_sum(mean * mean, axis=-1)
        hidden = tf.reshape(hidden, [tf.shape(hidden)[0], -1])
        return hidden, tf.argmax(logits, axis=-1), uncertainty

    return step


class KernelDensityDetector(BinaryDetectorMixin, BaseEstimator):
    """Kernel density + Bayesian uncertainty detector (Feinman et al. 2017).

    Two characteristics per image: the log kernel density of the classifier's last
    hidden features under the clean images of the predicted class (adversarial images
    land off the class manifold: low density) and the variance of the softmax output
    under Monte-Carlo dropout (adversarial images: high uncertainty). A logistic
    regression on the standardised pair is the detector (`decision_function`: its logit
    of "adversarial"; threshold 0, probability 0.5). The classifier needs dropout
    layers for the uncertainty to carry information; without them it is constant and
    only the density is used.

    Args:
        classifier: the classifier f.
        layer: the layer whose output is the feature space; None takes the input of the
            logits layer (the last hidden features, as the paper).
        bandwidth: Gaussian kernel bandwidth (the paper's: 1.20 MNIST, 0.26 CIFAR-10).
        mc_samples: dropout passes for the uncertainty.
        batch_size: images per compiled step.
        clip_range: the range images must lie in, or None.
        random_state: seed for the logistic regression.

    Attributes:
        densities_: per class, the fitted `sklearn.neighbors.KernelDensity` (None for a
            class no clean image was predicted as).
        logistic_: the fitted scaler + logistic regression pipeline.
        threshold_: decision threshold (0: probability 0.5).
        classes_: `array([0, 1])`.

    Examples:
        >>> import numpy as np
        >>> from saliency_detect.detector import KernelDensityDetector
        >>> from saliency_detect.models import mnist_net_f
        >>> x = np.random.default_rng(0).random((40, 28, 28, 1), dtype=np.float32) * 0.5
        >>> det = KernelDensityDetector(mnist_net_f(), mc_samples=4).fit(x, x + 0.5)
        >>> det.predict_proba(x[:3]).shape
        (3, 2)
    """

    def __init__(
        self,
        classifier: keras.Model,
        *,
        layer: str | None = None,
        bandwidth: float = 1.2,
        mc_samples: int = 50,
        batch_size: int = 128,
        clip_range: tuple[float, float] | None = (0.0, 1.0),
        random_state: int | None = None,
    ):
        self.classifier = classifier
        self.layer = layer
        self.bandwidth = bandwidth
        self.mc_samples = mc_samples
        self.batch_size = batch_size
        self.clip_range = clip_range
        self.random_state = random_state

    def _raw_fn(self):
        """`images -> (hidden features, predicted class, MC-dropout uncertainty)` as TensorFlow ops."""
        prepared = prepare(self.classifier)
        return _kernel_density_step(prepared, **self._raw_constants(prepared))

    def _raw_constants(self, prepared) -> dict:
        return {"layer": self.layer or _penultimate_layer(prepared.model), "mc_samples": self.mc_samples}

    def _raw(self, x):
        prepared = prepare(self.classifier)
        signature = [tf.TensorSpec((None, *x.shape[1:]), tf.float32)]
        compiled = prepared.compiled(_kernel_density_step, self._raw_constants(prepared), signature)
        with _seeded_dropout(prepared.model, self.random_state):
            return map_batches(compiled, (x,), self.batch_size)

    def _log_density(self, hidden: tf.Tensor, predicted: tf.Tensor) -> tf.Tensor:
        """Each row's Gaussian log kernel density under its predicted class, as `KernelDensity.score_samples`.

        `log (1/n_c) sum_i exp(-|h - h_i|^2 / (2 b^2)) - (d/2) log(2 pi b^2)` over the class's
        fitted features `h_i`; a class without a density gets the batch's lowest density.
        """
        kept = [(c, np.asarray(kde.tree_.data)) for c, kde in enumerate(self.densities_) if kde is not None]
        data = tf.constant(np.concatenate([d for _, d in kept]), tf.float64)
        owner = tf.constant(np.concatenate([np.full(len(d), c) for c, d in kept]), tf.int64)
        counts = np.zeros(len(self.densities_))
        for c, d in kept:
            counts[c] = len(d)
        bandwidth, dims = float(self.bandwidth), int(data.shape[1])
        h = tf.cast(hidden, tf.float64)
        sq = (
            tf.reduce_sum(h * h, axis=1, keepdims=True)
            - 2.0 * tf.matmul(h, data, transpose_b=True)
            + tf.reduce_sum(data * data, axis=1)[None, :]
        )
        mine = tf.equal(owner[None, :], predicted[:, None])
        logits = tf.where(mine, -tf.maximum(sq, 0.0) / (2.0 * bandwidth**2), tf.constant(-np.inf, tf.float64))
        n = tf.gather(tf.constant(counts, tf.float64), predicted)
        norm = 0.5 * dims * np.log(2 * np.pi * bandwidth**2)
        density = tf.reduce_logsumexp(logits, axis=1) - tf.math.log(n) - norm
        finite = tf.math.is_finite(density)
        floor = tf.reduce_min(tf.where(finite, density, tf.constant(np.inf, tf.float64)))
        floor = tf.where(tf.math.is_finite(floor), floor, tf.constant(0.0, tf.float64))
        return tf.where(finite, density, floor)

    def _characteristics(self, hidden, predicted, uncertainty) -> np.ndarray:
        density = np.full(len(hidden), -np.inf)
        for c, kde in enumerate(self.densities_):
            rows = predicted == c
            if kde is not None and rows.any():
                density[rows] = kde.score_samples(hidden[rows])
        # A class no clean image was predicted as: the lowest density seen, not -inf.
        floor = np.min(density[np.isfinite(density)]) if np.isfinite(density).any() else 0.0
        return np.column_stack([np.where(np.isfinite(density), density, floor), uncertainty])

    def fit(self, X: ArrayLike, y: ArrayLike | None = None) -> KernelDensityDetector:
        """Fit the class densities on half of the clean images, the regression on the other images.

        Args:
            X: clean images (N, H, W, C), or all images.
            y: adversarial images (M, H, W, C), or one 0/1 label per image of `X`.

        Returns:
            `self`.

        Raises:
            ValueError: for invalid parameters, images or labels.
            TypeError: if `classifier` is not a Keras model.
        """
        check_classifier(self.classifier)
        check_positive_float(self.bandwidth, "bandwidth")
        check_positive_int(self.mc_samples, "mc_samples")
        check_positive_int(self.batch_size, "batch_size")
        x, labels = split_fit_data(
            X, y, clip_range=self.clip_range, expected_shape=model_image_shape(self.classifier)
        )
        hidden, predicted, uncertainty = self._raw(x)
        num_classes = prepare(self.classifier).num_classes(x.shape[1:])
        # The densities are fitted on half of the clean images and the regression on the
        # rest: a clean image scored by a density fitted on itself would look far more
        # typical than new clean images do.
        clean = np.flatnonzero(labels == 0)
        if len(clean) < 2:
            raise ValueError(f"Kernel density needs at least 2 clean images to fit. Received {len(clean)}.")
        density_rows = np.zeros(len(x), bool)
        density_rows[np.random.default_rng(self.random_state).permutation(clean)[: len(clean) // 2]] = True
        self.densities_ = [
            KernelDensity(bandwidth=self.bandwidth).fit(hidden[density_rows & (predicted == c)])
            if np.any(density_rows & (predicted == c))
            else None
            for c in range(num_classes)
        ]
        rest = ~density_rows
        features = self._characteristics(hidden[rest], predicted[rest], uncertainty[rest])
        self.logistic_ = make_pipeline(StandardScaler(), LogisticRegression(random_state=self.random_state))
        self.logistic_.fit(features, labels[rest])
        self._set_probability_threshold()
        return self

    def _decision_function(self, x: np.ndarray) -> np.ndarray:
        # The logistic regression's logit of "adversarial".
        return self.logistic_.decision_function(self._characteristics(*self._raw(x)))

    def decision_tensor(self, x: tf.Tensor) -> tf.Tensor:
        """`decision_function` as TensorFlow ops on a batch of images, differentiable in them.

        The kernel densities and the logistic regression are written as TensorFlow ops
        over the fitted features, so the joint adaptive attack (`attacks.joint_pgd`)
        differentiates the whole score. The Monte-Carlo dropout masks are drawn afresh
        on every call (an attacker averages over them, as in expectation over
        transformation); `decision_function` seeds them. It does not check the images.

        Args:
            x: a float32 tensor of images (N, H, W, C).

        Returns:
            The logistic regression's logits of "adversarial", an (N,) float32 tensor.

        Raises:
            sklearn.exceptions.NotFittedError: before `fit`.
        """
        check_is_fitted(self)
        hidden, predicted, uncertainty = self._raw_fn()(x)
        density = self._log_density(hidden, predicted)
        return logistic_logit(self.logistic_, tf.stack([density, tf.cast(uncertainty, tf.float64)], axis=1))


def _activations_step(prepared, *, layers: tuple[str, ...]):
    """Each named layer's activations of images, flattened per image."""
    model = prepared.feature_model(layers)
    count = len(layers)

    def step(images):
        outputs = model(images, training=False)[:count]
        return tuple(tf.reshape(o, [tf.shape(o)[0], -1]) for o in outputs)

    return step


class LIDDetector(BinaryDetectorMixin, BaseEstimator):
    """Local intrinsic dimensionality detector (Ma et al. 2018).

    For every chosen layer, the maximum-likelihood LID estimate of an image's activation
    among its `k` nearest neighbours in a reference batch of clean activations:
    `LID = -(mean_i log(r_i / r_k))^-1`. Adversarial regions have higher LID. A
    logistic regression on the standardised per-layer LIDs is the detector
    (`decision_function`: its logit of "adversarial"; threshold 0, probability 0.5). The
    reference batch (`n_reference` clean images from `fit`, as the paper's minibatch)
    is kept, so scoring new images uses the same neighbours.

    Args:
        classifier: the classifier f.
        layers: names of the layers whose outputs are used; None takes every
            convolution and dense layer (the logits included).
        k: neighbours per estimate (the paper: 20 on MNIST).
        n_reference: clean images in the reference batch (the paper's minibatch: 100).
        batch_size: images per compiled step.
        clip_range: the range images must lie in, or None.
        random_state: seed for choosing the reference images and the regression.

    Attributes:
        layers_: the layer names used.
        reference_: the reference activations, one (n_reference, features) array per layer.
        logistic_: the fitted scaler + logistic regression pipeline.
        threshold_: decision threshold (0: probability 0.5).
        classes_: `array([0, 1])`.

    Examples:
        >>> import numpy as np
        >>> from saliency_detect.detector import LIDDetector
        >>> from saliency_detect.models import mnist_net_f
        >>> x = np.random.default_rng(0).random((40, 28, 28, 1), dtype=np.float32) * 0.5
        >>> det = LIDDetector(mnist_net_f(), k=5, n_reference=20).fit(x, x + 0.5)
        >>> det.predict(x[:3]).shape
        (3,)
    """

    def __init__(
        self,
        classifier: keras.Model,
        *,
        layers: list[str] | None = None,
        k: int = 20,
        n_reference: int = 100,
        batch_size: int = 128,
        clip_range: tuple[float, float] | None = (0.0, 1.0),
        random_state: int | None = None,
    ):
        self.classifier = classifier
        self.layers = layers
        self.k = k
        self.n_reference = n_reference
        self.batch_size = batch_size
        self.clip_range = clip_range
        self.random_state = random_state

    def _default_layers(self, model: keras.Model) -> list[str]:
        return [
            layer.name
            for layer in model.layers
            if isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense, keras.layers.DepthwiseConv2D))
        ]

    def _activations(self, x) -> tuple[np.ndarray, ...]:
        """Every chosen layer's flattened activations for `x` (used for the reference batch only)."""
        prepared = prepare(self.classifier)
        signature = [tf.TensorSpec((None, *x.shape[1:]), tf.float32)]
        compiled = prepared.compiled(_activations_step, {"layers": tuple(self.layers_)}, signature)
        result = map_batches(compiled, (x,), self.batch_size)
        return result if isinstance(result, tuple) else (result,)

    def _lids(self, x: np.ndarray) -> np.ndarray:
        """Per-layer LIDs (N, layers) of images `x`, batch by batch.

        Activations live only for one batch: every conv layer of every image held at once
        would be hundreds of kilobytes per MNIST image (tens of gigabytes for a full-scale
        run).
        """
        prepared = prepare(self.classifier)
        signature = [
            tf.TensorSpec((None, *x.shape[1:]), tf.float32),
            *[tf.TensorSpec((None, r.shape[1]), tf.as_dtype(r.dtype)) for r in self.reference_],
        ]
        step = prepared.compiled(_lid_step, {"layers": tuple(self.layers_), "k": int(self.k)}, signature)
        references = [tf.constant(r) for r in self.reference_]
        return map_batches(lambda images: step(images, *references), (x,), self.batch_size)

    def _lid_tensor(self, images: tf.Tensor) -> tf.Tensor:
        """Per-layer LIDs (N, layers) of a batch, as TensorFlow ops."""
        step = _lid_step(prepare(self.classifier), layers=tuple(self.layers_), k=int(self.k))
        return step(images, *[tf.constant(r) for r in self.reference_])

    def minibatch_lids(self, x_clean: ArrayLike, x_adv: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
        """Per-layer LIDs under the reference code's protocol (Ma et al.'s `mle_batch`), for comparison.

        The published LID numbers come from this protocol, not from a deployable score:
        the images go in minibatches of `n_reference` clean images with their adversarial
        twins; each minibatch's own clean activations are the neighbours, and the nearest
        neighbour of **every** point is dropped (for a clean image, itself; for an
        adversarial image, usually its own clean twin). Scoring a new image this way
        needs its clean minibatch, which a deployed detector does not have; `fit` and
        `decision_function` use one fixed reference batch and drop only exact
        self-matches. `docs/results.md` measures how far the two differ. Uses the fitted
        `layers_` and `k` (`k` is lowered to the minibatch size minus one, as the
        reference code does).

        Args:
            x_clean: clean images (N, H, W, C).
            x_adv: their adversarial versions, in the same order (N, H, W, C).

        Returns:
            `(lids_clean, lids_adv)`, each (N, layers).

        Raises:
            sklearn.exceptions.NotFittedError: before `fit`.
            ValueError: for invalid images, or batches of different lengths.
        """
        check_is_fitted(self)
        expected = model_image_shape(self.classifier)
        x_clean = check_images(x_clean, name="x_clean", clip_range=self.clip_range, expected_shape=expected)
        x_adv = check_images(
            x_adv, name="x_adv", clip_range=self.clip_range, expected_shape=x_clean.shape[1:]
        )
        if len(x_adv) != len(x_clean):
            raise ValueError(
                f"`x_adv` must hold one adversarial image per clean image: expected {len(x_clean)}. "
                f"Received {len(x_adv)}."
            )
        signature = [tf.TensorSpec((None, *x_clean.shape[1:]), tf.float32)] * 2
        constants = {"layers": tuple(self.layers_), "k": int(self.k)}
        step = prepare(self.classifier).compiled(_minibatch_lid_step, constants, signature)
        return map_batches(step, (x_clean, x_adv), int(self.n_reference))

    def fit(self, X: ArrayLike, y: ArrayLike | None = None) -> LIDDetector:
        """Pick the reference batch from the clean images, then fit the regression on per-layer LIDs.

        Args:
            X: clean images (N, H, W, C), or all images.
            y: adversarial images (M, H, W, C), or one 0/1 label per image of `X`.

        Returns:
            `self`.

        Raises:
            ValueError: for invalid parameters, images or labels, unknown layer names, or
                fewer than `k + 1` clean images.
            TypeError: if `classifier` is not a Keras model.
        """
        check_classifier(self.classifier)
        k = check_positive_int(self.k, "k")
        n_reference = check_positive_int(self.n_reference, "n_reference")
        check_positive_int(self.batch_size, "batch_size")
        x, labels = split_fit_data(
            X, y, clip_range=self.clip_range, expected_shape=model_image_shape(self.classifier)
        )
        view = prepare(self.classifier).model
        names = check_layers(view, self._default_layers(view) if self.layers is None else self.layers)
        clean = np.flatnonzero(labels == 0)
        if len(clean) <= k:
            raise ValueError(f"LID needs more than k={k} clean images to fit. Received {len(clean)}.")
        rng = np.random.default_rng(self.random_state)
        chosen = rng.choice(clean, size=min(n_reference, len(clean)), replace=False)
        if len(chosen) <= k:
            raise ValueError(f"`n_reference` must exceed k={k}. Received: n_reference={n_reference}")
        self.layers_ = names
        self.reference_ = list(self._activations(x[np.sort(chosen)]))
        seed = self.random_state if isinstance(self.random_state, numbers.Integral) else None
        self.logistic_ = make_pipeline(StandardScaler(), LogisticRegression(random_state=seed, max_iter=1000))
        self.logistic_.fit(self._lids(x), labels)
        self._set_probability_threshold()
        return self

    def _decision_function(self, x: np.ndarray) -> np.ndarray:
        # The logistic regression's logit of "adversarial", over the LID estimates.
        return self.logistic_.decision_function(self._lids(x))

    def decision_tensor(self, x: tf.Tensor) -> tf.Tensor:
        """`decision_function` as TensorFlow ops on a batch of images, differentiable in them.

        The LID estimates (distances to the reference batch, its `k` nearest) and the
        logistic regression are TensorFlow ops, so the joint adaptive attack
        (`attacks.joint_pgd`) differentiates the score through f's activations. It does
        not check the images.

        Args:
            x: a float32 tensor of images (N, H, W, C).

        Returns:
            The logistic regression's logits of "adversarial", an (N,) float32 tensor.

        Raises:
            sklearn.exceptions.NotFittedError: before `fit`.
        """
        check_is_fitted(self)
        return logistic_logit(self.logistic_, self._lid_tensor(x))


def _pairwise_distances(acts: tf.Tensor, reference: tf.Tensor) -> tf.Tensor:
    """Euclidean distances (N, M) between the rows of `acts` and of `reference`, in float64."""
    # float64: the expanded squared distance of a row to itself must come out as zero.
    acts, reference = tf.cast(acts, tf.float64), tf.cast(reference, tf.float64)
    sq = (
        tf.reduce_sum(acts * acts, axis=1, keepdims=True)
        - 2.0 * tf.matmul(acts, reference, transpose_b=True)
        + tf.reduce_sum(reference * reference, axis=1)[None, :]
    )
    return tf.sqrt(tf.maximum(sq, 0.0))


def _mle(nearest: tf.Tensor) -> tf.Tensor:
    """`-(mean_i log(r_i / r_k))^-1` per row of ascending neighbour distances (N, k), as float32."""
    log_ratio = tf.math.log(tf.maximum(nearest, 1e-12) / tf.maximum(nearest[:, -1:], 1e-12))
    return tf.cast(-1.0 / tf.minimum(tf.reduce_mean(log_ratio, axis=1), -1e-12), tf.float32)


def _lid_step(prepared, *, layers: tuple[str, ...], k: int):
    """Per-layer LIDs (N, layers) of a batch against the reference activations (one input per layer)."""
    model = prepared.feature_model(layers)
    count = len(layers)

    def step(images, *references):
        outputs = model(images, training=False)[:count]
        flat = [tf.reshape(o, [tf.shape(o)[0], -1]) for o in outputs]
        return tf.stack([_lid(a, r, k) for a, r in zip(flat, references, strict=True)], axis=1)

    return step


def _minibatch_lid_step(prepared, *, layers: tuple[str, ...], k: int):
    """`minibatch_lids`' step: each minibatch's clean activations are its own neighbours."""
    model = prepared.feature_model(layers)
    count = len(layers)

    def step(clean, adversarial):
        k_batch = tf.minimum(k, tf.shape(clean)[0] - 1)
        both = model(tf.concat([clean, adversarial], axis=0), training=False)[:count]
        n = tf.shape(clean)[0]
        columns_clean, columns_adv = [], []
        for output in both:
            flat = tf.reshape(output, [tf.shape(output)[0], -1])
            reference = flat[:n]
            columns_clean.append(_lid_drop_nearest(reference, reference, k_batch))
            columns_adv.append(_lid_drop_nearest(flat[n:], reference, k_batch))
        return tf.stack(columns_clean, axis=1), tf.stack(columns_adv, axis=1)

    return step


def _lid_drop_nearest(acts: tf.Tensor, reference: tf.Tensor, k: tf.Tensor) -> tf.Tensor:
    """Ma et al.'s `mle_batch`: LID from the 2nd to the (k+1)-th nearest rows of `reference`.

    `k` may be a tensor: a last, smaller minibatch lowers it.
    """
    dist = _pairwise_distances(acts, reference)
    nearest = -tf.math.top_k(-dist, k=k + 1).values
    return _mle(nearest[:, 1:])


def _lid(acts: tf.Tensor, reference: tf.Tensor, k: int) -> tf.Tensor:
    """Maximum-likelihood LID of each row of `acts` from its `k` nearest rows of `reference`."""
    dist = _pairwise_distances(acts, reference)
    acts = tf.cast(acts, tf.float64)
    # An image of the reference batch is not its own neighbour. Its activations, computed
    # in another batch, can differ from the reference's by float32 rounding: a distance
    # within a millionth of the row's norm is the image itself.
    own = 1e-9 + 1e-6 * tf.sqrt(tf.reduce_sum(acts * acts, axis=1, keepdims=True))
    dist = tf.where(dist <= own, tf.fill(tf.shape(dist), tf.constant(np.inf, tf.float64)), dist)
    return _mle(-tf.math.top_k(-dist, k=k).values)
