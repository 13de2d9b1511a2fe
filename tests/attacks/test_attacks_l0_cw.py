"""JSMA, C&W L2 and Pixel Attack: correctness, success on MNIST-NET-f, and ART references."""

import importlib

import keras
import numpy as np
import pytest

from saliency_detect import attacks
from saliency_detect.models import mnist_net_f, predict_labels

X = np.random.default_rng(0).random((6, 28, 28, 1), dtype=np.float32) * 0.8


@pytest.fixture(scope="module")
def digits(mnist_sample):
    return mnist_sample.x_test[:100], mnist_sample.y_test[:100]


def _l0(a, b):
    return np.count_nonzero(np.any(a != b, axis=-1).reshape(len(a), -1), axis=1)


# --- JSMA -----------------------------------------------------------------------------


def _brute_force_pair(alpha, beta, domain):
    """Papernot's rule by enumeration, with the fallback to the largest alpha_pq - beta_pq."""
    strict, loose = {}, {}
    for a in range(len(alpha)):
        for b in range(len(alpha)):
            if a != b and domain[a] and domain[b]:
                sa, sb = alpha[a] + alpha[b], beta[a] + beta[b]
                loose[(a, b)] = sa - sb
                if sa > 0 and sb < 0:
                    strict[(a, b)] = sa * -sb
    scores = strict or loose
    return (set(max(scores, key=scores.get)) if scores else None), bool(strict)


@pytest.mark.parametrize("chunk", [1 << 24, 7])
def test_best_pair_equals_brute_force(monkeypatch, chunk):
    import sys

    jsma_impl = sys.modules["saliency_detect.attacks.jsma"]
    monkeypatch.setattr(jsma_impl, "_PAIR_CHUNK", chunk)  # 7: one row per chunk
    rng = np.random.default_rng(1)
    alpha, beta = rng.normal(size=(4, 9)).astype(np.float32), rng.normal(size=(4, 9)).astype(np.float32)
    domain = rng.random((4, 9)) > 0.2
    alpha[1], beta[1] = np.abs(alpha[1]), np.abs(beta[1])  # no pair meets the sign conditions
    domain[2] = False
    domain[2, [1, 5]] = True  # a single allowed pair
    domain[3] = False
    domain[3, 4] = True  # fewer than two features left: nothing to move
    p, q, found = (t.numpy() for t in jsma_impl._best_pairs(alpha, beta, domain))
    uses_paper_rule = []
    for i in range(4):
        expected, strict = _brute_force_pair(alpha[i], beta[i], domain[i])
        uses_paper_rule.append(strict)
        assert found[i] == (expected is not None)
        if expected is not None:
            assert {p[i], q[i]} == expected
    assert uses_paper_rule[0] and not uses_paper_rule[1]


def _brute_force_scores(alpha, beta, domain):
    """Per image, the best strict score and the best loose score over all pairs (-inf: none)."""
    a_pq, b_pq = alpha[:, :, None] + alpha[:, None, :], beta[:, :, None] + beta[:, None, :]
    allowed = domain[:, :, None] & domain[:, None, :] & ~np.eye(alpha.shape[1], dtype=bool)
    strict = np.where(allowed & (a_pq > 0) & (b_pq < 0), a_pq * -b_pq, -np.inf)
    loose = np.where(allowed, a_pq - b_pq, -np.inf)
    return strict.reshape(len(alpha), -1).max(axis=1), loose.reshape(len(alpha), -1).max(axis=1)


