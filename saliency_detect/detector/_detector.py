"""`SaliencyDetector`: the detection paper's binary detector D on `[image ‖ saliency]`."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from numpy.typing import ArrayLike
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted

from saliency_detect._batching import map_batches
from saliency_detect._distribute import fitting_under, resolve_strategy, training_rows
from saliency_detect._prepared import owner_function, owner_steps
from saliency_detect._validation import (
    BOOLEAN,
    FRACTION,
    NON_NEGATIVE_NUMBER,
    OPEN_UNIT,
    POSITIVE_INT,
    POSITIVE_NUMBER,
    check_declared,
    check_images,
    check_input_shape,
    model_image_shape,
    one_of,
    optional,
)
from saliency_detect._version import __version__
from saliency_detect.detector._base import BinaryDetectorMixin, balanced_threshold, split_fit_data
from saliency_detect.detector._datasets import checked_dataset, dataset_errors, scan_dataset
from saliency_detect.detector._features import (
    DETECTOR_SALIENCY,
    INPUT_MODES,
    NORMALIZATIONS,
    SaliencyFeatures,
    compiled_features,
)
from saliency_detect.models._io import load_model, model_fingerprint, save_model
from saliency_detect.models._zoo import cifar10_net_d, mnist_net_d, vgg16_d

_FORMAT = "saliency_detect.SaliencyDetector/2"  # /2: checksums in manifest.json
_MANIFEST = "saliency_detect.manifest/1"
_SCALE_SAMPLE = 1024

#: Recipes of D: the defaults each one gives `epochs`, `learning_rate`, `threshold_rule`
#: and `normalization` when they are left at None, and whether training stops early.
RECIPES = {
    # Trains until the validation loss stops improving (early stopping with the best
    # epoch's weights restored, the learning rate cut on plateaus), then sets the
    # threshold on the validation images.
    "converge": {
        "epochs": 100,
        "learning_rate": 1e-3,
        "threshold_rule": "balanced_accuracy",
        "normalization": "image",
    },
    # The detection paper's fixed recipe: its gradient saliency scaled by one factor, Adam
    # 1e-4 for 10 epochs (CIFAR-10: 5), threshold at probability 0.5.
    "paper": {
        "epochs": 10,
        "learning_rate": 1e-4,
        "threshold_rule": "probability",
        "normalization": "global",
    },
}
THRESHOLD_RULES = ("balanced_accuracy", "probability")


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


#: `SaliencyDetector`'s parameters and what each must be, checked in order by `fit`.
_PARAMETERS = {
    "saliency": one_of(
        DETECTOR_SALIENCY, "methods the detector computes in one gradient pass inside its graph"
    ),
    "input_mode": one_of(INPUT_MODES),
    "normalization": optional(one_of(NORMALIZATIONS, "None: the recipe's")),
    "cache_saliency": BOOLEAN,
    "recipe": one_of(RECIPES),
    "epochs": optional(POSITIVE_INT),
    "learning_rate": optional(POSITIVE_NUMBER),
    "patience": POSITIVE_INT,
    "lr_patience": POSITIVE_INT,
    "lr_factor": OPEN_UNIT,
    "tol": NON_NEGATIVE_NUMBER,
    "threshold_rule": optional(one_of(THRESHOLD_RULES, "None: the recipe's")),
    "batch_size": POSITIVE_INT,
    "validation_split": FRACTION,
}


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
        normalization: how the gradient becomes D's saliency channel. `"image"`: its
            magnitude divided by the image's largest, in [0, 1] (Simonyan et al.'s
            saliency map). `"global"`: the signed gradient times one factor fitted on the
            clean training images (`saliency_scale_`), the paper's input. None takes the
            recipe's (converge: image, paper: global). On real MNIST JSMA the per-image map
            lifts ROC AUC from 0.979 to 0.994 (docs/results.md).
        detector: a Keras model mapping the detector's input (H, W, C·2 for
            image+saliency) to one logit; it is cloned, never trained in place. None
            picks the zoo's D by input size (`default_detector`).
        recipe: how D is trained. `"converge"` (the default) trains for up to `epochs`
            epochs and stops when the validation loss has not improved for `patience`
            epochs, restoring the best epoch's weights; the learning rate is multiplied by
            `lr_factor` after `lr_patience` epochs without improvement (Keras's
            `EarlyStopping` and `ReduceLROnPlateau`). `"paper"` is the detection paper's
            fixed recipe: `epochs` epochs at a constant learning rate, no early stop.
        epochs: the most passes over the training images; None takes the recipe's
            (converge: 100, paper: 10; the paper's CIFAR-10 runs used 5).
        learning_rate: Adam's (initial) learning rate; None takes the recipe's
            (converge: 1e-3, paper: 1e-4).
        patience: epochs without a better validation loss before training stops
            (converge recipe only).
        lr_patience: epochs without a better validation loss before the learning rate is
            cut (converge recipe only).
        lr_factor: the factor, in (0, 1), the learning rate is multiplied by on a plateau
            (converge recipe only).
        tol: the smallest decrease of the validation loss that counts as an improvement
            for `patience` and `lr_patience` (scikit-learn's `tol`); on an easily
            separated attack the loss keeps shrinking by negligible amounts, and this
            stops training there (converge recipe only).
        threshold_rule: how `fit` sets `threshold_`. `"balanced_accuracy"`: the threshold
            that maximises the mean of the clean and adversarial accuracies on the
            held-out validation images (the midpoint between two neighbouring scores).
            `"probability"`: 0, i.e. probability 0.5. None takes the recipe's (converge:
            balanced_accuracy, paper: probability). Without validation images the
            threshold stays 0 (with a warning). `calibrate` replaces it by a stated
            false-positive rate.
        batch_size: images per step, in training and scoring.
        validation_split: share of the training images held out (arrays only) for early
            stopping, the learning-rate schedule and the threshold; 0 disables it (then
            the converge recipe watches the training loss instead).
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
        threshold_: the decision threshold on `decision_function`'s scale, set by `fit`
            per `threshold_rule` (0 is probability 0.5); `calibrate` replaces it.
        threshold_source_: how `threshold_` was set: `"validation balanced accuracy"`,
            `"probability 0.5"` or `"calibrated at FPR f"`.
        saliency_scale_: the factor applied to saliency maps under `"global"`
            normalization (one over their standard deviation on the clean training
            images), so D sees values of the image's order; 1 otherwise.
        normalization_: the normalization used (`normalization`, or the recipe's).
        classifier_fingerprint_: `models.model_fingerprint` of the classifier at fit time.
        input_shape_: the image shape (H, W, C) the detector was fitted on.
        history_: Keras's training history (`{"loss": [...], "accuracy": [...], ...}`);
            with the converge recipe it also holds `"learning_rate"` per epoch.
        n_epochs_: the epochs trained (fewer than `epochs` when training stopped early).
        best_epoch_: the epoch (1-based) whose weights D keeps: the best validation loss
            under the converge recipe, the last epoch otherwise.
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
        normalization: str | None = None,
        detector: keras.Model | None = None,
        recipe: str = "converge",
        epochs: int | None = None,
        learning_rate: float | None = None,
        patience: int = 6,
        lr_patience: int = 2,
        lr_factor: float = 0.3,
        tol: float = 1e-4,
        threshold_rule: str | None = None,
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
        self.normalization = normalization
        self.detector = detector
        self.recipe = recipe
        self.epochs = epochs
        self.learning_rate = learning_rate
        self.patience = patience
        self.lr_patience = lr_patience
        self.lr_factor = lr_factor
        self.tol = tol
        self.threshold_rule = threshold_rule
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
        if self.detector is not None and not isinstance(self.detector, keras.Model):
            raise TypeError(
                f"`detector` must be a Keras model or None. Received: {type(self.detector).__name__}"
            )
        check_declared(self, _PARAMETERS)

    def _recipe_value(self, name: str):
        """The parameter `name`, or the recipe's default for it when it is None."""
        value = getattr(self, name)
        return RECIPES[self.recipe][name] if value is None else value

    def _training_callbacks(self, has_validation: bool) -> list[keras.callbacks.Callback]:
        """Early stopping and the learning-rate schedule of the converge recipe (none for paper)."""
        if self.recipe != "converge":
            return []
        monitor = "val_loss" if has_validation else "loss"
        if not has_validation:
            warnings.warn(
                "SaliencyDetector(recipe='converge') has no validation images (validation_split=0 and "
                "no validation_data): early stopping and the learning-rate schedule watch the "
                "training loss, and the threshold stays at probability 0.5.",
                stacklevel=3,
            )
        min_lr = float(self._recipe_value("learning_rate")) * 1e-3
        return [
            keras.callbacks.EarlyStopping(
                monitor=monitor,
                patience=int(self.patience),
                min_delta=float(self.tol),
                restore_best_weights=True,
            ),
            keras.callbacks.ReduceLROnPlateau(
                monitor=monitor,
                factor=float(self.lr_factor),
                patience=int(self.lr_patience),
                min_delta=float(self.tol),
                min_lr=min_lr,
            ),
        ]

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
        train, validation, clean_sample, image_shape = self._training_data(X, y, validation_data, strategy)
        if self.random_state is not None:
            keras.utils.set_random_seed(int(self.random_state))
        with strategy.scope():
            model, detector, scale, train, validation = self._training_model(
                clean_sample, image_shape, train, validation
            )
        history, stopper = self._train(model, train, validation, strategy, backup_dir, callbacks)
        self._set_fitted(detector, scale=scale, threshold=0.0, image_shape=image_shape)
        self.history_ = {key: [float(v) for v in values] for key, values in history.history.items()}
        self.n_epochs_ = len(self.history_.get("loss", []))
        # EarlyStopping restores the weights of its best epoch (improved by more than `tol`).
        self.best_epoch_ = stopper.best_epoch + 1 if stopper is not None else self.n_epochs_
        if self._recipe_value("threshold_rule") == "balanced_accuracy" and validation is not None:
            with dataset_errors(self.clip_range):
                scores, labels = _scores_and_labels(model, validation, self.batch_size)
            self.threshold_ = balanced_threshold(scores, labels)
            self.threshold_source_ = "validation balanced accuracy"
        return self

    def _training_data(self, X, y, validation_data, strategy):
        """`fit`'s data as Keras takes it: `(train, validation, a sample of clean images, image shape)`.

        Arrays are shuffled with `random_state`, split into training and validation images
        (`validation_split`, unless `validation_data` is given) and cut to a whole number of
        global batches under a multi-replica strategy; datasets are scanned and checked.
        """
        image_shape = model_image_shape(self.classifier)
        if isinstance(X, tf.data.Dataset):
            if y is not None:
                raise ValueError(
                    "With a tf.data.Dataset as `X`, `y` must be None: the dataset yields the labels."
                )
            train, validation = self._checked_datasets(X, validation_data, image_shape)
            with dataset_errors(self.clip_range):
                clean_sample = _clean_sample_from_dataset(train)
            return train, validation, clean_sample, tuple(clean_sample.shape[1:])
        if isinstance(validation_data, tf.data.Dataset):
            validation_data = self._checked_datasets(None, validation_data, image_shape)[1]
        x, labels = split_fit_data(X, y, clip_range=self.clip_range, expected_shape=image_shape)
        order = np.random.default_rng(self.random_state).permutation(len(x))
        x, labels = x[order], labels[order]
        n_val = round(len(x) * self.validation_split) if validation_data is None else 0
        validation = (x[:n_val], labels[:n_val]) if n_val else validation_data
        rows = n_val + training_rows(strategy, self.batch_size, len(x) - n_val)
        x, labels = x[n_val:rows], labels[n_val:rows]
        return (x, labels), validation, x[labels == 0][:_SCALE_SAMPLE], tuple(x.shape[1:])

    def _training_model(self, clean_sample, image_shape, train, validation):
        """D and the compiled model Keras trains, with the data in that model's input form.

        With `cache_saliency` Keras trains D alone on detector inputs computed once (so the
        data become those inputs); otherwise the saliency layer and D in one model.
        Returns `(model, D, saliency scale, train, validation)`.
        """
        scale = self._fit_scale(clean_sample)
        features = SaliencyFeatures(
            self.classifier,
            saliency=self.saliency,
            input_mode=self.input_mode,
            scale=scale,
            normalization=self._recipe_value("normalization"),
        )
        feature_shape = tuple(features.compute_output_shape((None, *image_shape))[1:])
        detector = self._build_detector(feature_shape)
        if self.cache_saliency:
            model = detector
            step = compiled_features(
                self.classifier,
                image_shape,
                saliency=self.saliency,
                input_mode=self.input_mode,
                scale=scale,
                normalization=self._recipe_value("normalization"),
            )
            with dataset_errors(self.clip_range):
                train = _precompute(step, train, self.batch_size)
                validation = _precompute(step, validation, self.batch_size)
        else:
            inputs = keras.Input(image_shape, name="image")
            model = keras.Model(inputs, detector(features(inputs)), name="saliency_detector")
        model.compile(
            optimizer=keras.optimizers.Adam(float(self._recipe_value("learning_rate"))),
            loss=keras.losses.BinaryCrossentropy(from_logits=True),
            metrics=[keras.metrics.BinaryAccuracy(name="accuracy", threshold=0.0)],
        )
        return model, detector, scale, train, validation

    def _train(self, model, train, validation, strategy, backup_dir, callbacks):
        """Keras's `fit` with the recipe's callbacks, f frozen; returns the history and the early stopper."""
        backup = [] if backup_dir is None else [keras.callbacks.BackupAndRestore(str(Path(backup_dir)))]
        recipe_callbacks = self._training_callbacks(validation is not None)
        is_dataset = isinstance(train, tf.data.Dataset)
        fit_args = {"x": train} if is_dataset else {"x": train[0], "y": train[1]}
        with _frozen(self.classifier), fitting_under(strategy), dataset_errors(self.clip_range):
            history = model.fit(
                **fit_args,
                batch_size=None if is_dataset else self.batch_size,
                epochs=int(self._recipe_value("epochs")),
                validation_data=validation,
                callbacks=backup + recipe_callbacks + list(callbacks or []),
                shuffle=not is_dataset,  # a dataset comes shuffled or not
                verbose=self.verbose,
            )
        stoppers = [c for c in recipe_callbacks if isinstance(c, keras.callbacks.EarlyStopping)]
        return history, (stoppers[0] if stoppers else None)

    def _checked_datasets(self, train, validation, image_shape):
        """Scan the datasets given to `fit` (refusing bad batches) and keep checking them in the pipeline."""
        checked = []
        for data, name in ((train, "training dataset"), (validation, "validation dataset")):
            if isinstance(data, tf.data.Dataset):
                scan_dataset(data, name=name, clip_range=self.clip_range, expected_shape=image_shape)
                data = checked_dataset(data, name=name, clip_range=self.clip_range)
            checked.append(data)
        return tuple(checked)

    def _fit_scale(self, clean_sample: np.ndarray) -> float:
        if (
            self.input_mode == "image"
            or self._recipe_value("normalization") != "global"
            or not len(clean_sample)
        ):
            return 1.0
        raw = compiled_features(
            self.classifier,
            tuple(clean_sample.shape[1:]),
            saliency=self.saliency,
            input_mode="saliency",
            scale=1.0,
            normalization="global",
        )
        maps = map_batches(raw, (clean_sample,), self.batch_size)
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
        self.normalization_ = self._recipe_value("normalization")
        self.threshold_ = float(threshold)
        self.threshold_source_ = "probability 0.5"
        self.input_shape_ = tuple(int(s) for s in image_shape)
        self.classifier_fingerprint_ = model_fingerprint(self.classifier)
        self.classes_ = np.array([0, 1])

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
            normalization=self.normalization_,
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
        if not isinstance(x, tf.data.Dataset):
            return super().decision_function(x)
        check_is_fitted(self)
        return self._scores(self._checked_batches(x))

    def _check_scored(self, x: ArrayLike) -> np.ndarray:
        return check_images(x, clip_range=self.clip_range, expected_shape=self.input_shape_)

    def _decision_function(self, x: np.ndarray) -> np.ndarray:
        return self._scores((x,))

    def _scores(self, batches) -> np.ndarray:
        """D's logits over arrays or a stream of checked batches: the detector's one compiled scorer."""
        signature = [tf.TensorSpec((None, *self.input_shape_), tf.float32)]
        scorer = owner_function(self, "decision_function", lambda: self.decision_tensor, signature)
        with resolve_strategy(self.strategy, self.classifier).scope():
            return map_batches(scorer, batches, self.batch_size)

    def decision_tensor(self, x: tf.Tensor) -> tf.Tensor:
        """`decision_function` as TensorFlow ops on a batch of images, differentiable in them.

        The saliency is computed in the graph (`SaliencyFeatures`), so the gradient of the
        score reaches the images through D and through f's gradient (second order): the
        joint adaptive attack (`attacks.joint_pgd`) differentiates this. It does not
        check the images; `decision_function` does.

        Args:
            x: a float32 tensor of images (N, H, W, C).

        Returns:
            D's logits of "adversarial", an (N,) float32 tensor.

        Raises:
            sklearn.exceptions.NotFittedError: before `fit`.
        """
        check_is_fitted(self)
        steps = owner_steps(self)  # the Keras model too is kept for the fitted state
        if "score_model" not in steps:
            steps["score_model"] = self.as_keras_model()
        return steps["score_model"](x, training=False)[:, 0]

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
        saliency scale, the classifier's fingerprint), unless `include_classifier=False`
        `classifier.keras` (so `load` works without the classifier at hand), and
        `manifest.json`, the SHA-256 of every other file, which `load` checks. The
        folder is written next to `path` and renamed into place; an existing detector
        folder at `path` is replaced.

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
                "threshold_source": self.threshold_source_,
                "saliency_scale": self.saliency_scale_,
                "input_shape": list(self.input_shape_),
                "classifier_fingerprint": self.classifier_fingerprint_,
            }
            (tmp / "config.json").write_text(json.dumps(config, indent=2))
            files.append("config.json")
            manifest = {"format": _MANIFEST, "sha256": {name: _sha256(tmp / name) for name in files}}
            (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2))
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
        _verify_manifest(path)
        config_path = path / "config.json"
        try:
            config = json.loads(config_path.read_text())
            if not isinstance(config, dict) or config.get("format") != _FORMAT:
                found = config.get("format") if isinstance(config, dict) else None
                raise ValueError(f"format {found!r}, expected {_FORMAT!r}")
            params = dict(config["params"])
            threshold = float(config["threshold"])
            scale = float(config["saliency_scale"])
            image_shape = [int(d) for d in config["input_shape"]]
            fingerprint = str(config["classifier_fingerprint"])
            if len(image_shape) != 3 or not all(np.isfinite([threshold, scale])):
                raise ValueError("input_shape must have 3 entries and threshold, saliency_scale be finite")
        except KeyError as e:
            raise ValueError(
                f"'{config_path}' is not a valid SaliencyDetector configuration: no field {e}."
            ) from e
        except (ValueError, TypeError) as e:
            raise ValueError(f"'{config_path}' is not a valid SaliencyDetector configuration ({e}).") from e
        stored = path / "classifier.keras"
        if classifier is None:
            if not stored.is_file():
                raise FileNotFoundError(
                    f"'{path}' was saved without its classifier: pass `classifier=` to `load`."
                )
            classifier = load_model(stored)
            if model_fingerprint(classifier) != fingerprint:
                raise ValueError(
                    f"'{stored}' is not the classifier the detector in '{path}' was fitted for (its "
                    "fingerprint differs from the one recorded at fit time); refusing to load it."
                )
        elif check_fingerprint and model_fingerprint(classifier) != fingerprint:
            raise ValueError(
                f"The classifier passed to `load` is not the one the detector in '{path}' was fitted for "
                "(its architecture or weights differ). Pass the original classifier, or "
                "`check_fingerprint=False` to use this one anyway."
            )
        if params.get("clip_range") is not None:
            params["clip_range"] = tuple(params["clip_range"])
        try:
            detector = cls(classifier, **params)
        except TypeError as e:
            raise ValueError(f"'{config_path}' is not a valid SaliencyDetector configuration ({e}).") from e
        detector._set_fitted(
            load_model(path / "detector.keras", compile=False),
            scale=scale,
            threshold=threshold,
            image_shape=image_shape,
        )
        detector.classifier_fingerprint_ = fingerprint
        detector.threshold_source_ = str(config.get("threshold_source", "probability 0.5"))
        return detector


