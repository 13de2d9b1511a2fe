"""Training a classifier with the papers' settings, and measuring its accuracy."""

from __future__ import annotations

import os
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from numpy.typing import ArrayLike

from saliency_detect._distribute import resolve_strategy, trainable_in, training_rows
from saliency_detect._validation import (
    check_fraction,
    check_images,
    check_labels,
    check_non_negative_float,
    check_positive_float,
    check_positive_int,
    model_image_shape,
    model_num_classes,
    validates_once,
)
from saliency_detect.data import Dataset
from saliency_detect.models._io import ends_in_softmax, save_model

#: The detection paper's training settings (Adam), by data set. MNIST: learning rate
#: 1e-3 for 10 epochs; CIFAR-10 and image folders: learning rate 1e-4 (the paper gives
#: no epoch count for these; 50 and 30 are ours).
PAPER_DEFAULTS: dict[str, dict[str, float]] = {
    "mnist": {"epochs": 10, "learning_rate": 1e-3},
    "cifar10": {"epochs": 50, "learning_rate": 1e-4},
    "folder": {"epochs": 30, "learning_rate": 1e-4},
}


#: Classifier training recipes (`train_classifier(recipe=...)`); every value is the default
#: of the `train_classifier` argument of the same name, used where that argument is None.
#:
#: - `"paper"`: the detection paper's: Adam at a constant learning rate (the data set's in
#:   `PAPER_DEFAULTS`, as are the epochs), batch 128, no augmentation, hard labels.
#: - `"fast"`: a short-budget recipe from the fast-training literature (Smith's one-cycle,
#:   the airbench line): random shifts and flips, label smoothing 0.1, batch 256, AdamW
#:   (decoupled weight decay 0.05) with the learning rate warmed up linearly from 0 to its
#:   peak over the first 20 % of the steps, then cosine-annealed to 0 (Keras's
#:   `CosineDecay` with a warm-up). Its epochs and learning rate are `FAST_DEFAULTS`'.
CLASSIFIER_RECIPES: dict[str, dict[str, object]] = {
    "paper": {
        "optimizer": "adam",
        "batch_size": 128,
        "augment": False,
        "label_smoothing": 0.0,
        "weight_decay": 0.0,
        "warmup": None,
    },
    "fast": {
        "optimizer": "adamw",
        "batch_size": 256,
        "augment": True,
        "label_smoothing": 0.1,
        "weight_decay": 0.05,
        "warmup": 0.2,
    },
}

#: The fast recipe's epochs and peak learning rate, by data set.
FAST_DEFAULTS: dict[str, dict[str, float]] = {
    "mnist": {"epochs": 5, "learning_rate": 2e-3},
    "cifar10": {"epochs": 32, "learning_rate": 2e-3},
    "folder": {"epochs": 15, "learning_rate": 1e-3},
}

_OPTIMIZERS = ("adam", "adamw", "sgd")


def paper_defaults(dataset_name: str) -> dict[str, float]:
    """Return `{"epochs": ..., "learning_rate": ...}` the paper used for a data set.

    Examples:
        >>> from saliency_detect.models import paper_defaults
        >>> paper_defaults("mnist-sample")
        {'epochs': 10, 'learning_rate': 0.001}
    """
    return _by_prefix(PAPER_DEFAULTS, dataset_name)


def recipe_defaults(recipe: str, dataset_name: str) -> dict[str, object]:
    """Return every default of a classifier training recipe for a data set.

    Args:
        recipe: a key of `CLASSIFIER_RECIPES` (`"paper"` or `"fast"`).
        dataset_name: the data set's name (`Dataset.name`).

    Returns:
        The recipe's values with `epochs` and `learning_rate` added.

    Raises:
        ValueError: if `recipe` is unknown.

    Examples:
        >>> from saliency_detect.models import recipe_defaults
        >>> d = recipe_defaults("fast", "cifar10")
        >>> d["optimizer"], d["epochs"], d["learning_rate"], d["batch_size"]
        ('adamw', 32, 0.002, 256)
    """
    if recipe not in CLASSIFIER_RECIPES:
        raise ValueError(
            f"`recipe` must be one of {sorted(CLASSIFIER_RECIPES)} (see CLASSIFIER_RECIPES). "
            f"Received: recipe={recipe!r}"
        )
    schedule = PAPER_DEFAULTS if recipe == "paper" else FAST_DEFAULTS
    return {**CLASSIFIER_RECIPES[recipe], **_by_prefix(schedule, dataset_name)}


