import warnings

import keras
import numpy as np
import pytest

from saliency_detect import saliency
from saliency_detect._prepared import prepare
from saliency_detect.models import mnist_net_f, predict_labels

RNG = np.random.default_rng(0)
X = RNG.random((6, 28, 28, 1), dtype=np.float32)


@pytest.fixture(scope="module")
def model():
    keras.utils.set_random_seed(1)
    return mnist_net_f()


# --- exactness ------------------------------------------------------------------------


def test_gradient_equals_central_finite_difference_in_float64():
    keras.utils.set_random_seed(3)
    policy = "float64"
    inputs = keras.Input((5, 5, 1), dtype=policy)
    h = keras.layers.Conv2D(3, 3, activation="relu", dtype=policy)(inputs)
    h = keras.layers.Flatten(dtype=policy)(h)
    h = keras.layers.Dense(4, activation="tanh", dtype=policy)(h)
    tiny = keras.Model(inputs, keras.layers.Dense(3, dtype=policy)(h))
    x = np.random.default_rng(4).random((2, 5, 5, 1))
    target = np.array([0, 2])
    ours = saliency.gradient(tiny, x.astype(np.float32), target=target)

    step = 1e-6
    fd = np.zeros_like(x)
    for index in np.ndindex(x.shape[1:]):
        up, down = x.copy(), x.copy()
        up[(slice(None), *index)] += step
        down[(slice(None), *index)] -= step
        logit_up = np.asarray(tiny(up))[np.arange(2), target]
        logit_down = np.asarray(tiny(down))[np.arange(2), target]
        fd[(slice(None), *index)] = (logit_up - logit_down) / (2 * step)
    np.testing.assert_allclose(ours, fd, rtol=1e-5, atol=1e-8)


def _two_layer(hidden_block):
    """x (2 features) -> Dense(3) -> ReLU (as given) -> Dense(2): answers known in closed form."""
    w1 = np.array([[1.0, 2.0, -1.0], [0.5, -1.0, 1.0]], np.float32)
    b1 = np.array([0.0, 0.0, -3.0], np.float32)
    w2 = np.array([[2.0, -1.0], [-1.0, 1.0], [1.0, 2.0]], np.float32)
    inputs = keras.Input((1, 2, 1))
    flat = keras.layers.Flatten()(inputs)
    hidden = hidden_block(flat)
    out = keras.layers.Dense(2, name="out")(hidden)
    model = keras.Model(inputs, out)
    model.set_weights([w1, b1, w2, np.zeros(2, np.float32)])  # hidden Dense first, wherever it is nested
    return model, w1, b1, w2


def _closed_form(x, w1, b1, w2, c, max_value=None):
    z = x.reshape(-1) @ w1 + b1
    gate = z > 0
    if max_value is not None:
        gate &= z < max_value
    g = w2[:, c]
    return {
        "vanilla": w1 @ (g * gate),
        "guided": w1 @ (g * gate * (g > 0)),
        "deconvnet": w1 @ (g * (g > 0)),
    }


HIDDEN = {
    "fused": lambda t: keras.layers.Dense(3, activation="relu")(t),
    "activation_layer": lambda t: keras.layers.Activation("relu")(keras.layers.Dense(3)(t)),
    "relu_layer": lambda t: keras.layers.ReLU()(keras.layers.Dense(3)(t)),
    "nested": lambda t: keras.Sequential([keras.Input((2,)), keras.layers.Dense(3, activation="relu")])(t),
}


@pytest.mark.parametrize("kind", list(HIDDEN))
def test_relu_rules_match_the_closed_form(kind):
    model, w1, b1, w2 = _two_layer(HIDDEN[kind])
    x = np.array([[[[1.0], [1.0]]]], np.float32)  # z = [1.5, 1, -3]: signs + + -
    for c in (0, 1):
        expected = _closed_form(x, w1, b1, w2, c)
        assert not np.allclose(expected["vanilla"], expected["guided"])
        assert not np.allclose(expected["guided"], expected["deconvnet"])
        target = np.array([c])
        np.testing.assert_allclose(
            saliency.gradient(model, x, target=target).ravel(), expected["vanilla"], atol=1e-6
        )
        np.testing.assert_allclose(
            saliency.guided_backprop(model, x, target=target).ravel(), expected["guided"], atol=1e-6
        )
        np.testing.assert_allclose(
            saliency.deconvnet(model, x, target=target).ravel(), expected["deconvnet"], atol=1e-6
        )


