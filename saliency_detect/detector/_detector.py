"""`SaliencyDetector`: the detection paper's binary detector D on `[image ‖ saliency]`."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from numpy.typing import ArrayLike
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted

from saliency_detect._batching import map_batches
from saliency_detect._distribute import fitting_under, resolve_strategy, training_rows
from saliency_detect._validation import (
    check_images,
    check_input_shape,
    check_positive_float,
    check_positive_int,
    model_image_shape,
)
from saliency_detect._version import __version__
from saliency_detect.detector._base import BinaryDetectorMixin, split_fit_data
from saliency_detect.detector._features import DETECTOR_SALIENCY, INPUT_MODES, SaliencyFeatures
from saliency_detect.models._io import load_model, model_fingerprint, save_model
from saliency_detect.models._zoo import cifar10_net_d, mnist_net_d, vgg16_d

_FORMAT = "saliency_detect.SaliencyDetector/1"
_SCALE_SAMPLE = 1024


def default_detector(feature_shape) -> keras.Model:
    """The zoo's detector D for an input shape (H, W, C).

    MNIST-NET-D below 32 pixels a side, CIFAR10-NET-D up to 64, VGG16-D above.

    Examples:
        >>> from saliency_detect.detector import default_detector
        >>> default_detector((32, 32, 6)).name
        'cifar10_net_d'
    """
    h, w, _ = check_input_shape(feature_shape, "feature_shape")
    if min(h, w) < 32:
        return mnist_net_d(feature_shape)
    if max(h, w) <= 64:
        return cifar10_net_d(feature_shape)
    return vgg16_d(feature_shape)


@contextlib.contextmanager
def _frozen(model: keras.Model):
    """Make every weight of `model` non-trainable for the block, then restore each layer's flag."""
    flags = []

    def visit(layer):
        flags.append((layer, layer.trainable))
        for child in getattr(layer, "layers", ()):
            visit(child)

    visit(model)
    model.trainable = False
    try:
        yield
    finally:
        for layer, flag in flags:  # parents first: a parent's setter resets its children
            layer.trainable = flag