@pytest.mark.parametrize("relation", ["independent", "correlated", "anticorrelated", "ties", "sparse"])
@pytest.mark.parametrize("n", [2, 3, 17, 60])
def test_pruned_pair_search_is_exact(relation, n):
    """The Pareto-layer pruning never misses the best pair, whatever the gradients look like.

    Anticorrelated alpha and -beta put most features on the first Pareto layer (the worst
    case for pruning); ties and zeros exercise the ordering's tie-breaking.
    """
    import sys

    jsma_impl = sys.modules["saliency_detect.attacks.jsma"]
    rng = np.random.default_rng(n)
    a, v = rng.normal(size=(64, n)), rng.normal(size=(64, n))
    if relation == "correlated":
        v = a + 0.3 * v
    elif relation == "anticorrelated":
        v = -a + 0.05 * v
    elif relation == "ties":
        a, v = np.round(a), np.round(v)
    elif relation == "sparse":
        a, v = a * (rng.random(a.shape) < 0.2), v * (rng.random(v.shape) < 0.2)
    alpha, beta = a.astype(np.float32), (-v).astype(np.float32)
    domain = rng.random((64, n)) > 0.3
    p, q, found = (t.numpy() for t in jsma_impl._best_pairs(alpha, beta, domain))
    strict, loose = _brute_force_scores(alpha, beta, domain)
    np.testing.assert_array_equal(found, np.isfinite(loose))
    rows = np.flatnonzero(found)
    p, q = p[rows], q[rows]
    assert np.all(p != q) and np.all(domain[rows, p]) and np.all(domain[rows, q])
    a_pq, b_pq = alpha[rows, p] + alpha[rows, q], beta[rows, p] + beta[rows, q]
    paper = np.isfinite(strict[rows])
    assert np.all((a_pq[paper] > 0) & (b_pq[paper] < 0))
    np.testing.assert_allclose(
        np.where(paper, a_pq * -b_pq, a_pq - b_pq), np.where(paper, strict[rows], loose[rows]), rtol=1e-6
    )
    if relation in ("independent", "correlated") and n == 60:
        candidates = jsma_impl._strict_candidates(alpha, beta, domain).shape[1]
        assert candidates < n // 2, "the pruning keeps few features on typical gradients"


def test_jsma_untargeted_gamma_0_1_succeeds_on_90_percent(trained_mnist_f, digits):
    x, y = digits
    x_adv = attacks.jsma(trained_mnist_f, x, y, gamma=0.1)
    assert np.mean(predict_labels(trained_mnist_f, x_adv) != y) >= 0.90
    assert _l0(x_adv, x).max() <= int(0.1 * 784)
    assert x_adv.min() >= 0 and x_adv.max() <= 1


def test_jsma_targeted_with_random_and_given_targets(trained_mnist_f, digits):
    x = digits[0][:20]
    predicted = predict_labels(trained_mnist_f, x)
    given = (predicted + 3) % 10
    x_adv = attacks.jsma(trained_mnist_f, x, given, targeted=True, gamma=0.15)
    assert np.mean(predict_labels(trained_mnist_f, x_adv) == given) >= 0.8
    random_adv = attacks.jsma(trained_mnist_f, x, targeted=True, random_state=0, gamma=0.15)
    reached = predict_labels(trained_mnist_f, random_adv)
    assert np.mean(reached != predicted) >= 0.8


def test_jsma_negative_theta_decreases_features():
    keras.utils.set_random_seed(0)
    model = mnist_net_f()
    x_adv = attacks.jsma(model, X, theta=-1.0, gamma=0.05)
    assert np.all(x_adv <= X + 1e-7)
    with pytest.raises(ValueError, match="theta"):
        attacks.jsma(model, X, theta=0)
    with pytest.raises(ValueError, match="gamma"):
        attacks.jsma(model, X, gamma=1.5)


def test_jsma_on_logits_and_probabilities(trained_mnist_f, digits):
    """Both outputs attack within the budget; they pick different pixels; a bad name is refused."""
    x, y = digits[0][:20], digits[1][:20]
    logits_adv = attacks.jsma(trained_mnist_f, x, y, gamma=0.1, output="logits")
    probabilities_adv = attacks.jsma(trained_mnist_f, x, y, gamma=0.1, output="probabilities")
    for x_adv in (logits_adv, probabilities_adv):
        assert np.mean(predict_labels(trained_mnist_f, x_adv) != y) >= 0.9
        assert _l0(x_adv, x).max() <= int(0.1 * 784)
    assert not np.array_equal(logits_adv, probabilities_adv)
    with pytest.raises(ValueError, match=r"`output` must be one of \['probabilities', 'logits'\]"):
        attacks.jsma(trained_mnist_f, x, output="softmax")


