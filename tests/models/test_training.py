import keras
import numpy as np
import pytest

from saliency_detect import models
from saliency_detect.data import Dataset, load_dataset
from saliency_detect.models._training import _augmenter


@pytest.fixture(scope="module")
def tiny():
    return load_dataset("mnist-sample", train_size=256, test_size=64)


@pytest.mark.slow
def test_mnist_net_f_reaches_97_percent_on_the_sample(mnist_sample):
    model = models.mnist_net_f()
    models.train_classifier(model, mnist_sample, random_state=0, verbose=0)
    assert models.classifier_accuracy(model, mnist_sample.x_test, mnist_sample.y_test) >= 0.97


@pytest.mark.slow
def test_mnist_net_f_reaches_99_percent_on_full_mnist(shared_data, tmp_path):
    ds = load_dataset("mnist")
    model = models.mnist_net_f()
    models.train_classifier(model, ds, random_state=0, verbose=2)
    assert models.classifier_accuracy(model, ds.x_test, ds.y_test) >= 0.99


def test_paper_defaults_are_used_when_not_given(tiny):
    assert models.paper_defaults("mnist") == {"epochs": 10, "learning_rate": 1e-3}
    assert models.paper_defaults("cifar10")["learning_rate"] == 1e-4
    model = models.mnist_net_f()
    history = models.train_classifier(model, tiny, epochs=1, verbose=0)
    assert float(model.optimizer.learning_rate.numpy()) == pytest.approx(1e-3)
    assert history.epoch == [0]


def test_training_saves_the_model(tiny, tmp_path):
    model = models.mnist_net_f()
    models.train_classifier(model, tiny, epochs=1, save_path=tmp_path / "f.keras", verbose=0, random_state=0)
    loaded = models.load_model(tmp_path / "f.keras")
    np.testing.assert_allclose(
        loaded.predict(tiny.x_test, verbose=0), model.predict(tiny.x_test, verbose=0), atol=1e-6
    )


class _StopAfter(keras.callbacks.Callback):
    def __init__(self, epoch):
        super().__init__()
        self.stop_epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.stop_epoch:
            raise RuntimeError("killed")


def test_interrupted_training_resumes_from_the_backup(tiny, tmp_path):
    model = models.mnist_net_f()
    with pytest.raises(RuntimeError, match="killed"):
        models.train_classifier(
            model,
            tiny,
            epochs=3,
            backup_dir=tmp_path / "backup",
            callbacks=[_StopAfter(1)],
            verbose=0,
            random_state=0,
        )
    history = models.train_classifier(
        models.mnist_net_f(), tiny, epochs=3, backup_dir=tmp_path / "backup", verbose=0, random_state=0
    )
    assert history.epoch == [2], "epochs 0 and 1 were finished before the interruption"


class _Recorder(keras.callbacks.Callback):
    """Records the learning rate of every step and the loss and optimizer trained with."""

    def __init__(self):
        super().__init__()
        self.rates = []

    def on_train_begin(self, logs=None):
        self.loss, self.optimizer = self.model.loss, self.model.optimizer

    def on_train_batch_begin(self, batch, logs=None):
        self.rates.append(float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)))


def test_fast_recipe_warms_up_then_anneals_with_smoothed_labels(tiny):
    # 256 images at batch 64: 4 steps per epoch, 5 epochs, the first 20 % (4 steps) warm-up.
    recorder = _Recorder()
    model = models.mnist_net_f()
    history = models.train_classifier(
        model,
        tiny,
        recipe="fast",
        epochs=5,
        batch_size=64,
        learning_rate=0.01,
        callbacks=[recorder],
        verbose=0,
    )
    rates = np.array(recorder.rates)
    assert len(rates) == 20 and rates[0] == pytest.approx(0.0, abs=1e-9)
    assert rates.argmax() == 4 and rates.max() == pytest.approx(0.01, rel=1e-5)
    assert np.all(np.diff(rates[:5]) > 0) and np.all(np.diff(rates[4:]) < 0) and rates[-1] < 0.001
    assert type(recorder.optimizer).__name__ == "AdamW" and recorder.optimizer.weight_decay == pytest.approx(
        0.05
    )
    assert recorder.loss.get_config()["label_smoothing"] == pytest.approx(0.1)
    assert np.isfinite(history.history["val_loss"]).all()
    # The trained model ends compiled for integer labels, whatever the recipe.
    assert 0.0 <= model.evaluate(tiny.x_test, tiny.y_test, verbose=0)[1] <= 1.0