def _by_prefix(table: dict[str, dict[str, float]], dataset_name: str) -> dict[str, float]:
    for prefix, values in table.items():
        if dataset_name.startswith(prefix):
            return dict(values)
    return dict(table["mnist"])


_PAPER_CLASSIFIERS = {"mnist": "mnist_net_f", "cifar10": "cifar10_net_f", "folder": "vgg16_f"}


def paper_classifier(dataset_name: str) -> str:
    """Return the zoo name of the paper's classifier for a data set (MNIST-NET-f, CIFAR10-NET-f, VGG16-f).

    Examples:
        >>> from saliency_detect.models import paper_classifier
        >>> paper_classifier("mnist-sample"), paper_classifier("folder:/data/imagenet10")
        ('mnist_net_f', 'vgg16_f')
    """
    for prefix, name in _PAPER_CLASSIFIERS.items():
        if dataset_name.startswith(prefix):
            return name
    return _PAPER_CLASSIFIERS["mnist"]


def _augmenter(channels: int) -> keras.Sequential:
    # Small shifts for every data set; horizontal flips only for colour photographs
    # (a flipped digit is another digit, or none).
    steps = [keras.layers.RandomTranslation(0.1, 0.1, fill_mode="constant")]
    if channels == 3:
        steps.insert(0, keras.layers.RandomFlip("horizontal"))
    return keras.Sequential(steps, name="augment")