def test_bounded_relu_gates_at_its_maximum_in_guided_backprop():
    model, w1, b1, w2 = _two_layer(lambda t: keras.layers.ReLU(max_value=1.2)(keras.layers.Dense(3)(t)))
    x = np.array([[[[1.0], [1.0]]]], np.float32)  # z = [1.5, 1, -3]: the first unit is saturated
    expected = _closed_form(x, w1, b1, w2, 0, max_value=1.2)
    np.testing.assert_allclose(
        saliency.guided_backprop(model, x, target=np.array([0])).ravel(), expected["guided"], atol=1e-6
    )
    np.testing.assert_allclose(
        saliency.gradient(model, x, target=np.array([0])).ravel(), expected["vanilla"], atol=1e-6
    )


@pytest.mark.reference
def test_grad_cam_equals_tf_keras_vis(model):
    gradcam_module = pytest.importorskip("tf_keras_vis.gradcam")
    from tf_keras_vis.utils.scores import CategoricalScore

    classes = np.array([0, 3, 5, 7, 9, 1])
    theirs = gradcam_module.Gradcam(model, clone=True)(
        CategoricalScore(classes.tolist()),
        X,
        penultimate_layer="block2_conv2",
        expand_cam=False,
        normalize_cam=False,
    )
    ours = saliency.grad_cam(model, X, target=classes, layer="block2_conv2", upsample=False)
    assert ours.shape == np.asarray(theirs).shape == (6, 8, 8)
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-4 * float(np.abs(ours).max()))


def test_grad_cam_by_hand(model):
    layer = model.get_layer("block2_conv2")
    features_model = keras.Model(model.input, [layer.output, model.output])
    import tensorflow as tf

    x = tf.constant(X[:2])
    with tf.GradientTape() as tape:
        features, logits = features_model(x)
        score = tf.reduce_sum(logits[:, 4])
    grads = tape.gradient(score, features).numpy()
    expected = np.maximum((features.numpy() * grads.mean(axis=(1, 2), keepdims=True)).sum(-1), 0)
    ours = saliency.grad_cam(model, X[:2], target=4, layer="block2_conv2", upsample=False)
    np.testing.assert_allclose(ours, expected, rtol=1e-5, atol=1e-7)
    upsampled = saliency.grad_cam(model, X[:2], target=4, layer="block2_conv2")
    assert upsampled.shape == (2, 28, 28) and upsampled.min() >= 0


def test_grad_cam_layers_match_single_layer_calls(model):
    names = ["block1_conv2", "block2_pool"]
    maps = saliency.grad_cam_layers(model, X, layers=names)
    for name in names:
        np.testing.assert_allclose(maps[name], saliency.grad_cam(model, X, layer=name), rtol=1e-5, atol=1e-8)
    default = saliency.grad_cam(model, X)
    np.testing.assert_allclose(default, saliency.grad_cam(model, X, layer="block2_conv2"), rtol=1e-6)


def test_per_layer_maps_on_vgg16_layers_of_the_detection_paper():
    from saliency_detect.models import vgg16_f

    keras.utils.set_random_seed(0)
    vgg = vgg16_f(input_shape=(32, 32, 3))
    x = np.random.default_rng(1).random((2, 32, 32, 3), dtype=np.float32)
    names = ["block2_conv1", "block4_conv1", "block5_pool"]
    maps = saliency.grad_cam_layers(vgg, x, layers=names, target=3, upsample=False)
    assert [maps[n].shape for n in names] == [(2, 16, 16), (2, 4, 4), (2, 1, 1)]
    upsampled = saliency.grad_cam_layers(vgg, x, layers=names, target=3)
    assert all(upsampled[n].shape == (2, 32, 32) for n in names)
    assert all(np.all(upsampled[n] >= 0) for n in names)