@pytest.mark.reference
def test_jsma_matches_art_success_at_no_larger_l0(trained_mnist_f, digits):
    art = pytest.importorskip("art.attacks.evasion")
    from art.estimators.classification import TensorFlowV2Classifier

    """The issue's reference: success within 5 points of ART's, mean L0 at most 1.1x ART's.

    Measured on 64 images: ours 81% vs ART 70% reach the +1 target, mean L0 where both
    succeed 33 vs 44 (docs/attacks.md). The logits' map (`output="logits"`) falls short of
    ART on this model, which is why the softmax output is the default.
    """
    x = digits[0][:32]  # ART takes ~1.3 s per image; with the logits' map 32 were too few, not now
    targets = (predict_labels(trained_mnist_f, x) + 1) % 10
    classifier = TensorFlowV2Classifier(
        trained_mnist_f, nb_classes=10, input_shape=(28, 28, 1), clip_values=(0.0, 1.0),
        loss_object=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )  # fmt: skip
    theirs = art.SaliencyMapMethod(classifier, theta=1.0, gamma=0.1, verbose=False).generate(
        x, y=np.eye(10)[targets]
    )
    ours = attacks.jsma(trained_mnist_f, x, targets, targeted=True, gamma=0.1)
    their_success = predict_labels(trained_mnist_f, theirs) == targets
    our_success = predict_labels(trained_mnist_f, ours) == targets
    print(f"JSMA success: ours {our_success.mean():.3f}, ART {their_success.mean():.3f}")
    assert our_success.mean() >= their_success.mean() - 0.05
    both = our_success & their_success
    ours_l0, their_l0 = _l0(ours, x)[both].mean(), _l0(theirs, x)[both].mean()
    print(f"JSMA mean L0 where both succeed: ours {ours_l0:.1f}, ART {their_l0:.1f}")
    assert ours_l0 <= 1.1 * their_l0


# --- Carlini & Wagner L2 ----------------------------------------------------------------


def test_carlini_wagner_reaches_99_percent(trained_mnist_f, digits):
    x, y = digits[0][:50], digits[1][:50]
    x_adv = attacks.carlini_wagner_l2(trained_mnist_f, x, y)
    success = predict_labels(trained_mnist_f, x_adv) != y
    assert success.mean() >= 0.99
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    l2 = np.sqrt(((x_adv - x) ** 2).sum(axis=(1, 2, 3)))
    fgsm_l2 = np.sqrt(((attacks.fgsm(trained_mnist_f, x, y, eps=0.3) - x) ** 2).sum(axis=(1, 2, 3)))
    assert l2[success].mean() < 0.5 * fgsm_l2.mean(), "C&W finds far smaller perturbations than FGSM"


def test_carlini_wagner_targeted_and_confidence(trained_mnist_f, digits):
    x = digits[0][:10]
    targets = (predict_labels(trained_mnist_f, x) + 5) % 10
    x_adv = attacks.carlini_wagner_l2(trained_mnist_f, x, targets, targeted=True, confidence=2.0)
    logits = trained_mnist_f.predict(x_adv, verbose=0)
    reached = logits.argmax(axis=1) == targets
    assert reached.mean() >= 0.9
    margin = logits[np.arange(10), targets] - np.sort(logits, axis=1)[:, -2]
    assert np.all(margin[reached] > 2.0 - 1e-3)


def test_carlini_wagner_returns_the_original_where_it_fails():
    keras.utils.set_random_seed(0)
    model = mnist_net_f()
    x_adv = attacks.carlini_wagner_l2(model, X, binary_search_steps=1, nb_iter=1, initial_const=1e-9)
    failed = predict_labels(model, x_adv) == predict_labels(model, X)
    np.testing.assert_array_equal(x_adv[failed], X[failed])
    with pytest.raises(ValueError, match="confidence"):
        attacks.carlini_wagner_l2(model, X, confidence=-1)


@pytest.mark.reference
def test_carlini_wagner_beats_art_at_equal_budget(trained_mnist_f, digits):
    art = pytest.importorskip("art.attacks.evasion")
    from art.estimators.classification import TensorFlowV2Classifier

    x, y = digits[0][:8], digits[1][:8]
    classifier = TensorFlowV2Classifier(
        trained_mnist_f, nb_classes=10, input_shape=(28, 28, 1), clip_values=(0.0, 1.0),
        loss_object=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )  # fmt: skip
    budget = {"binary_search_steps": 3}
    theirs = art.CarliniL2Method(classifier, max_iter=10, verbose=False, **budget).generate(
        x, y=np.eye(10)[y]
    )
    ours = attacks.carlini_wagner_l2(trained_mnist_f, x, y, nb_iter=10, **budget)
    their_success = predict_labels(trained_mnist_f, theirs) != y
    our_success = predict_labels(trained_mnist_f, ours) != y
    assert our_success.mean() >= their_success.mean()
    both = our_success & their_success
    if both.any():
        l2 = lambda a: np.sqrt(((a - x) ** 2).sum(axis=(1, 2, 3)))  # noqa: E731
        assert l2(ours)[both].mean() <= 1.1 * l2(theirs)[both].mean()


# --- Pixel Attack -----------------------------------------------------------------------