def test_recipe_values_are_overridden_one_by_one(tiny):
    recorder = _Recorder()
    models.train_classifier(
        models.mnist_net_f(), tiny, recipe="fast", epochs=1, optimizer="sgd", label_smoothing=0.0,
        weight_decay=0.0, batch_size=128, callbacks=[recorder], verbose=0,
    )  # fmt: skip
    assert type(recorder.optimizer).__name__ == "SGD" and recorder.optimizer.nesterov
    assert recorder.optimizer.momentum == pytest.approx(0.9) and recorder.optimizer.weight_decay is None
    assert "label_smoothing" not in recorder.loss.get_config(), "hard labels train on the sparse loss"
    assert len(recorder.rates) == 2
    defaults = models.recipe_defaults("fast", "cifar10")
    assert defaults == {**models.CLASSIFIER_RECIPES["fast"], **models.FAST_DEFAULTS["cifar10"]}
    assert (
        models.recipe_defaults("paper", "cifar10")["learning_rate"]
        == models.PAPER_DEFAULTS["cifar10"]["learning_rate"]
    )


def test_paper_recipe_keeps_a_constant_rate(tiny):
    recorder = _Recorder()
    models.train_classifier(models.mnist_net_f(), tiny, epochs=2, callbacks=[recorder], verbose=0)
    assert type(recorder.optimizer).__name__ == "Adam"
    assert recorder.rates == pytest.approx([1e-3] * 4)


def test_resumed_fast_training_continues_the_schedule(tiny, tmp_path):
    kwargs = {"recipe": "fast", "epochs": 3, "batch_size": 64, "verbose": 0, "random_state": 0}
    whole = _Recorder()
    models.train_classifier(models.mnist_net_f(), tiny, callbacks=[whole], **kwargs)
    with pytest.raises(RuntimeError, match="killed"):
        models.train_classifier(
            models.mnist_net_f(), tiny, backup_dir=tmp_path / "b", callbacks=[_StopAfter(0)], **kwargs
        )
    resumed = _Recorder()
    models.train_classifier(
        models.mnist_net_f(), tiny, backup_dir=tmp_path / "b", callbacks=[resumed], **kwargs
    )
    assert resumed.rates == pytest.approx(whole.rates[4:], abs=1e-9)


def test_augmentation_flips_only_colour_images(tiny):
    assert [type(layer).__name__ for layer in _augmenter(1).layers] == ["RandomTranslation"]
    assert [type(layer).__name__ for layer in _augmenter(3).layers] == ["RandomFlip", "RandomTranslation"]
    history = models.train_classifier(models.mnist_net_f(), tiny, epochs=1, augment=True, verbose=0)
    assert np.isfinite(history.history["loss"][0])


def test_softmax_models_are_trained_on_probabilities(tiny):
    inputs = keras.Input((28, 28, 1))
    x = keras.layers.Flatten()(inputs)
    model = keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(x))
    history = models.train_classifier(model, tiny, epochs=2, validation=False, verbose=0)
    assert model.loss.get_config()["from_logits"] is False
    assert history.history["loss"][1] < history.history["loss"][0]