@validates_once
def train_classifier(
    model: keras.Model,
    dataset: Dataset,
    *,
    recipe: str = "paper",
    epochs: int | None = None,
    learning_rate: float | None = None,
    batch_size: int | None = None,
    augment: bool | None = None,
    optimizer: str | None = None,
    label_smoothing: float | None = None,
    weight_decay: float | None = None,
    validation: bool = True,
    save_path: str | os.PathLike[str] | None = None,
    backup_dir: str | os.PathLike[str] | None = None,
    random_state: int | None = None,
    callbacks: list[keras.callbacks.Callback] | None = None,
    verbose: str | int = "auto",
    strategy: tf.distribute.Strategy | None = None,
) -> keras.callbacks.History:
    """Train a classifier with cross-entropy, by the detection paper's recipe or a fast one.

    The model is compiled and trained in place, with Keras's progress bar. Models ending
    in logits (the zoo's) are trained with `from_logits=True`; models ending in a
    softmax are recognised and trained on their probabilities.

    `recipe="paper"` (the default) is the detection paper's: Adam at a constant learning
    rate. `recipe="fast"` reaches a strong classifier in a short budget: shifts and
    flips, label smoothing, AdamW and a warm-up then cosine learning-rate schedule over
    the whole run (`CLASSIFIER_RECIPES`; what it reaches on CIFAR-10 and how long it takes
    on 2 CPU cores is on the Models page). Every argument left at None takes the
    recipe's value for the data set (`recipe_defaults`). An interrupted run resumed from
    `backup_dir` continues the schedule where it stopped.

    Under a `tf.distribute.Strategy` (`MirroredStrategy` over several GPUs,
    `MultiWorkerMirroredStrategy` over several machines, `TPUStrategy`), Keras's `fit`
    splits every batch over the replicas; `batch_size` is then the global batch and must
    be a multiple of the replica count. A model built outside the strategy's scope is
    trained through a twin cloned inside it, and the trained weights are copied back.

    Args:
        model: a Keras classifier taking `dataset`'s images.
        dataset: the training and test images (`load_dataset`).
        recipe: `"paper"` or `"fast"` (`CLASSIFIER_RECIPES`).
        epochs: number of epochs; None takes the recipe's for the data set (paper: 10 for
            MNIST, `PAPER_DEFAULTS`; fast: 32 for CIFAR-10, `FAST_DEFAULTS`).
        learning_rate: the learning rate (the fast recipe's peak); None takes the
            recipe's (paper: 1e-3 for MNIST, 1e-4 for CIFAR-10; fast: 2e-3).
        batch_size: images per step; None takes the recipe's (paper 128, fast 256).
        augment: apply random shifts (and horizontal flips for RGB images) while
            training; None takes the recipe's (paper no, fast yes).
        optimizer: `"adam"`, `"adamw"` or `"sgd"` (Nesterov momentum 0.9); None takes
            the recipe's (paper Adam, fast AdamW).
        label_smoothing: share of each label spread over the other classes (0 for hard
            labels); None takes the recipe's (paper 0, fast 0.1).
        weight_decay: the optimizer's decoupled weight decay (0 for none); None takes the
            recipe's (paper 0, fast 0.05).
        validation: report loss and accuracy on the test images after every epoch.
        save_path: if given, the trained model is saved there (`.keras`, atomically).
        backup_dir: if given, training state is backed up there after every epoch, and
            an interrupted run called again with the same `backup_dir` resumes from the
            last finished epoch (`keras.callbacks.BackupAndRestore`).
        random_state: seed for weight-independent randomness (shuffling, augmentation,
            dropout) through `keras.utils.set_random_seed`; None leaves seeds alone.
        callbacks: more Keras callbacks (early stopping, TensorBoard, …), run after
            the backup callback.
        verbose: Keras's verbosity (`"auto"`, 0, 1 or 2).
        strategy: the `tf.distribute.Strategy` to train under; None takes the one the
            model was built under, else the current one (a single device outside any
            `strategy.scope()`).

    Returns:
        The `keras.callbacks.History` of the run.

    Raises:
        TypeError: if `dataset` is not a `Dataset`, or `strategy` not a strategy.
        ValueError: if the model's input or output does not fit the data set, the recipe
            or optimizer is unknown, or an argument is out of range.

    Examples:
        >>> from saliency_detect.data import load_dataset
        >>> from saliency_detect.models import mnist_net_f, train_classifier
        >>> ds = load_dataset("mnist-sample", train_size=256, test_size=64)
        >>> history = train_classifier(mnist_net_f(), ds, epochs=1, verbose=0, random_state=0)
        >>> sorted(history.history)
        ['accuracy', 'loss', 'val_accuracy', 'val_loss']
    """
    if not isinstance(dataset, Dataset):
        raise TypeError(
            "`dataset` must be a saliency_detect.data.Dataset (see load_dataset, or build one "
            f"from arrays with Dataset(name=..., x_train=..., ...)). Received: {type(dataset).__name__}"
        )
    defaults = recipe_defaults(recipe, dataset.name)

    def pick(value, key):
        return defaults[key] if value is None else value

    epochs = check_positive_int(pick(epochs, "epochs"), "epochs")
    learning_rate = check_positive_float(pick(learning_rate, "learning_rate"), "learning_rate")
    batch_size = check_positive_int(pick(batch_size, "batch_size"), "batch_size")
    augment = bool(pick(augment, "augment"))
    optimizer = pick(optimizer, "optimizer")
    if optimizer not in _OPTIMIZERS:
        raise ValueError(f"`optimizer` must be one of {list(_OPTIMIZERS)}. Received: optimizer={optimizer!r}")
    label_smoothing = check_fraction(pick(label_smoothing, "label_smoothing"), "label_smoothing")
    weight_decay = check_non_negative_float(pick(weight_decay, "weight_decay"), "weight_decay")
    strategy = resolve_strategy(strategy, model)
    x_train = check_images(
        dataset.x_train,
        name="dataset.x_train",
        clip_range=dataset.clip_range,
        expected_shape=model_image_shape(model),
    )
    y_train = check_labels(
        dataset.y_train, n=len(x_train), num_classes=dataset.num_classes, name="dataset.y_train"
    )
    n_out = model_num_classes(model, x_train.shape[1:])
    if n_out != dataset.num_classes:
        raise ValueError(
            f"The model has {n_out} outputs but the data set has {dataset.num_classes} classes. "
            f"Build the model with num_classes={dataset.num_classes}."
        )
    if random_state is not None:
        keras.utils.set_random_seed(int(random_state))

    rows = training_rows(strategy, batch_size, len(x_train))
    # Label smoothing needs one-hot labels; hard labels stay integer (sparse) as before.
    smooth = label_smoothing > 0

    def encode(y):
        return tf.one_hot(y, dataset.num_classes) if smooth else y

    train = tf.data.Dataset.from_tensor_slices((x_train[:rows], y_train[:rows]))
    train = train.shuffle(len(x_train), seed=random_state, reshuffle_each_iteration=True).batch(batch_size)
    if augment:
        augmenter = _augmenter(x_train.shape[-1])
        train = train.map(lambda x, y: (augmenter(x, training=True), y), num_parallel_calls=tf.data.AUTOTUNE)
    if smooth:
        train = train.map(lambda x, y: (x, encode(y)))
    train = train.prefetch(tf.data.AUTOTUNE)

    validation_data = None
    if validation:
        x_test = check_images(dataset.x_test, name="dataset.x_test", clip_range=dataset.clip_range)
        y_test = check_labels(
            dataset.y_test, n=len(x_test), num_classes=dataset.num_classes, name="dataset.y_test"
        )
        validation_data = (x_test, encode(y_test))

    from_logits = not ends_in_softmax(model)
    sparse_loss = keras.losses.SparseCategoricalCrossentropy(from_logits=from_logits)
    loss = (
        keras.losses.CategoricalCrossentropy(from_logits=from_logits, label_smoothing=label_smoothing)
        if smooth
        else sparse_loss
    )
    schedule = learning_rate
    if defaults["warmup"] is not None:
        steps = epochs * -(-rows // batch_size)
        warmup = round(float(defaults["warmup"]) * steps)
        schedule = keras.optimizers.schedules.CosineDecay(
            0.0, max(steps - warmup, 1), alpha=0.0, warmup_target=learning_rate, warmup_steps=warmup
        )
    all_callbacks = [] if backup_dir is None else [keras.callbacks.BackupAndRestore(str(Path(backup_dir)))]
    all_callbacks += list(callbacks or [])
    with trainable_in(model, strategy) as trained:
        trained.compile(
            optimizer=_optimizer(optimizer, schedule, weight_decay), loss=loss, metrics=["accuracy"]
        )
        history = trained.fit(
            train,
            epochs=epochs,
            validation_data=validation_data,
            validation_batch_size=batch_size,
            callbacks=all_callbacks,
            shuffle=False,  # `train` is already shuffled by tf.data
            verbose=verbose,
        )
    if trained is not model or smooth:
        # The user's model ends compiled for integer labels, as after single-device training
        # by the paper's recipe (`model.evaluate(x, y)` works whatever the recipe).
        model.compile(
            optimizer=_optimizer(optimizer, learning_rate, weight_decay),
            loss=sparse_loss,
            metrics=["accuracy"],
        )
    if save_path is not None:
        save_model(model, save_path)
    return history


def _optimizer(name: str, learning_rate, weight_decay: float) -> keras.optimizers.Optimizer:
    decay = weight_decay or None
    if name == "sgd":
        return keras.optimizers.SGD(learning_rate, momentum=0.9, nesterov=True, weight_decay=decay)
    if name == "adamw":
        return keras.optimizers.AdamW(learning_rate, weight_decay=weight_decay)
    return keras.optimizers.Adam(learning_rate, weight_decay=decay)


def predict_labels(
    model: keras.Model,
    x: ArrayLike,
    *,
    batch_size: int = 256,
    clip_range: tuple[float, float] | None = (0.0, 1.0),
) -> np.ndarray:
    """Return the classes `model` predicts for images `x`, as an int64 vector.

    Args:
        model: a classifier (logits or softmax output).
        x: images (N, H, W, C), float.
        batch_size: images per forward pass.
        clip_range: the range pixel values must lie in; None skips the check.

    Returns:
        The argmax of the model's output for every image.

    Raises:
        ValueError: if `x` is not a valid image batch for `model`.
    """
    x = check_images(x, clip_range=clip_range, expected_shape=model_image_shape(model))
    batch_size = check_positive_int(batch_size, "batch_size")
    return np.argmax(model.predict(x, batch_size=batch_size, verbose=0), axis=-1).astype(np.int64)


@validates_once
def classifier_accuracy(
    model: keras.Model,
    x: ArrayLike,
    y: ArrayLike,
    *,
    batch_size: int = 256,
    clip_range: tuple[float, float] | None = (0.0, 1.0),
) -> float:
    """Return the share of images `x` that `model` classifies as `y`.

    Args:
        model: a classifier (logits or softmax output).
        x: images (N, H, W, C), float.
        y: integer labels (N,).
        batch_size: images per forward pass.
        clip_range: the range pixel values must lie in; None skips the check.

    Returns:
        The accuracy, a float in [0, 1].

    Raises:
        ValueError: if `x` is not valid for `model`, or `y` does not hold one class index
            in `[0, number of model outputs)` per image.

    Examples:
        >>> import numpy as np
        >>> from saliency_detect.data import load_dataset
        >>> from saliency_detect.models import mnist_net_f, classifier_accuracy
        >>> ds = load_dataset("mnist-sample", test_size=100)
        >>> 0.0 <= classifier_accuracy(mnist_net_f(), ds.x_test, ds.y_test) <= 1.0
        True
    """
    predicted = predict_labels(model, x, batch_size=batch_size, clip_range=clip_range)
    # Labels the model cannot output (e.g. shifted by 100) would score 0.0 silently.
    y = check_labels(y, n=len(predicted), num_classes=model_num_classes(model, np.shape(x)[1:]))
    return float(np.mean(predicted == y))