def _one_pixel_model():
    """Class 1 when pixel (3, 4) is bright, else class 0: fooled by changing that one pixel."""
    inputs = keras.Input((8, 8, 1))
    flat = keras.layers.Flatten()(inputs)
    dense = keras.layers.Dense(2)
    outputs = dense(flat)
    model = keras.Model(inputs, outputs)
    kernel = np.zeros((64, 2), np.float32)
    kernel[3 * 8 + 4] = [-4.0, 4.0]  # p(class 1) = sigmoid(8 v - 4): smooth, not saturated
    dense.set_weights([kernel, np.array([2.0, -2.0], np.float32)])
    return model


def test_pixel_attack_finds_the_one_pixel_that_matters():
    model = _one_pixel_model()
    x = np.zeros((4, 8, 8, 1), np.float32)
    x[:, 3, 4] = 1.0  # class 1
    x_adv = attacks.pixel_attack(model, x, pixels=1, popsize=30, nb_iter=30, random_state=0)
    assert np.all(predict_labels(model, x_adv) == 0)
    assert np.all(_l0(x_adv, x) <= 1)
    target = np.ones(4, int)
    x0 = np.zeros((4, 8, 8, 1), np.float32)
    reached = attacks.pixel_attack(model, x0, target, targeted=True, popsize=30, nb_iter=30, random_state=0)
    assert np.all(predict_labels(model, reached) == 1)


def test_pixel_attack_is_black_box():
    """It needs no gradient: it fools a model whose gradients are all zero."""
    base = _one_pixel_model()
    inputs = keras.Input((8, 8, 1))
    blocked = keras.Model(inputs, base(keras.layers.Lambda(lambda t: keras.ops.stop_gradient(t))(inputs)))
    x = np.zeros((2, 8, 8, 1), np.float32)
    x[:, 3, 4] = 1.0
    assert np.array_equal(attacks.fgsm(blocked, x, eps=0.5), x), "gradient attacks see nothing"
    x_adv = attacks.pixel_attack(blocked, x, popsize=30, nb_iter=30, random_state=1)
    assert np.all(predict_labels(blocked, x_adv) == 0)


class _CountImages(keras.layers.Layer):
    """Identity that counts the images it sees (one model evaluation each)."""

    def build(self, input_shape):
        self.seen = self.add_weight(shape=(), initializer="zeros", trainable=False, name="seen")

        self.largest = self.add_weight(shape=(), initializer="zeros", trainable=False, name="largest")

    def call(self, x):
        images = keras.ops.cast(keras.ops.shape(x)[0], "float32")
        self.seen.assign_add(images)
        self.largest.assign(keras.ops.maximum(self.largest, images))
        return x