class SaliencyDetector(BinaryDetectorMixin, BaseEstimator):
    """Detect adversarial images from the image and the classifier's saliency map.

    The detection paper's method: for every image, the gradient of the classifier's
    predicted-class logit with respect to the image (its saliency) is stacked with the
    image on the channel axis, and a binary CNN D learns to tell clean from adversarial
    inputs. The saliency is computed inside D's graph, batch by batch, so saliency maps
    are never all held in memory and the same graph serves training, scoring, the
    `GuardedClassifier` artefact and adaptive attacks (which differentiate through it).

    Parameters are stored as given and checked in `fit` (scikit-learn's convention).

    Args:
        classifier: the classifier f to protect (a Keras model; logits or softmax).
        saliency: `"gradient"` (the paper's), `"guided_backprop"` or `"deconvnet"`.
        input_mode: `"image+saliency"` (the paper's), `"image"` (the raw-image detector
            of Gong et al., the paper's baseline) or `"saliency"` (saliency alone).
        detector: a Keras model mapping the detector's input (H, W, C·2 for
            image+saliency) to one logit; it is cloned, never trained in place. None
            picks the zoo's D by input size (`default_detector`).
        epochs: passes over the training images.
        learning_rate: Adam's learning rate (the paper's 1e-4).
        batch_size: images per step, in training and scoring.
        validation_split: share of the training images held out to report validation
            accuracy after each epoch (arrays only; 0 disables it).
        clip_range: the range images must lie in, or None to skip the check.
        cache_saliency: compute every training image's detector input once, before the
            first epoch, and keep it in memory: several times faster over many epochs,
            at the memory of the stacked inputs. By default the saliency is recomputed
            batch by batch in every epoch and no map is kept.
        random_state: seed for D's initialisation, the validation split and shuffling
            (through `keras.utils.set_random_seed`); None leaves seeds alone.
        strategy: the `tf.distribute.Strategy` D is trained and scored under
            (`MirroredStrategy` over several GPUs, `MultiWorkerMirroredStrategy` over
            several machines, `TPUStrategy`); None takes the one the classifier was
            built under, else the current one. D is built
            inside the strategy's scope, Keras's `fit` splits each batch over the
            replicas (`batch_size` is the global batch and must be a multiple of the
            replica count), and scoring spreads each batch over the local replicas.
        verbose: Keras's training bar: `"auto"`, 0, 1 or 2.

    Attributes:
        detector_: the fitted D (input: the stacked features; output: one logit).
        threshold_: the decision threshold on `decision_function`'s scale (0 after
            `fit`, i.e. probability 0.5; `calibrate` sets it).
        saliency_scale_: the factor applied to saliency maps (one over their standard
            deviation on the clean training images), so D sees values of the image's order.
        classifier_fingerprint_: `models.model_fingerprint` of the classifier at fit time.
        input_shape_: the image shape (H, W, C) the detector was fitted on.
        history_: Keras's training history (`{"loss": [...], "accuracy": [...], ...}`).
        classes_: `array([0, 1])`: 0 clean, 1 adversarial.

    Examples:
        >>> import numpy as np
        >>> from saliency_detect.detector import SaliencyDetector
        >>> from saliency_detect.models import mnist_net_f
        >>> rng = np.random.default_rng(0)
        >>> x_clean = rng.random((32, 28, 28, 1), dtype=np.float32) * 0.5
        >>> x_adv = x_clean + 0.5
        >>> det = SaliencyDetector(mnist_net_f(), epochs=1, verbose=0, random_state=0)
        >>> det.fit(x_clean, x_adv).predict_proba(x_clean[:2]).shape
        (2, 2)
    """

    def __init__(
        self,
        classifier: keras.Model,
        *,
        saliency: str = "gradient",
        input_mode: str = "image+saliency",
        detector: keras.Model | None = None,
        epochs: int = 10,
        learning_rate: float = 1e-4,
        batch_size: int = 128,
        validation_split: float = 0.1,
        clip_range: tuple[float, float] | None = (0.0, 1.0),
        cache_saliency: bool = False,
        random_state: int | None = None,
        strategy: tf.distribute.Strategy | None = None,
        verbose: str | int = "auto",
    ):
        self.classifier = classifier
        self.saliency = saliency
        self.input_mode = input_mode
        self.detector = detector
        self.epochs = epochs
        self.learning_rate = learning_rate
        self.batch_size = batch_size
        self.validation_split = validation_split
        self.clip_range = clip_range
        self.cache_saliency = cache_saliency
        self.random_state = random_state
        self.strategy = strategy
        self.verbose = verbose

    # ------------------------------------------------------------------ parameters
    def _check_params(self) -> None:
        if not isinstance(self.classifier, keras.Model):
            raise TypeError(f"`classifier` must be a Keras model. Received: {type(self.classifier).__name__}")
        if self.saliency not in DETECTOR_SALIENCY:
            raise ValueError(
                f"`saliency` must be one of {tuple(DETECTOR_SALIENCY)} (methods the detector computes in "
                f"one gradient pass inside its graph). Received: saliency={self.saliency!r}"
            )
        if self.input_mode not in INPUT_MODES:
            raise ValueError(
                f"`input_mode` must be one of {INPUT_MODES}. Received: input_mode={self.input_mode!r}"
            )
        if not isinstance(self.cache_saliency, bool):
            raise ValueError(f"`cache_saliency` must be True or False. Received: {self.cache_saliency!r}")
        if self.detector is not None and not isinstance(self.detector, keras.Model):
            raise TypeError(
                f"`detector` must be a Keras model or None. Received: {type(self.detector).__name__}"
            )
        check_positive_int(self.epochs, "epochs")
        check_positive_float(self.learning_rate, "learning_rate")
        check_positive_int(self.batch_size, "batch_size")
        split = self.validation_split
        if isinstance(split, bool) or not isinstance(split, (int, float)) or not 0 <= split < 1:
            raise ValueError(f"`validation_split` must be in [0, 1). Received: validation_split={split!r}")

    # ------------------------------------------------------------------ fitting
    def fit(
        self,
        X: ArrayLike | tf.data.Dataset,
        y: ArrayLike | None = None,
        *,
        validation_data: tuple[ArrayLike, ArrayLike] | tf.data.Dataset | None = None,
        backup_dir: str | os.PathLike[str] | None = None,
        callbacks: list[keras.callbacks.Callback] | None = None,
    ) -> SaliencyDetector:
        """Fit D on clean and adversarial images.

        Two call forms, as arrays: `fit(x_clean, x_adv)` (two image batches) or
        `fit(x, is_adversarial)` (images and one 0/1 label each). For data larger than
        memory pass a batched `tf.data.Dataset` of `(images, is_adversarial)` as `X`
        (and `y=None`); `validation_split` then does not apply, pass
        `validation_data=` (a dataset of the same form) instead.

        Args:
            X: clean images (N, H, W, C), all images, or a `tf.data.Dataset`.
            y: adversarial images (M, H, W, C), 0/1 labels (N,), or None for a dataset.
            validation_data: `(x, is_adversarial)` arrays or a dataset, used instead of
                `validation_split`.
            backup_dir: back up training state there after every epoch; rerunning `fit`
                with the same folder resumes an interrupted run
                (`keras.callbacks.BackupAndRestore`).
            callbacks: more Keras callbacks (early stopping, TensorBoard, ...).

        Returns:
            `self`.

        Raises:
            ValueError: for invalid parameters, images (shape, channels, dtype, range,
                NaN, empty) or labels, or a `detector` whose input or output does not fit.
            TypeError: if `classifier` or `detector` is not a Keras model.
        """
        self._check_params()
        strategy = resolve_strategy(self.strategy, self.classifier)
        image_shape = model_image_shape(self.classifier)
        if isinstance(X, tf.data.Dataset):
            if y is not None:
                raise ValueError(
                    "With a tf.data.Dataset as `X`, `y` must be None: the dataset yields the labels."
                )
            train, validation, clean_sample = X, validation_data, _clean_sample_from_dataset(X)
            image_shape = tuple(clean_sample.shape[1:])
        else:
            x, labels = split_fit_data(X, y, clip_range=self.clip_range, expected_shape=image_shape)
            image_shape = tuple(x.shape[1:])
            order = np.random.default_rng(self.random_state).permutation(len(x))
            x, labels = x[order], labels[order]
            n_val = round(len(x) * self.validation_split) if validation_data is None else 0
            validation = (x[:n_val], labels[:n_val]) if n_val else validation_data
            rows = n_val + training_rows(strategy, self.batch_size, len(x) - n_val)
            x, labels = x[n_val:rows], labels[n_val:rows]
            train = (x, labels)
            clean_sample = x[labels == 0][:_SCALE_SAMPLE]
        if self.random_state is not None:
            keras.utils.set_random_seed(int(self.random_state))

        with strategy.scope():
            scale = self._fit_scale(clean_sample)
            features = SaliencyFeatures(
                self.classifier, saliency=self.saliency, input_mode=self.input_mode, scale=scale
            )
            feature_shape = tuple(features.compute_output_shape((None, *image_shape))[1:])
            detector = self._build_detector(feature_shape)
            if self.cache_saliency:
                # D alone, on detector inputs computed once.
                model = detector
                train, validation = (
                    _precompute(features, train, self.batch_size),
                    _precompute(features, validation, self.batch_size),
                )
            else:
                inputs = keras.Input(image_shape, name="image")
                model = keras.Model(inputs, detector(features(inputs)), name="saliency_detector")
            model.compile(
                optimizer=keras.optimizers.Adam(self.learning_rate),
                loss=keras.losses.BinaryCrossentropy(from_logits=True),
                metrics=[keras.metrics.BinaryAccuracy(name="accuracy", threshold=0.0)],
            )
        all_callbacks = (
            [] if backup_dir is None else [keras.callbacks.BackupAndRestore(str(Path(backup_dir)))]
        )
        all_callbacks += list(callbacks or [])
        fit_args = {"x": train} if isinstance(train, tf.data.Dataset) else {"x": train[0], "y": train[1]}
        with _frozen(self.classifier), fitting_under(strategy):
            history = model.fit(
                **fit_args,
                batch_size=None if isinstance(train, tf.data.Dataset) else self.batch_size,
                epochs=self.epochs,
                validation_data=validation,
                callbacks=all_callbacks,
                shuffle=not isinstance(train, tf.data.Dataset),  # a dataset comes shuffled or not
                verbose=self.verbose,
            )
        self._set_fitted(detector, scale=scale, threshold=0.0, image_shape=image_shape)
        self.history_ = dict(history.history)
        return self

    def _fit_scale(self, clean_sample: np.ndarray) -> float:
        if self.input_mode == "image" or len(clean_sample) == 0:
            return 1.0
        raw = SaliencyFeatures(self.classifier, saliency=self.saliency, input_mode="saliency", scale=1.0)
        maps = map_batches(_compiled(raw, clean_sample.shape[1:]), (clean_sample,), self.batch_size)
        spread = float(np.std(maps))
        return 1.0 / spread if spread > 0 and np.isfinite(spread) else 1.0

    def _build_detector(self, feature_shape: tuple[int, ...]) -> keras.Model:
        if self.detector is None:
            return default_detector(feature_shape)
        detector = keras.models.clone_model(self.detector)
        expected = model_image_shape(detector)
        if expected is not None and any(
            e is not None and e != f for e, f in zip(expected, feature_shape, strict=True)
        ):
            raise ValueError(
                f"`detector` must take the detector's input of shape {feature_shape} (input_mode="
                f"{self.input_mode!r}). Received a model taking {expected}."
            )
        if detector.output_shape[-1] != 1:
            raise ValueError(
                "`detector` must output one logit (the score of 'adversarial'). "
                f"Received a model with output shape {detector.output_shape}."
            )
        return detector

    def _set_fitted(self, detector: keras.Model, *, scale: float, threshold: float, image_shape) -> None:
        self.detector_ = detector
        self.saliency_scale_ = float(scale)
        self.threshold_ = float(threshold)
        self.input_shape_ = tuple(int(s) for s in image_shape)
        self.classifier_fingerprint_ = model_fingerprint(self.classifier)
        self.classes_ = np.array([0, 1])
        self._scorer = None

    # ------------------------------------------------------------------ scoring
    def as_keras_model(self, *, return_logits: bool = False) -> keras.Model:
        """Return the fitted detector as one Keras model from images to D's logit.

        The model computes the saliency and runs D in one graph, so it can be
        differentiated (adaptive attacks), saved with `models.save_model` and loaded in
        safe mode, or exported.

        Args:
            return_logits: output `[classifier logits, detector logit]` from one forward
                pass of the classifier instead of the detector logit alone.

        Returns:
            A `keras.Model`; outputs (N, 1) logits of "adversarial".

        Raises:
            sklearn.exceptions.NotFittedError: before `fit`.
        """
        check_is_fitted(self)
        features = SaliencyFeatures(
            self.classifier,
            saliency=self.saliency,
            input_mode=self.input_mode,
            scale=self.saliency_scale_,
            return_logits=return_logits,
        )
        inputs = keras.Input(self.input_shape_, name="image")
        if return_logits:
            logits, stacked = features(inputs)
            return keras.Model(inputs, [logits, self.detector_(stacked)], name="guarded_scores")
        return keras.Model(inputs, self.detector_(features(inputs)), name="saliency_detector")

    def decision_function(self, x: ArrayLike | tf.data.Dataset) -> np.ndarray:
        """Return D's logit of "adversarial" for each image (above `threshold_`: flagged).

        Args:
            x: images (N, H, W, C), or a batched `tf.data.Dataset` of images (or of
                tuples whose first element is the images).

        Returns:
            float32 scores (N,).

        Raises:
            sklearn.exceptions.NotFittedError: before `fit`.
            ValueError: for invalid images (shape, channels, dtype, range, NaN, empty).
        """
        check_is_fitted(self)
        if self._scorer is None:
            model = self.as_keras_model()
            signature = [tf.TensorSpec((None, *self.input_shape_), tf.float32)]
            self._scorer = tf.function(
                lambda images: model(images, training=False)[:, 0], input_signature=signature
            )
        if isinstance(x, tf.data.Dataset):
            x = self._checked_batches(x)
        else:
            x = (check_images(x, clip_range=self.clip_range, expected_shape=self.input_shape_),)
        with resolve_strategy(self.strategy, self.classifier).scope():
            return map_batches(self._scorer, x, self.batch_size)

    def _checked_batches(self, dataset: tf.data.Dataset):
        """Each batch of images of `dataset`, checked as arrays are (shape, range, NaN)."""
        for i, element in enumerate(dataset):
            images = element[0] if isinstance(element, tuple) else element
            yield tf.convert_to_tensor(
                check_images(
                    images,
                    name=f"batch {i} of the dataset",
                    clip_range=self.clip_range,
                    expected_shape=self.input_shape_,
                )
            )

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | os.PathLike[str], *, include_classifier: bool = True) -> Path:
        """Save the fitted detector to a folder, atomically.

        The folder holds `detector.keras` (D), `config.json` (parameters, threshold,
        saliency scale, the classifier's fingerprint and a SHA-256 of every file) and,
        unless `include_classifier=False`, `classifier.keras`, so `load` works without
        the classifier at hand. The folder is written next to `path` and renamed into
        place; an existing detector folder at `path` is replaced.

        Args:
            path: the folder to write.
            include_classifier: also store the classifier.

        Returns:
            The folder written.

        Raises:
            sklearn.exceptions.NotFittedError: before `fit`.
            FileExistsError: if `path` exists and is not a saved detector.
        """
        check_is_fitted(self)
        path = Path(path)
        if path.exists() and not (path / "config.json").is_file():
            raise FileExistsError(
                f"'{path}' exists and is not a saved SaliencyDetector; refusing to replace it."
            )
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
        try:
            save_model(self.detector_, tmp / "detector.keras")
            files = ["detector.keras"]
            if include_classifier:
                save_model(self.classifier, tmp / "classifier.keras")
                files.append("classifier.keras")
            # Objects, not settings: `load` takes the classifier, `set_params` a strategy.
            runtime = ("classifier", "detector", "strategy")
            params = {k: v for k, v in self.get_params(deep=False).items() if k not in runtime}
            params["clip_range"] = None if self.clip_range is None else list(self.clip_range)
            config = {
                "format": _FORMAT,
                "library_version": __version__,
                "params": params,
                "threshold": self.threshold_,
                "saliency_scale": self.saliency_scale_,
                "input_shape": list(self.input_shape_),
                "classifier_fingerprint": self.classifier_fingerprint_,
                "sha256": {name: _sha256(tmp / name) for name in files},
            }
            (tmp / "config.json").write_text(json.dumps(config, indent=2))
            _replace_dir(tmp, path)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return path

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str],
        classifier: keras.Model | None = None,
        *,
        check_fingerprint: bool = True,
    ) -> SaliencyDetector:
        """Load a detector written by `save`, in Keras's safe mode.

        Args:
            path: the folder `save` wrote.
            classifier: the classifier to protect; None loads the one stored in the
                folder.
            check_fingerprint: refuse a `classifier` whose weights or architecture differ
                from the one the detector was fitted for.

        Returns:
            A fitted `SaliencyDetector`.

        Raises:
            FileNotFoundError: if `path` is not a saved detector, or holds no classifier
                and none was given.
            ValueError: if a file was modified or is corrupt, or `classifier` is not the
                one the detector was fitted for.
        """
        path = Path(path)
        config_path = path / "config.json"
        if not config_path.is_file():
            raise FileNotFoundError(
                f"No saved SaliencyDetector at '{path}': expected a folder with config.json."
            )
        try:
            config = json.loads(config_path.read_text())
            if config.get("format") != _FORMAT:
                raise ValueError(f"format {config.get('format')!r}, expected {_FORMAT!r}")
            params, checksums = dict(config["params"]), dict(config["sha256"])
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"'{config_path}' is not a valid SaliencyDetector configuration ({e}).") from e
        for name, digest in checksums.items():
            file = path / name
            if not file.is_file() or _sha256(file) != digest:
                raise ValueError(
                    f"'{file}' is missing or was modified after the detector was saved (SHA-256 mismatch); "
                    "refusing to load it."
                )
        if classifier is None:
            if "classifier.keras" not in checksums:
                raise FileNotFoundError(
                    f"'{path}' was saved without its classifier: pass `classifier=` to `load`."
                )
            classifier = load_model(path / "classifier.keras")
        elif check_fingerprint and model_fingerprint(classifier) != config["classifier_fingerprint"]:
            raise ValueError(
                f"The classifier passed to `load` is not the one the detector in '{path}' was fitted for "
                "(its architecture or weights differ). Pass the original classifier, or "
                "`check_fingerprint=False` to use this one anyway."
            )
        if params.get("clip_range") is not None:
            params["clip_range"] = tuple(params["clip_range"])
        detector = cls(classifier, **params)
        detector._set_fitted(
            load_model(path / "detector.keras", compile=False),
            scale=config["saliency_scale"],
            threshold=config["threshold"],
            image_shape=config["input_shape"],
        )
        detector.classifier_fingerprint_ = config["classifier_fingerprint"]
        return detector


