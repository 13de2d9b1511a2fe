"""The joint adaptive attack (`joint_pgd`) against its floor and against plain PGD, in one run.

The floor is the work the attack cannot avoid, written as one bare `tf.GradientTape` step
in a `tf.function`, called once per PGD step: f's forward and backward pass, the
detector's forward and backward pass, and for the saliency detector the second-order
pass through f's gradient (its in-graph saliency), with the same summed loss. Ours adds
the projection, the bookkeeping of each image's last successful iterate, one final
check, and (because a step that holds a detector is compiled per call) its tracing,
which is included in every timed call. Timings are the best of `--repeats` calls after
a warm-up call.

    python benchmarks/joint_attack.py                      # the shipped MNIST-NET-f
    python benchmarks/joint_attack.py --detector mahalanobis

Target (issue 19): joint_pgd <= 1.2x the floor. The ratio to plain PGD on f (same steps,
no detector) is printed too: what attacking the detector costs.
"""

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import tensorflow as tf
from _timing import best_time_and_result

from saliency_detect.attacks import bim, joint_pgd, pgd
from saliency_detect.data import load_dataset
from saliency_detect.detector import MahalanobisDetector, SaliencyDetector
from saliency_detect.models import pretrained


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--detector", choices=["saliency", "mahalanobis"], default="saliency")
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per measurement (best kept)")
    args = parser.parse_args()

    data = load_dataset("mnist-sample")
    f = pretrained("mnist_net_f")
    x_fit = data.x_train[:512]
    x_fit_adv = bim(f, x_fit, eps=0.2)
    if args.detector == "saliency":
        detector = SaliencyDetector(f, epochs=2, verbose=0, random_state=0).fit(x_fit, x_fit_adv)
    else:
        detector = MahalanobisDetector(f, random_state=0).fit(x_fit, x_fit_adv)
    x, y = data.x_test[: args.images], data.y_test[: args.images]
    eps, step, steps = 0.3, 0.01, args.steps
    threshold = float(detector.threshold_)

    @tf.function(input_signature=[tf.TensorSpec((None, 28, 28, 1)), tf.TensorSpec((None,), tf.int32)])
    def floor_step(images, labels):
        with tf.GradientTape() as tape:
            tape.watch(images)
            logits = f(images, training=False)
            true = tf.gather(logits, labels, batch_dims=1)
            others = tf.where(tf.one_hot(labels, 10) > 0, -np.inf, logits)
            margin = tf.minimum(tf.reduce_max(others, axis=-1) - true, 0.0)
            loss = margin - tf.nn.softplus(detector.decision_tensor(images) - threshold)
        return tape.gradient(loss, images)

    images, labels = tf.constant(x), tf.constant(y.astype(np.int32))

    def floor_run():
        for _ in range(steps):
            grad = floor_step(images, labels)
        return grad.numpy()

    def timed(fn):
        return best_time_and_result(fn, args.repeats)

    floor, _ = timed(floor_run)
    common = {"eps": eps, "eps_iter": step, "nb_iter": steps, "rand_init": False, "batch_size": args.images}
    ours, joint = timed(lambda: joint_pgd(f, x, y, detector=detector, mode="sum", **common))
    plain, _ = timed(lambda: pgd(f, x, y, loss="margin", **common))
    print(f"joint PGD-{steps} (Linf, eps {eps}) on {args.images} images, {args.detector} detector")
    print(f"  floor (f + D fwd+bwd per step)  {floor:8.2f} s")
    print(f"  ours joint_pgd                  {ours:8.2f} s")
    print(f"  ours pgd on f alone             {plain:8.2f} s")
    print(f"  ours / floor {ours / floor:.2f}x; joint / plain PGD {ours / plain:.2f}x")
    flagged = detector.predict(joint).mean()
    fooled = np.mean(f.predict(joint, verbose=0).argmax(1) != y)
    print(f"  (f fooled on {fooled:.2f} of the images, {flagged:.2f} flagged)")


if __name__ == "__main__":
    main()
