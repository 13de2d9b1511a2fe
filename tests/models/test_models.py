import keras
import numpy as np
import pytest

from saliency_detect import models

# (builder, kwargs, input shape, outputs, parameters) — the parameter counts pin the
# architectures: a change to a zoo model must be deliberate.
ZOO = [
    ("mnist_net_f", {}, (28, 28, 1), 10, 312_202),
    ("mnist_net_d", {}, (28, 28, 2), 1, 56_273),
    ("cifar10_net_f", {}, (32, 32, 3), 10, 1_147_978),
    ("cifar10_net_d", {}, (32, 32, 6), 1, 271_489),
    ("vgg16_f", {"input_shape": (32, 32, 3)}, (32, 32, 3), 10, 14_848_586),
    ("vgg16_d", {"input_shape": (32, 32, 6)}, (32, 32, 6), 1, 14_848_001),
    ("resnet20", {}, (32, 32, 3), 10, 274_042),
]


@pytest.mark.parametrize(("name", "kwargs", "shape", "outputs", "params"), ZOO, ids=[z[0] for z in ZOO])
def test_builder_shapes_channels_and_parameter_count(name, kwargs, shape, outputs, params):
    model = models.get_model_builder(name)(**kwargs)
    assert model.input_shape == (None, *shape)
    assert model.output_shape == (None, outputs)
    assert model.count_params() == params
    assert not models.ends_in_softmax(model), "zoo models must return logits"
    out = model(np.random.default_rng(0).random((2, *shape), dtype=np.float32))
    assert out.shape == (2, outputs)


def test_detectors_are_smaller_than_their_classifiers():
    assert models.mnist_net_d().count_params() < models.mnist_net_f().count_params()
    assert models.cifar10_net_d().count_params() < models.cifar10_net_f().count_params()


def test_builders_follow_input_shape_and_num_classes():
    model = models.cifar10_net_f(input_shape=(28, 28, 1), num_classes=4)
    assert model.input_shape == (None, 28, 28, 1) and model.output_shape == (None, 4)
    assert models.mnist_net_d(input_shape=(28, 28, 6), num_classes=2).output_shape == (None, 2)


def test_named_layers_for_grad_cam():
    vgg = models.vgg16_f(input_shape=(32, 32, 3))
    for name in ("block2_conv1", "block4_conv1", "block5_pool"):
        assert vgg.get_layer(name) is not None
    assert isinstance(models.resnet20().get_layer("stage3_block3_conv2"), keras.layers.Conv2D)


def test_vgg16_pretrained_weights_get_the_caffe_preprocessing_they_expect(tmp_path):
    base = keras.applications.VGG16(include_top=False, weights=None, input_shape=(32, 32, 3))
    weights = tmp_path / "vgg16_notop.weights.h5"
    base.save_weights(weights)
    model = models.vgg16_f(input_shape=(32, 32, 3), weights=str(weights))
    x = np.random.default_rng(1).random((2, 32, 32, 3), dtype=np.float32)
    features = keras.Model(model.input, model.get_layer("block5_pool").output)(x)
    expected = base(keras.applications.vgg16.preprocess_input(x * 255.0))
    np.testing.assert_allclose(features, expected, rtol=1e-4, atol=1e-3)


def test_builder_argument_errors():
    with pytest.raises(ValueError, match="input_shape"):
        models.mnist_net_f(input_shape=(28, 28))
    with pytest.raises(ValueError, match="input_shape"):
        models.mnist_net_f(input_shape=(28, -1, 1))
    with pytest.raises(ValueError, match="num_classes"):
        models.mnist_net_f(num_classes=1)
    with pytest.raises(ValueError, match="num_classes"):
        models.mnist_net_d(num_classes=0)
    with pytest.raises(ValueError, match="3-channel"):
        models.vgg16_f(input_shape=(32, 32, 6), weights="imagenet")
    with pytest.raises(ValueError, match="Expected one of: mnist_net_f"):
        models.get_model_builder("alexnet")
    assert set(models.available_models()) == {z[0] for z in ZOO}


# --- softmax models -------------------------------------------------------------------


def _softmax_models():
    dense = keras.Sequential([keras.Input((5,)), keras.layers.Dense(3, activation="softmax")])
    inputs = keras.Input((5,))
    z = keras.layers.Dense(3)(inputs)
    activation = keras.Model(inputs, keras.layers.Activation("softmax")(z))
    layer = keras.Model(inputs, keras.layers.Softmax()(z))
    return {"dense": dense, "activation": activation, "softmax_layer": layer}


@pytest.mark.parametrize("kind", ["dense", "activation", "softmax_layer"])
def test_logits_model_reads_the_pre_softmax_output(kind):
    model = _softmax_models()[kind]
    assert models.ends_in_softmax(model)
    logits = models.logits_model(model)
    assert not models.ends_in_softmax(logits)
    x = np.random.default_rng(0).random((4, 5), dtype=np.float32)
    np.testing.assert_allclose(keras.ops.softmax(logits(x)), model(x), atol=1e-6)
    assert models.ends_in_softmax(model), "the user's model must not be changed"


def test_logits_model_returns_a_logits_model_itself():
    model = models.mnist_net_d()
    assert models.logits_model(model) is model


# --- saving and loading ---------------------------------------------------------------


def test_save_load_round_trip_is_exact_and_atomic(tmp_path):
    model = models.mnist_net_d()
    path = models.save_model(model, tmp_path / "sub" / "d.keras")
    assert path.is_file() and sorted(p.name for p in path.parent.iterdir()) == ["d.keras"]
    x = np.random.default_rng(0).random((3, 28, 28, 2), dtype=np.float32)
    np.testing.assert_array_equal(models.load_model(path)(x), model(x))


def test_fingerprint_ignores_compilation_but_not_weights(tmp_path):
    model = models.mnist_net_d()
    before = models.model_fingerprint(model)
    model.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy"])
    assert models.model_fingerprint(model) == before
    path = models.save_model(model, tmp_path / "d.keras")
    assert models.model_fingerprint(models.load_model(path, compile=False)) == before
    model.layers[-1].bias.assign(model.layers[-1].bias + 1.0)
    assert models.model_fingerprint(model) != before


def test_failed_save_leaves_nothing_on_disk(tmp_path, monkeypatch):
    model = models.mnist_net_d()

    def broken_save(path, *args, **kwargs):
        with open(path, "wb") as f:
            f.write(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(model, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        models.save_model(model, tmp_path / "d.keras")
    assert list(tmp_path.iterdir()) == []


def test_save_and_load_errors(tmp_path):
    with pytest.raises(ValueError, match=r"must end in '\.keras'"):
        models.save_model(models.mnist_net_d(), tmp_path / "d.h5")
    with pytest.raises(FileNotFoundError, match="No model file"):
        models.load_model(tmp_path / "missing.keras")
    (tmp_path / "corrupt.keras").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(ValueError, match="Could not load a Keras model"):
        models.load_model(tmp_path / "corrupt.keras")
