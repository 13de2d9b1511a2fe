"""Attack speed: ours vs cleverhans vs ART vs the floor, in one run on one trained MNIST-NET-f.

The floor for PGD is one compiled forward and backward pass per step (a bare
`tf.GradientTape` in a `tf.function`, the gradient left on the device), times the number
of steps. Every timing is the best of `--repeats` calls after a warm-up call (tracing and
first-call costs excluded, for cleverhans's `tf.function` too), except Pixel Attack's,
timed once each. Success rates are printed beside the times: a fast attack that fails is
not faster.

    python benchmarks/attacks.py                          # trains MNIST-NET-f for 2 epochs first
    python benchmarks/attacks.py --model f.keras --pixel  # also Pixel Attack vs ART (~20 min)
    python benchmarks/attacks.py --small --pixel          # a one-hidden-layer MLP instead

On two CPU cores MNIST-NET-f's forward and backward passes cost far more than anything an
implementation adds around them, so every implementation's time is close to the floor.
`--small` swaps in a multilayer perceptron (784-64-10) whose passes cost little: there
the time each implementation spends outside the model shows, as it does on a GPU, where
the passes are fast.

Targets (issue 4): PGD <= 1.2x the floor, >= 1.3x faster than cleverhans, >= 3x ART;
JSMA >= 20x ART; C&W >= 3x ART; Pixel Attack >= 10x ART; each at equal or better success.
"""

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import tensorflow as tf
from _timing import best_time_and_result

from saliency_detect import attacks
from saliency_detect.data import load_dataset
from saliency_detect.models import load_model, mnist_net_f, predict_labels, train_classifier


def art_classifier(model):
    from art.estimators.classification import TensorFlowV2Classifier

    return TensorFlowV2Classifier(
        model, nb_classes=10, input_shape=(28, 28, 1), clip_values=(0.0, 1.0),
        loss_object=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )  # fmt: skip


def small_mlp():
    """A classifier whose forward and backward passes cost little: 784-64-10, logits."""
    return keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            keras.layers.Flatten(),
            keras.layers.Dense(64, activation="relu"),
            keras.layers.Dense(10),
        ],
        name="small_mlp",
    )


