"""`GuardedClassifier`: a fitted detector in front of the classifier it protects, as one model."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from numpy.typing import ArrayLike
from sklearn.utils.validation import check_is_fitted

from saliency_detect._batching import map_batches
from saliency_detect._prepared import owner_function
from saliency_detect._validation import check_images, check_positive_int
from saliency_detect.detector._detector import SaliencyDetector
from saliency_detect.models._io import model_fingerprint


@dataclass(frozen=True)
class GuardedPrediction:
    """What `GuardedClassifier.predict` returns, one entry per image.

    Attributes:
        labels: the classifier's predicted classes (int64).
        scores: the detector's probability that the image is adversarial (float32).
        flags: True where the image is flagged as adversarial (score above the
            detector's threshold).
    """

    labels: np.ndarray
    scores: np.ndarray
    flags: np.ndarray


class GuardedClassifier:
    """Put a fitted `SaliencyDetector` in front of the classifier it was fitted for.

    One forward and one backward pass of the classifier give both its logits and the
    saliency the detector reads, so guarding costs one detector forward pass on top of
    the gradient.

    Args:
        classifier: the deployed classifier.
        detector: a fitted `SaliencyDetector` for this classifier.
        batch_size: images per compiled call in `predict`.

    Raises:
        sklearn.exceptions.NotFittedError: if `detector` is not fitted.
        ValueError: if `detector` was fitted for another classifier.
        TypeError: for a detector that is not a `SaliencyDetector`.

    Examples:
        >>> import numpy as np
        >>> from saliency_detect.detector import GuardedClassifier, SaliencyDetector
        >>> from saliency_detect.models import mnist_net_f
        >>> f = mnist_net_f()
        >>> x = np.random.default_rng(0).random((16, 28, 28, 1), dtype=np.float32) * 0.5
        >>> det = SaliencyDetector(f, epochs=1, verbose=0, random_state=0).fit(x, x + 0.5)
        >>> out = GuardedClassifier(f, det).predict(x[:3])
        >>> out.labels.shape, out.scores.shape, out.flags.dtype
        ((3,), (3,), dtype('bool'))
    """

    def __init__(self, classifier: keras.Model, detector: SaliencyDetector, *, batch_size: int = 128):
        if not isinstance(detector, SaliencyDetector):
            raise TypeError(f"`detector` must be a SaliencyDetector. Received: {type(detector).__name__}")
        check_is_fitted(detector)
        if (
            classifier is not detector.classifier
            and model_fingerprint(classifier) != detector.classifier_fingerprint_
        ):
            raise ValueError(
                "`detector` was fitted for another classifier (architecture or weights differ from "
                "`classifier`). Fit a detector for this classifier."
            )
        self.classifier = classifier
        self.detector = detector
        self.batch_size = check_positive_int(batch_size, "batch_size")

    def as_keras_model(self) -> keras.Model:
        """Return one Keras model computing logits, adversarial score and flag in a single graph.

        Outputs a dict: `"logits"` (N, classes), `"adversarial_score"` (N,) the
        probability of "adversarial", and `"is_adversarial"` (N,) booleans at the
        detector's threshold. Save it with `models.save_model` (reload with
        `models.load_model`, safe mode) or export a SavedModel for TF Serving with
        `export`.

        Examples:
            >>> import numpy as np
            >>> from saliency_detect.detector import GuardedClassifier, SaliencyDetector
            >>> from saliency_detect.models import mnist_net_f
            >>> f = mnist_net_f()
            >>> x = np.random.default_rng(0).random((16, 28, 28, 1), dtype=np.float32) * 0.5
            >>> det = SaliencyDetector(f, epochs=1, verbose=0, random_state=0).fit(x, x + 0.5)
            >>> out = GuardedClassifier(f, det).as_keras_model()(x[:2])
            >>> sorted(out), tuple(out["logits"].shape)
            (['adversarial_score', 'is_adversarial', 'logits'], (2, 10))
        """
        scores = self.detector.as_keras_model(return_logits=True)
        inputs = keras.Input(self.detector.input_shape_, name="image")
        logits, detector_logit = scores(inputs)
        detector_logit = keras.layers.Flatten(name="detector_logit")(detector_logit)[:, 0]
        return keras.Model(
            inputs,
            {
                "logits": keras.layers.Identity(name="logits")(logits),
                "adversarial_score": keras.ops.sigmoid(detector_logit),
                "is_adversarial": keras.ops.greater(detector_logit, self.detector.threshold_),
            },
            name="guarded_classifier",
        )

    def predict(self, x: ArrayLike) -> GuardedPrediction:
        """Classify images and score them for adversarial perturbation.

        Args:
            x: images (N, H, W, C).

        Returns:
            A `GuardedPrediction` with `labels`, `scores` and `flags`.

        Raises:
            ValueError: for invalid images (shape, channels, dtype, range, NaN, empty).
        """
        x = check_images(x, clip_range=self.detector.clip_range, expected_shape=self.detector.input_shape_)
        # Kept on the detector: its threshold is compiled into the step, so a calibration
        # (or a refit) after the first call compiles it afresh.
        signature = [tf.TensorSpec((None, *self.detector.input_shape_), tf.float32)]
        step = owner_function(self.detector, "guarded_predict", self._step_function, signature)
        labels, scores, flags = map_batches(step, (x,), self.batch_size)
        return GuardedPrediction(labels=labels.astype(np.int64), scores=scores, flags=flags.astype(bool))

    def _step_function(self) -> Callable:
        model = self.as_keras_model()

        def step(images):
            out = model(images, training=False)
            labels = tf.argmax(out["logits"], axis=-1)
            return labels, out["adversarial_score"], out["is_adversarial"]

        return step

    def export(self, path: str | os.PathLike[str]) -> Path:
        """Export the guarded model as a TensorFlow SavedModel (for TF Serving), atomically.

        The SavedModel's `serve` endpoint takes float32 images (N, H, W, C) and returns
        the three outputs of `as_keras_model`. It is written next to `path` and renamed
        into place.

        Args:
            path: the folder to write; must not exist.

        Returns:
            The folder written.

        Raises:
            FileExistsError: if `path` exists.

        Examples:
            >>> import numpy as np, os, tempfile, tensorflow as tf
            >>> from saliency_detect.detector import GuardedClassifier, SaliencyDetector
            >>> from saliency_detect.models import mnist_net_f
            >>> f = mnist_net_f()
            >>> x = np.random.default_rng(0).random((16, 28, 28, 1), dtype=np.float32) * 0.5
            >>> det = SaliencyDetector(f, epochs=1, verbose=0, random_state=0).fit(x, x + 0.5)
            >>> path = GuardedClassifier(f, det).export(os.path.join(tempfile.mkdtemp(), "guard"))
            >>> served = tf.saved_model.load(str(path))  # keep a reference while serving
            >>> sorted(served.serve(x[:2]))
            ['adversarial_score', 'is_adversarial', 'logits']
        """
        path = Path(path)
        if path.exists():
            raise FileExistsError(f"'{path}' exists; export to a new folder.")
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
        try:
            self.as_keras_model().export(str(tmp), format="tf_saved_model", verbose=False)
            os.replace(tmp, path)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return path