def _precompute(step, data, batch_size: int):
    """Replace the images of `(images, labels)` arrays or a dataset by their detector inputs (`step`)."""
    if data is None:
        return None
    if isinstance(data, tf.data.Dataset):
        return map_batches(
            lambda images, labels, *_: (step(tf.cast(images, tf.float32)), tf.reshape(labels, [-1])),
            data,
            batch_size,
        )
    images, labels = data
    images = check_images(images, name="validation images")
    return map_batches(step, (images,), batch_size), np.asarray(labels)


def _scores_and_labels(model: keras.Model, data, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """`model`'s logits and the 0/1 labels of `(inputs, labels)` arrays or a dataset of such batches.

    Arrays go through a step with a `None` batch dimension, so the last, smaller batch
    does not retrace; a dataset's batches, whose structure varies, relax to such a
    signature after their second shape (`reduce_retracing`).
    """

    def score(inputs, labels, *_):
        return model(inputs, training=False)[:, 0], tf.reshape(labels, [-1])

    if isinstance(data, tf.data.Dataset):
        scores, labels = map_batches(tf.function(score, reduce_retracing=True), data, batch_size)
    else:
        inputs, labels = np.asarray(data[0]), np.asarray(data[1])
        scores, labels = map_batches(_array_step(score, inputs, labels), (inputs, labels), batch_size)
    return scores.astype(np.float64), labels.astype(np.int64)


def _array_step(fn, *arrays: np.ndarray):
    """`fn` compiled for batches of `arrays` of any length (a `None` batch dimension)."""
    signature = [tf.TensorSpec((None, *a.shape[1:]), tf.as_dtype(a.dtype)) for a in arrays]
    return tf.function(fn, input_signature=signature)


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


def _verify_manifest(path: Path) -> None:
    """Refuse a detector folder unless `manifest.json` lists exactly its files and each matches."""
    manifest_path = path / "manifest.json"
    if not (path / "config.json").is_file() and not manifest_path.is_file():
        raise FileNotFoundError(
            f"No saved SaliencyDetector at '{path}': expected a folder with manifest.json and config.json."
        )
    try:
        manifest = json.loads(manifest_path.read_text())
        if manifest.get("format") != _MANIFEST:
            raise ValueError(f"format {manifest.get('format')!r}, expected {_MANIFEST!r}")
        checksums = {str(name): str(digest) for name, digest in dict(manifest["sha256"]).items()}
    except FileNotFoundError:
        raise ValueError(
            f"'{path}' has no manifest.json (a detector saved by an older version, or a damaged folder): "
            "its files cannot be verified, so it is not loaded. Fit and save the detector again."
        ) from None
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise ValueError(
            f"'{manifest_path}' is not a valid manifest ({e}); refusing to load '{path}'."
        ) from e
    present = {p.name for p in path.iterdir() if p.is_file() and p.name != "manifest.json"}
    required = {"config.json", "detector.keras"}
    unlisted = sorted((present | required) - set(checksums))
    if unlisted:
        raise ValueError(
            f"'{path}' holds or needs file(s) {unlisted} that its manifest does not list; refusing to load "
            "a folder whose content cannot be verified."
        )
    for name, digest in checksums.items():
        file = path / name
        if not file.is_file() or _sha256(file) != digest:
            raise ValueError(
                f"'{file}' is missing or was modified after the detector was saved (SHA-256 mismatch); "
                "refusing to load it."
            )


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