def test_training_argument_errors(tiny):
    model = models.mnist_net_f()
    with pytest.raises(TypeError, match=r"must be a saliency_detect\.data\.Dataset"):
        models.train_classifier(model, (tiny.x_train, tiny.y_train))
    with pytest.raises(ValueError, match="epochs"):
        models.train_classifier(model, tiny, epochs=0)
    with pytest.raises(ValueError, match="learning_rate"):
        models.train_classifier(model, tiny, learning_rate=-1.0)
    with pytest.raises(ValueError, match=r"`recipe` must be one of \['fast', 'paper'\].*recipe='quick'"):
        models.train_classifier(model, tiny, recipe="quick")
    with pytest.raises(ValueError, match=r"`optimizer` must be one of \['adam', 'adamw', 'sgd'\].*'rmsprop'"):
        models.train_classifier(model, tiny, optimizer="rmsprop")
    with pytest.raises(
        ValueError, match=r"`label_smoothing` must be in \[0, 1\)\. Received: label_smoothing=1\.0"
    ):
        models.train_classifier(model, tiny, label_smoothing=1.0)
    with pytest.raises(
        ValueError, match=r"`weight_decay` must be a number >= 0\. Received: weight_decay=-0\.1"
    ):
        models.train_classifier(model, tiny, weight_decay=-0.1)
    with pytest.raises(ValueError, match="batch_size"):
        models.train_classifier(model, tiny, batch_size=0)
    with pytest.raises(ValueError, match="10 outputs but the data set has 3 classes"):
        bad = Dataset("x", tiny.x_train, tiny.y_train % 3, tiny.x_test, tiny.y_test % 3, ("a", "b", "c"))
        models.train_classifier(model, bad, epochs=1)
    with pytest.raises(ValueError, match=r"does not match the model's input.*\(N, 32, 32, 3\)"):
        models.train_classifier(models.cifar10_net_f(), tiny, epochs=1)


def test_predict_labels_and_accuracy(trained_mnist_f, mnist_sample):
    x, y = mnist_sample.x_test[:50], mnist_sample.y_test[:50]
    labels = models.predict_labels(trained_mnist_f, x)
    assert labels.dtype == np.int64 and labels.shape == (50,)
    assert models.classifier_accuracy(trained_mnist_f, x, y) == pytest.approx(np.mean(labels == y))
    assert models.classifier_accuracy(trained_mnist_f, x, (y + 1) % 10) < 0.1
    # Labels the model cannot output used to score 0.0 silently.
    with pytest.raises(ValueError, match=r"class indices in \[0, 9\]. Received labels in \[100, 109\]"):
        models.classifier_accuracy(trained_mnist_f, x, y + 100)
    with pytest.raises(ValueError, match="class indices"):
        models.classifier_accuracy(trained_mnist_f, x, y - 10)


@pytest.mark.parametrize(
    ("images", "message"),
    [
        (np.zeros((2, 28, 28, 1), np.uint8), r"floating-point.*astype\('float32'\) / 255"),
        (np.zeros((2, 28, 28), np.float32), r"rank 4.*x\[\.\.\., None\]"),
        (np.zeros((0, 28, 28, 1), np.float32), "empty batch"),
        (np.full((2, 28, 28, 1), np.nan, np.float32), "NaN"),
        (np.full((2, 28, 28, 1), 2.0, np.float32), r"clip range|match"),
        (np.zeros((2, 28, 28, 3), np.float32), r"expected images of shape \(N, 28, 28, 1\)"),
        (np.array([["a"]]), "numeric"),
    ],
)
def test_bad_images_get_clear_errors(trained_mnist_f, images, message):
    with pytest.raises((ValueError, TypeError), match=message):
        models.predict_labels(trained_mnist_f, images)


def test_bad_labels_get_clear_errors(trained_mnist_f, mnist_sample):
    x = mnist_sample.x_test[:4]
    with pytest.raises(ValueError, match="one label per image: expected 4"):
        models.classifier_accuracy(trained_mnist_f, x, [1, 2])
    with pytest.raises(ValueError, match="one-hot"):
        models.classifier_accuracy(trained_mnist_f, x, np.eye(10)[:4])
    with pytest.raises(ValueError, match="integer class labels"):
        models.classifier_accuracy(trained_mnist_f, x, [0.5, 1, 2, 3])