def _precompute(features: SaliencyFeatures, data, batch_size: int):
    """Replace the images of `(images, labels)` arrays or a dataset by their detector inputs."""
    if data is None:
        return None
    if isinstance(data, tf.data.Dataset):
        step = tf.function(features.call)
        inputs, labels = map_batches(
            lambda images, labels, *_: (step(tf.cast(images, tf.float32)), tf.reshape(labels, [-1])),
            data,
            batch_size,
        )
        return inputs, labels
    images, labels = data
    images = check_images(images, name="validation images")
    return map_batches(_compiled(features, images.shape[1:]), (images,), batch_size), np.asarray(labels)


def _compiled(layer: keras.layers.Layer, image_shape) -> tf.types.experimental.PolymorphicFunction:
    """`layer.call` as a `tf.function` taking any number of images of `image_shape`."""
    return tf.function(layer.call, input_signature=[tf.TensorSpec((None, *image_shape), tf.float32)])


def _clean_sample_from_dataset(dataset: tf.data.Dataset) -> np.ndarray:
    """Up to `_SCALE_SAMPLE` clean images from a dataset of `(images, is_adversarial)` batches."""
    sample, count = [], 0
    for element in dataset:
        if not isinstance(element, tuple) or len(element) < 2:
            raise ValueError(
                "A dataset passed to `fit` must yield `(images, is_adversarial)` batches. "
                f"Received elements of type {type(element).__name__}."
            )
        images, labels = (np.asarray(t) for t in element[:2])
        if images.ndim != 4:
            raise ValueError(
                f"The dataset must be batched images (N, H, W, C). Received a batch of shape {images.shape}."
            )
        clean = images[np.asarray(labels).reshape(-1) == 0]
        sample.append(clean)
        count += len(clean)
        if count >= _SCALE_SAMPLE:
            break
    if not sample:
        raise ValueError("The dataset passed to `fit` is empty.")
    return check_images(np.concatenate(sample)[:_SCALE_SAMPLE], name="dataset images")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _replace_dir(tmp: Path, path: Path) -> None:
    """Move the finished folder `tmp` to `path`, replacing an old one only once the new one is complete."""
    if not path.exists():
        os.replace(tmp, path)
        return
    old = path.with_name(f".{path.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    os.replace(path, old)
    os.replace(tmp, path)
    shutil.rmtree(old, ignore_errors=True)