# --- class selection ------------------------------------------------------------------


def test_class_selection(trained_mnist_f, mnist_sample):
    x, y = mnist_sample.x_test[:8], mnist_sample.y_test[:8]
    predicted = predict_labels(trained_mnist_f, x)
    by_prediction = saliency.gradient(trained_mnist_f, x)
    np.testing.assert_allclose(
        by_prediction, saliency.gradient(trained_mnist_f, x, target=predicted), rtol=1e-6
    )
    np.testing.assert_allclose(
        saliency.gradient(trained_mnist_f, x, target="true", labels=y),
        saliency.gradient(trained_mnist_f, x, target=y),
        rtol=1e-6,
    )
    other = (predicted + 1) % 10
    adversarial_class = saliency.gradient(trained_mnist_f, x, target=other)
    for i in range(8):
        assert not np.allclose(adversarial_class[i], by_prediction[i])
    cam_true = saliency.grad_cam(trained_mnist_f, x, target="true", labels=y)
    cam_other = saliency.grad_cam(trained_mnist_f, x, target=other)
    assert not np.allclose(cam_true, cam_other)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"target": "true"}, "needs the true classes"),
        ({"target": "adversarial"}, "'predicted', 'true'"),
        ({"target": np.array([1, 2])}, "one label per image: expected 6"),
        ({"target": np.array([0, 1, 2, 3, 4, 10])}, r"class indices in \[0, 9\]"),
        ({"target": "true", "labels": np.zeros(5)}, "expected 6"),
        ({"reduce": "mean"}, "reduce"),
        ({"batch_size": 0}, "batch_size"),
    ],
)
def test_bad_arguments(model, kwargs, message):
    with pytest.raises(ValueError, match=message):
        saliency.gradient(model, X, **kwargs)


@pytest.mark.parametrize(
    ("images", "message"),
    [
        (X[0], "rank 4"),
        (np.zeros((2, 28, 28, 3), np.float32), r"\(N, 28, 28, 1\)"),
        (np.full((2, 28, 28, 1), np.nan, np.float32), "NaN"),
        (np.zeros((0, 28, 28, 1), np.float32), "empty batch"),
    ],
)
@pytest.mark.parametrize(
    "method", ["gradient", "guided_backprop", "grad_cam", "smoothgrad", "integrated_gradients"]
)
def test_bad_images(model, images, message, method):
    with pytest.raises(ValueError, match=message):
        saliency.saliency_fn(method)(model, images)


def test_bad_grad_cam_layers(model):
    with pytest.raises(ValueError, match="'fc1' is not a convolutional feature map"):
        saliency.grad_cam(model, X, layer="fc1")
    with pytest.raises(ValueError, match=r"has no layer 'conv9'.*block2_conv2"):
        saliency.grad_cam(model, X, layer="conv9")
    with pytest.raises(ValueError, match="non-empty list"):
        saliency.grad_cam_layers(model, X, layers="block1_conv1")
    dense_only = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Flatten(), keras.layers.Dense(10)])
    with pytest.raises(ValueError, match="no convolution layer"):
        saliency.grad_cam(dense_only, X)
    inner = keras.Sequential(
        [keras.Input((28, 28, 1)), keras.layers.Conv2D(4, 3, name="inner_conv")], name="backbone"
    )
    outer = keras.Sequential(
        [keras.Input((28, 28, 1)), inner, keras.layers.Flatten(), keras.layers.Dense(10)]
    )
    with pytest.raises(ValueError, match="inside the nested model 'backbone'"):
        saliency.grad_cam(outer, X, layer="inner_conv")


# --- softmax models, the user's model, caching ----------------------------------------


def _with_softmax(model, fused):
    if not fused:
        return keras.Model(model.input, keras.layers.Softmax()(model.output))
    last = model.get_layer("logits")
    config = {**last.get_config(), "activation": "softmax", "name": "probs"}
    dense = keras.layers.Dense.from_config(config)
    out = dense(last.input)
    dense.set_weights(last.get_weights())
    return keras.Model(model.input, out)


