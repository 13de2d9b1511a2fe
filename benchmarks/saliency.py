"""Saliency speed: ours vs tf-keras-vis vs the floor, in one run on one trained MNIST-NET-f.

The floor is the least work a gradient map needs: one `tf.function` doing a forward and
a backward pass with a bare `tf.GradientTape`, on the same batches. Every timing is the
best of `--repeats` runs after a warm-up call (tracing excluded for everyone).

    python benchmarks/saliency.py                       # trains MNIST-NET-f for 2 epochs first
    python benchmarks/saliency.py --model f.keras --images 1024 --batch-size 256

Targets (issue 3): our gradient >= 3x tf-keras-vis and within 1.25x of the floor;
Grad-CAM likewise against tf-keras-vis.
"""

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import tensorflow as tf
from _timing import best_time

from saliency_detect import saliency
from saliency_detect.data import load_dataset
from saliency_detect.models import load_model, mnist_net_f, train_classifier


def floor_fn(model, layer_name=None):
    """One compiled forward + backward pass per batch (input gradient, or feature-map gradient)."""
    if layer_name is None:

        @tf.function(input_signature=[tf.TensorSpec((None, 28, 28, 1)), tf.TensorSpec((None,), tf.int32)])
        def step(x, t):
            with tf.GradientTape() as tape:
                tape.watch(x)
                score = tf.gather(model(x, training=False), t, batch_dims=1)
            return tape.gradient(score, x)

        return step
    features = tf.keras.Model(model.input, [model.get_layer(layer_name).output, model.output])

    @tf.function(input_signature=[tf.TensorSpec((None, 28, 28, 1)), tf.TensorSpec((None,), tf.int32)])
    def cam_step(x, t):
        with tf.GradientTape() as tape:
            a, logits = features(x, training=False)
            score = tf.gather(logits, t, batch_dims=1)
        g = tape.gradient(score, a)
        return tf.nn.relu(tf.reduce_sum(a * tf.reduce_mean(g, axis=[1, 2], keepdims=True), axis=-1))

    return cam_step


def run_batches(step, x, t, batch_size):
    outs = [step(x[i : i + batch_size], t[i : i + batch_size]) for i in range(0, len(x), batch_size)]
    return tf.concat(outs, 0).numpy()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a trained MNIST-NET-f .keras file (default: train one)")
    parser.add_argument("--images", type=int, default=1024)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    data = load_dataset("mnist-sample", test_size=args.images)
    if args.model:
        model = load_model(args.model)
    else:
        model = mnist_net_f()
        train_classifier(model, data.subset(train_size=5000), epochs=2, verbose=0, random_state=0)
    x = data.x_test
    classes = np.argmax(model.predict(x, verbose=0), axis=1).astype(np.int32)
    layer = "block2_conv2"
    bs = args.batch_size

    results = {}
    g_floor, cam_floor = floor_fn(model), floor_fn(model, layer)
    results["floor gradient"] = best_time(lambda: run_batches(g_floor, x, classes, bs), args.repeats)
    results["ours gradient"] = best_time(
        lambda: saliency.gradient(model, x, target=classes, batch_size=bs), args.repeats
    )
    results["floor grad-cam"] = best_time(lambda: run_batches(cam_floor, x, classes, bs), args.repeats)
    results["ours grad-cam"] = best_time(
        lambda: saliency.grad_cam(model, x, target=classes, layer=layer, upsample=False, batch_size=bs),
        args.repeats,
    )
    try:
        from tf_keras_vis.gradcam import Gradcam
        from tf_keras_vis.saliency import Saliency
        from tf_keras_vis.utils.scores import CategoricalScore
    except ImportError:
        print("tf-keras-vis is not installed: `pip install tf-keras-vis` to compare against it.")
    else:
        score = CategoricalScore(classes.tolist())
        vis_saliency, vis_gradcam = Saliency(model, clone=True), Gradcam(model, clone=True)
        results["tf-keras-vis Saliency"] = best_time(
            lambda: vis_saliency(score, x, normalize_map=False), args.repeats
        )
        results["tf-keras-vis Gradcam"] = best_time(
            lambda: vis_gradcam(score, x, penultimate_layer=layer, expand_cam=False, normalize_cam=False),
            args.repeats,
        )

    n = len(x)
    print(f"{n} MNIST images, batch size {bs}, best of {args.repeats} (warm):")
    for name, seconds in results.items():
        print(f"  {name:24s} {seconds:8.3f} s  {n / seconds:10.0f} images/s")
    print("ratios:")
    print(
        f"  ours gradient / floor            {results['ours gradient'] / results['floor gradient']:.2f}x time"
    )
    print(
        f"  ours grad-cam / floor            {results['ours grad-cam'] / results['floor grad-cam']:.2f}x time"
    )
    if "tf-keras-vis Saliency" in results:
        print(
            f"  tf-keras-vis Saliency / ours     "
            f"{results['tf-keras-vis Saliency'] / results['ours gradient']:.2f}x (speed-up of ours)"
        )
        print(
            f"  tf-keras-vis Gradcam / ours      "
            f"{results['tf-keras-vis Gradcam'] / results['ours grad-cam']:.2f}x (speed-up of ours)"
        )


if __name__ == "__main__":
    main()