def test_pixel_attack_stops_evaluating_a_fooled_image():
    """Class 1 while pixels (1, 1) and (0, 0) sum above 0.5: one changed pixel fools the
    image with one of them bright, never the image with both."""
    inputs = keras.Input((3, 3, 1))
    counter = _CountImages()
    dense = keras.layers.Dense(2)
    model = keras.Model(inputs, dense(keras.layers.Flatten()(counter(inputs))))
    kernel = np.zeros((9, 2), np.float32)
    kernel[[1 * 3 + 1, 0]] = [-8.0, 8.0]
    dense.set_weights([kernel, np.array([4.0, -4.0], np.float32)])
    x = np.zeros((2, 3, 3, 1), np.float32)
    x[:, 1, 1] = 1.0
    x[1, 0, 0] = 1.0  # unfoolable with one pixel
    popsize, nb_iter = 40, 10
    run = lambda: attacks.pixel_attack(model, x, pixels=1, popsize=popsize, nb_iter=nb_iter, random_state=0)  # noqa: E731
    assert predict_labels(model, run()).tolist() == [0, 1]
    counter.seen.assign(0.0)
    run()
    # Labels (2 images) and the initial populations (2 x popsize); then the hard image
    # evolves for every generation, the fooled one for fewer than half of them (evolving
    # both to the end would cost 2 x popsize x nb_iter).
    seen, start = float(counter.seen.numpy()), 2 + 2 * popsize
    assert start + popsize * nb_iter <= seen < start + popsize * (nb_iter + nb_iter // 2)


def test_pixel_attack_evolves_batch_size_images_together_in_bounded_calls(monkeypatch):
    """`batch_size` is what the user gave: the same images come out when the model calls are
    split into groups (memory), and no call is larger than the bound."""
    module = importlib.import_module("saliency_detect.attacks.pixel_attack")

    inputs = keras.Input((28, 28, 1))
    counter = _CountImages()
    keras.utils.set_random_seed(0)
    model = keras.Model(inputs, keras.layers.Dense(10)(keras.layers.Flatten()(counter(inputs))))
    run = lambda: attacks.pixel_attack(model, X, pixels=2, popsize=8, nb_iter=3, random_state=2)  # noqa: E731
    whole = run()
    assert counter.largest.numpy() == len(X) * 8  # one call for all six populations
    monkeypatch.setattr(module, "_EVALUATIONS_PER_CALL", 20)  # two populations (16 images) per call
    counter.largest.assign(0.0)
    np.testing.assert_allclose(run(), whole, atol=1e-6)
    assert counter.largest.numpy() == 16


def test_pixel_attack_changes_at_most_k_pixels_and_is_seeded():
    keras.utils.set_random_seed(0)
    model = mnist_net_f()
    a = attacks.pixel_attack(model, X, pixels=3, popsize=12, nb_iter=2, random_state=4)
    assert np.all(_l0(a, X) <= 3) and a.min() >= 0 and a.max() <= 1
    np.testing.assert_array_equal(
        a, attacks.pixel_attack(model, X, pixels=3, popsize=12, nb_iter=2, random_state=4)
    )
    with pytest.raises(ValueError, match="popsize"):
        attacks.pixel_attack(model, X, popsize=3)
    with pytest.raises(ValueError, match="pixels"):
        attacks.pixel_attack(model, X, pixels=0)


def test_every_attack_is_registered_with_shared_keywords():
    everything = attacks.available_attacks()
    assert {"jsma", "carlini_wagner_l2", "pixel_attack"} <= set(everything)
    shared = ["eps", "norm", "clip_range", "targeted", "batch_size", "random_state"]
    for name, params in everything.items():
        order = [key for key in params if key in shared]
        assert order == [key for key in shared if key in params], f"{name} breaks the shared order"
    # One name for the iteration count: cleverhans's nb_iter, in every attack that iterates.
    iterating = {name for name, params in everything.items() if "nb_iter" in params}
    assert iterating == {"bim", "iterative_l2", "pgd", "carlini_wagner_l2", "pixel_attack"}
    for params in everything.values():
        assert not {"max_iter", "max_iterations", "steps"} & set(params)


@pytest.fixture(scope="module")
def cifar_model(shared_data):
    """A small CNN trained 3 epochs on the shared CIFAR-10 subset (val. accuracy ~0.3).

    The comparison is of the two attack algorithms at equal budget on one model, so the
    model only needs to be fooled often and to be cheap to query (ART queries it image
    by image).
    """
    from saliency_detect.data import load_dataset
    from saliency_detect.models import train_classifier

    ds = load_dataset("cifar10", train_size=3000, test_size=200)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((32, 32, 3)),
        keras.layers.Conv2D(16, 3, activation="relu"),
        keras.layers.MaxPooling2D(),
        keras.layers.Conv2D(32, 3, activation="relu"),
        keras.layers.MaxPooling2D(),
        keras.layers.Flatten(),
        keras.layers.Dense(10),
    ])  # fmt: skip
    train_classifier(model, ds, epochs=3, learning_rate=1e-3, verbose=0, random_state=0)
    return model, ds.x_test


@pytest.mark.reference
def test_pixel_attack_matches_art_success_at_equal_budget(cifar_model):
    """Within 5 points of ART's PixelAttack (differential evolution) at the same query budget."""
    art = pytest.importorskip("art.attacks.evasion")
    from art.estimators.classification import TensorFlowV2Classifier

    model, images = cifar_model
    x = images[:32]
    predicted = predict_labels(model, x)
    classifier = TensorFlowV2Classifier(
        model, nb_classes=10, input_shape=(32, 32, 3), clip_values=(0.0, 1.0),
        loss_object=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )  # fmt: skip
    # ART's DE population is 400 // 5 parameters per pixel x 5 = 400 candidates, like ours:
    # both evaluate 400 x (1 + nb_iter) candidates per image at most.
    np.random.seed(0)  # ART's differential evolution draws from NumPy's global generator
    theirs = art.PixelAttack(classifier, th=1, es=1, max_iter=5, verbose=False).generate(x)
    ours = attacks.pixel_attack(model, x, pixels=1, popsize=400, nb_iter=5, random_state=0)
    their_success = predict_labels(model, theirs) != predicted
    our_success = predict_labels(model, ours) != predicted
    print(f"Pixel Attack success: ours {our_success.mean():.3f}, ART {their_success.mean():.3f}")
    assert their_success.mean() > 0.1, "the reference must succeed sometimes, or the comparison is empty"
    assert our_success.mean() >= their_success.mean() - 0.05
    assert np.all(_l0(ours, x) <= 1)