@pytest.mark.parametrize("fused", [False, True])
@pytest.mark.parametrize(
    "method", ["gradient", "guided_backprop", "deconvnet", "grad_cam", "integrated_gradients"]
)
def test_softmax_and_logits_models_give_the_same_maps(model, fused, method):
    fn = saliency.saliency_fn(method)
    np.testing.assert_allclose(fn(_with_softmax(model, fused), X), fn(model, X), rtol=1e-5, atol=1e-7)


def test_maps_follow_weights_changed_between_calls(model):
    keras.utils.set_random_seed(7)
    softmax_model = _with_softmax(mnist_net_f(), fused=True)
    for method in ("gradient", "guided_backprop"):
        saliency.saliency_fn(method)(softmax_model, X)
    softmax_model.set_weights([w * 1.5 for w in softmax_model.get_weights()])
    fresh = keras.models.clone_model(softmax_model)
    fresh.set_weights(softmax_model.get_weights())
    for method in ("gradient", "guided_backprop"):
        fn = saliency.saliency_fn(method)
        np.testing.assert_allclose(fn(softmax_model, X), fn(fresh, X), rtol=1e-5, atol=1e-8)


def test_the_users_model_is_not_modified(model):
    before = model.predict(X, verbose=0)
    activations = [getattr(layer, "activation", None) for layer in model.layers]
    saliency.guided_backprop(model, X)
    saliency.deconvnet(model, X)
    assert [getattr(layer, "activation", None) for layer in model.layers] == activations
    np.testing.assert_array_equal(model.predict(X, verbose=0), before)


def test_batches_do_not_retrace(model):
    saliency.gradient(model, X, batch_size=4)  # 6 images: a full and a partial batch
    saliency.gradient(model, X[:5], batch_size=2)
    steps = [f for key, f in prepare(model)._functions.items() if key[0].__name__ == "_gradient_step"]
    assert len(steps) == 1 and steps[0].experimental_get_tracing_count() == 1
    np.testing.assert_allclose(
        saliency.gradient(model, X, batch_size=4),
        saliency.gradient(model, X, batch_size=6),
        rtol=1e-5,
        atol=1e-8,
    )


def test_reductions(model):
    full = saliency.gradient(model, X)
    np.testing.assert_allclose(saliency.gradient(model, X, reduce="abs"), np.abs(full))
    np.testing.assert_allclose(saliency.gradient(model, X, reduce="max_abs"), np.abs(full).max(axis=-1))


def test_non_relu_and_unreachable_relus_warn():
    inputs = keras.Input((28, 28, 1))
    h = keras.layers.Conv2D(4, 3, activation="swish")(inputs)
    h = keras.layers.Lambda(lambda t: keras.ops.relu(t))(h)
    h = keras.layers.Flatten()(keras.layers.LeakyReLU()(h))
    model = keras.Model(inputs, keras.layers.Dense(10)(h))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        saliency.guided_backprop(model, X[:2])
    text = " ".join(str(w.message) for w in caught)
    assert "silu" in text and "LeakyReLU" in text and "Lambda" in text  # Keras names swish "silu"


def test_subclassed_models_cannot_be_cloned_for_guided_backprop():
    class Tiny(keras.Model):
        def __init__(self):
            super().__init__()
            self.flat, self.dense = keras.layers.Flatten(), keras.layers.Dense(10, activation="relu")

        def call(self, x):
            return self.dense(self.flat(x))

    tiny = Tiny()
    tiny(X[:1])
    assert saliency.gradient(tiny, X[:2]).shape == (2, 28, 28, 1)
    # It declares no output shape: the number of classes is read by running it once.
    from saliency_detect.models import classifier_accuracy

    assert 0.0 <= classifier_accuracy(tiny, X[:4], np.zeros(4, int)) <= 1.0
    with pytest.raises(TypeError, match="functional or Sequential"):
        saliency.guided_backprop(tiny, X[:2])