def report(title, rows, n):
    print(f"\n{title}")
    for name, seconds, success in rows:
        rate = "" if success is None else f"  success {success:.2f}"
        print(f"  {name:22s} {seconds:8.2f} s  {n / seconds:9.1f} images/s{rate}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a trained MNIST-NET-f .keras file (default: train one)")
    parser.add_argument("--pixel", action="store_true", help="also run Pixel Attack vs ART (slow)")
    parser.add_argument("--small", action="store_true", help="a 784-64-10 MLP instead of MNIST-NET-f")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per measurement (best kept)")
    args = parser.parse_args()

    def timed(fn, warm=True):
        return best_time_and_result(fn, args.repeats if warm else 1, warm=warm)

    data = load_dataset("mnist-sample", test_size=256)
    if args.model:
        model = load_model(args.model)
    else:
        model = small_mlp() if args.small else mnist_net_f()
        train_classifier(model, data.subset(train_size=5000), epochs=2, verbose=0, random_state=0)
    x, y = data.x_test, data.y_test
    classifier = art_classifier(model)
    from art.attacks.evasion import CarliniL2Method, PixelAttack, ProjectedGradientDescent, SaliencyMapMethod
    from cleverhans.tf2.attacks.projected_gradient_descent import projected_gradient_descent

    def success(x_adv, labels, targeted=False):
        predicted = predict_labels(model, x_adv)
        return float(np.mean(predicted == labels if targeted else predicted != labels))

    # PGD-40, L-infinity, eps 0.3, step 0.01, no random start (equal work for everyone).
    steps, eps, step = 40, 0.3, 0.01

    @tf.function(input_signature=[tf.TensorSpec((None, 28, 28, 1)), tf.TensorSpec((None,), tf.int64)])
    def floor_step(images, labels):
        with tf.GradientTape() as tape:
            tape.watch(images)
            loss = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=model(images))
        return tape.gradient(loss, images)

    y64 = y.astype(np.int64)
    images, labels = tf.constant(x), tf.constant(y64)

    def floor_run():
        for _ in range(steps):
            grad = floor_step(images, labels)
        return grad.numpy()

    floor_time, _ = timed(floor_run)
    rows = [("floor (40 x fwd+bwd)", floor_time, None)]
    t, adv = timed(
        lambda: attacks.pgd(
            model, x, y, eps=eps, eps_iter=step, nb_iter=steps, rand_init=False, batch_size=256
        )
    )
    rows.append(("ours pgd", t, success(adv, y)))

    def cleverhans_pgd():
        return projected_gradient_descent(
            model, x, eps, step, steps, np.inf, clip_min=0.0, clip_max=1.0, y=y64, rand_init=False
        ).numpy()

    t, adv = timed(cleverhans_pgd)
    rows.append(("cleverhans pgd", t, success(adv, y)))
    art_pgd = ProjectedGradientDescent(
        classifier, eps=eps, eps_step=step, max_iter=steps, num_random_init=0, batch_size=256, verbose=False
    )
    t, adv = timed(lambda: art_pgd.generate(x, y=np.eye(10)[y]))
    rows.append(("ART pgd", t, success(adv, y)))
    report("PGD-40 (Linf, eps 0.3) on 256 images", rows, len(x))
    ours = rows[1][1]
    print(
        f"  ours / floor {ours / rows[0][1]:.2f}x time; "
        f"cleverhans / ours {rows[2][1] / ours:.2f}x; ART / ours {rows[3][1] / ours:.2f}x"
    )

    # JSMA, gamma 0.1, targeted at the next class, 32 images.
    xs, targets = x[:32], (predict_labels(model, x[:32]) + 1) % 10
    t_ours, adv = timed(lambda: attacks.jsma(model, xs, targets, targeted=True, gamma=0.1))  # softmax map
    s_ours = success(adv, targets, targeted=True)
    t_art, adv = timed(
        lambda: SaliencyMapMethod(classifier, theta=1.0, gamma=0.1, verbose=False).generate(
            xs, y=np.eye(10)[targets]
        )
    )
    report(
        "JSMA (gamma 0.1, targeted) on 32 images",
        [("ours jsma", t_ours, s_ours), ("ART jsma", t_art, success(adv, targets, targeted=True))],
        32,
    )
    print(f"  ART / ours {t_art / t_ours:.1f}x")

    # C&W L2: 3 binary-search steps x 10 iterations, 8 images.
    xs, ys = x[:8], y[:8]
    t_ours, adv = timed(lambda: attacks.carlini_wagner_l2(model, xs, ys, binary_search_steps=3, nb_iter=10))
    s_ours = success(adv, ys)
    art_cw = CarliniL2Method(classifier, binary_search_steps=3, max_iter=10, verbose=False)
    t_art, adv = timed(lambda: art_cw.generate(xs, y=np.eye(10)[ys]))
    report(
        "C&W L2 (3 searches x 10 iterations) on 8 images",
        [("ours c&w", t_ours, s_ours), ("ART c&w", t_art, success(adv, ys))],
        8,
    )
    print(f"  ART / ours {t_art / t_ours:.1f}x")

    if args.pixel:
        xs, ys = x[:32], y[:32]
        # Floor: the forward passes a full budget costs (no image stops early), timed on
        # one call of the population size ours evaluates per call, scaled to the budget.
        popsize, generations = 400, 100
        forward = tf.function(lambda images: model(images, training=False))
        population = tf.constant(np.repeat(xs[:20], popsize, axis=0))
        t_call, _ = timed(lambda: forward(population).numpy())
        floor = t_call / len(population) * len(xs) * popsize * (generations + 1)
        t_ours, adv = timed(lambda: attacks.pixel_attack(model, xs, ys, pixels=3, random_state=0), warm=False)
        s_ours = success(adv, ys)
        t_art, adv = timed(
            lambda: PixelAttack(classifier, th=3, es=1, max_iter=100, verbose=False).generate(
                xs, y=np.eye(10)[ys]
            ),
            warm=False,
        )
        report(
            "Pixel Attack (3 pixels, 100 generations) on 32 images",
            [
                ("floor (forward passes)", floor, None),
                ("ours pixel", t_ours, s_ours),
                ("ART pixel", t_art, success(adv, ys)),
            ],
            32,
        )
        print(
            f"  ours / floor {t_ours / floor:.2f}x; ART / floor {t_art / floor:.2f}x; "
            f"ART / ours {t_art / t_ours:.1f}x"
        )


if __name__ == "__main__":
    main()
