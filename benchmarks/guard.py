"""GuardedClassifier speed: latency and throughput vs the bare classifier and the floor, in one run.

Three compiled functions on the same images:

- bare: the classifier's forward pass (what is deployed without a guard);
- floor: the least a saliency guard can do: one forward and one backward pass of the
  classifier with a bare `tf.GradientTape`, then one detector forward pass;
- guard: `GuardedClassifier.as_keras_model()`, the artefact users deploy.

Every timing is the best of `--repeats` runs after a warm-up call (tracing excluded).

    python benchmarks/guard.py                  # untrained MNIST-NET-f / D (speed does not depend on weights)
    python benchmarks/guard.py --images 2048 --repeats 5

Target (issue 5): guarded throughput >= 1/3 of the bare classifier's.
"""

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import tensorflow as tf
from _timing import best_time

from saliency_detect.detector import GuardedClassifier, SaliencyDetector
from saliency_detect.models import mnist_net_f


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1024, help="images per throughput run")
    parser.add_argument("--latency-calls", type=int, default=50, help="batch-1 calls per latency run")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    x_fit = rng.random((64, 28, 28, 1), dtype=np.float32) * 0.5
    classifier = mnist_net_f()
    detector = SaliencyDetector(classifier, epochs=1, verbose=0, random_state=0).fit(x_fit, x_fit + 0.5)
    guard_model = GuardedClassifier(classifier, detector).as_keras_model()
    d_model = detector.detector_
    scale = detector.saliency_scale_
    spec = [tf.TensorSpec((None, 28, 28, 1), tf.float32)]

    @tf.function(input_signature=spec)
    def bare(x):
        return classifier(x, training=False)

    @tf.function(input_signature=spec)
    def floor(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            logits = classifier(x, training=False)
            score = tf.reduce_max(logits, axis=-1)
        grad = tape.gradient(score, x)
        return logits, d_model(tf.concat([x, grad * scale], axis=-1), training=False)

    @tf.function(input_signature=spec)
    def guard(x):
        return guard_model(x, training=False)

    functions = {"bare classifier": bare, "floor": floor, "guard": guard}
    x_big = tf.constant(rng.random((args.images, 28, 28, 1), dtype=np.float32))
    x_one = tf.constant(x_big[:1])

    print(
        f"{args.images} images at batch 256; latency over {args.latency_calls} batch-1 calls; "
        f"best of {args.repeats}"
    )
    rows = {}
    for name, fn in functions.items():

        def throughput_run(fn=fn):
            for start in range(0, args.images, 256):
                out = fn(x_big[start : start + 256])
            tf.nest.map_structure(lambda t: t.numpy(), out)

        def latency_run(fn=fn):
            for _ in range(args.latency_calls):
                tf.nest.map_structure(lambda t: t.numpy(), fn(x_one))

        throughput = args.images / best_time(throughput_run, args.repeats)
        latency_ms = 1000 * best_time(latency_run, args.repeats) / args.latency_calls
        rows[name] = (throughput, latency_ms)
        print(f"{name:>16}: {throughput:9.0f} images/s at batch 256, {latency_ms:6.2f} ms at batch 1")

    bare_tp, bare_lat = rows["bare classifier"]
    guard_tp, guard_lat = rows["guard"]
    floor_tp, _ = rows["floor"]
    print(f"guard throughput / bare: {guard_tp / bare_tp:.2f} (target >= 0.33)")
    print(f"guard throughput / floor: {guard_tp / floor_tp:.2f} (1.00 = no overhead beyond the floor)")
    print(f"guard latency / bare at batch 1: {guard_lat / bare_lat:.2f}x")


if __name__ == "__main__":
    main()