def test_sanity_check_says_why_it_cannot_copy_a_subclassed_model():
    class Sized(keras.Model):  # an argument in __init__ and no get_config: Keras cannot rebuild it
        def __init__(self, units):
            super().__init__()
            self.flat, self.dense = keras.layers.Flatten(), keras.layers.Dense(units)

        def call(self, x):
            return self.dense(self.flat(x))

    sized = Sized(10)
    sized(X[:1])
    with pytest.raises(TypeError, match=r"randomizes a copy of `model`.*get_config.*Received: model=Sized"):
        saliency.sanity_check(sized, X[:2], method="gradient")


# --- SmoothGrad and Integrated Gradients ----------------------------------------------


def test_smoothgrad_is_seeded_and_tends_to_the_gradient(model):
    a = saliency.smoothgrad(model, X, n_samples=5, random_state=1)
    np.testing.assert_array_equal(a, saliency.smoothgrad(model, X, n_samples=5, random_state=1))
    assert not np.allclose(a, saliency.smoothgrad(model, X, n_samples=5, random_state=2))
    tiny_noise = saliency.smoothgrad(model, X, n_samples=2, noise_level=1e-7, random_state=0)
    np.testing.assert_allclose(tiny_noise, saliency.gradient(model, X), rtol=1e-3, atol=1e-6)
    assert saliency.smoothgrad(model, X, n_samples=3, squared=True, random_state=0).min() >= 0
    with pytest.raises(ValueError, match="noise_level"):
        saliency.smoothgrad(model, X, noise_level=0)


def test_integrated_gradients_completeness(trained_mnist_f, mnist_sample):
    x = mnist_sample.x_test[:4]
    classes = predict_labels(trained_mnist_f, x)
    attributions = saliency.integrated_gradients(trained_mnist_f, x, target=classes, steps=256)
    logits_x = trained_mnist_f.predict(x, verbose=0)[np.arange(4), classes]
    logits_0 = trained_mnist_f.predict(np.zeros_like(x), verbose=0)[np.arange(4), classes]
    np.testing.assert_allclose(attributions.sum(axis=(1, 2, 3)), logits_x - logits_0, rtol=0.02, atol=0.05)
    with pytest.raises(ValueError, match="broadcasts"):
        saliency.integrated_gradients(trained_mnist_f, x, baseline=np.zeros((3, 3)))


# --- registry and sanity check --------------------------------------------------------


def test_saliency_fn_registry(model):
    assert set(saliency.available_methods()) == {
        "gradient", "guided_backprop", "deconvnet", "grad_cam", "smoothgrad", "integrated_gradients"
    }  # fmt: skip
    fn = saliency.saliency_fn("grad_cam", layer="block1_conv1", upsample=False)
    assert fn(model, X).shape == (6, 26, 26)
    with pytest.raises(ValueError, match="Expected one of: gradient"):
        saliency.saliency_fn("lime")
    with pytest.raises(TypeError, match=r"unknown option.*'layer'"):
        saliency.saliency_fn("gradient", layer="x")


@pytest.mark.parametrize("method", ["gradient", "grad_cam"])
def test_sanity_check_gradient_and_grad_cam_change_when_weights_are_randomized(
    trained_mnist_f, mnist_sample, method
):
    result = saliency.sanity_check(trained_mnist_f, mnist_sample.x_test[:16], method=method, random_state=0)
    assert result.layers[0] == "logits" and result.layers[-1] == "block1_conv1"
    assert result.per_image.shape == (7, 16)
    assert result.passed(), result.to_markdown()
    assert "| logits |" in result.to_markdown()


def test_sanity_check_finds_guided_backprop_insensitive(trained_mnist_f, mnist_sample):
    x = mnist_sample.x_test[:16]
    guided = saliency.sanity_check(trained_mnist_f, x, method="guided_backprop", random_state=0)
    plain = saliency.sanity_check(trained_mnist_f, x, method="gradient", random_state=0)
    # Adebayo et al.'s finding, reproduced: guided backprop barely reacts to the weights.
    assert guided.correlations[-1] > plain.correlations[-1] + 0.2
    assert guided.correlations[0] > 0.9
    absolute = saliency.sanity_check(trained_mnist_f, x, method="gradient", absolute=True, random_state=0)
    assert absolute.correlations[-1] > plain.correlations[-1]
