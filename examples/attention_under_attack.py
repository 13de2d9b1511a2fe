"""Where does a CIFAR-10 ResNet look on adversarial images? The attention paper's question.

Guided backprop and Grad-CAM of clean images against their Pixel Attack (3 pixels,
black box) and PGD (L-infinity 8/255) versions, on the images f classified correctly and
the attack fooled; prints how much attention moves near the perturbed pixels, how much
the maps spread, and how much of the true class's Grad-CAM region survives; saves a
figure grid. (`saliency-detect explain` does this at size, with confidence intervals
and a random-pixel control.)

python examples/attention_under_attack.py       # the pretrained ResNet-20 if shipped, else trains one
python examples/attention_under_attack.py --model cifar10_net_f --images 200 --out attention.png
python examples/attention_under_attack.py --model my_classifier.keras
"""

import argparse

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import tensorflow as tf

from saliency_detect import attacks, saliency
from saliency_detect.data import load_dataset
from saliency_detect.models import (
    available_pretrained,
    get_model_builder,
    load_model,
    predict_labels,
    pretrained,
    train_classifier,
)
from saliency_detect.saliency import metrics

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument(
    "--model",
    help="a pretrained CIFAR-10 classifier's name (resnet20, cifar10_net_f) or a trained .keras file; "
    "default: the pretrained ResNet-20 if this installation ships it, else train --architecture",
)
parser.add_argument("--architecture", default="resnet20", help="zoo model to train (default: %(default)s)")
parser.add_argument("--epochs", type=int, default=None, help="when training (default: the fast recipe's)")
parser.add_argument("--train-size", type=int, default=None, help="when training: the first N images")
parser.add_argument("--images", type=int, default=100, help="test images attacked (default: %(default)s)")
parser.add_argument("--popsize", type=int, default=100, help="Pixel Attack population (authors: 400)")
parser.add_argument("--nb-iter", type=int, default=30, help="Pixel Attack generations (authors: 100)")
parser.add_argument("--out", default="attention_under_attack.png")
args = parser.parse_args()

data = load_dataset("cifar10", train_size=args.train_size, test_size=args.images)
model_name = args.model or ("resnet20" if "resnet20" in available_pretrained() else None)
if model_name in available_pretrained():
    model = pretrained(model_name)
elif model_name:
    model = load_model(model_name)
else:
    model = get_model_builder(args.architecture)(input_shape=data.input_shape, num_classes=data.num_classes)
    train_classifier(model, data, recipe="fast", epochs=args.epochs, random_state=0)
x, y = data.x_test, data.y_test
correct = predict_labels(model, x) == y

adversarial = {
    "Pixel Attack": attacks.pixel_attack(
        model, x, pixels=3, popsize=args.popsize, nb_iter=args.nb_iter, random_state=0
    ),
    "PGD": attacks.pgd(model, x, eps=8 / 255, random_state=0),
}
rows = []
for name, x_adv in adversarial.items():
    y_adv = predict_labels(model, x_adv)
    keep = correct & (y_adv != y)
    if not keep.any():
        print(f"{name}: fooled none of the {correct.sum()} correctly classified images")
        continue
    xs, xa, ys, ya = x[keep], x_adv[keep], y[keep], y_adv[keep]
    gb_clean = saliency.guided_backprop(model, xs, target=ys, reduce="abs")
    gb_adv = saliency.guided_backprop(model, xa, target=ya, reduce="abs")
    cam_clean = saliency.grad_cam(model, xs, target=ys)
    cam_adv_true = saliency.grad_cam(model, xa, target=ys)
    cam_adv = saliency.grad_cam(model, xa, target=ya)
    changed = (np.abs(xa - xs).max(axis=-1) > 1e-6).astype(np.float32)[..., None]
    near = tf.nn.max_pool2d(changed, ksize=3, strides=1, padding="SAME").numpy()[..., 0] > 0.5
    top = round(0.1 * 32 * 32)
    near_clean = metrics.mass_in_mask(gb_clean, near).mean()
    near_adv = metrics.mass_in_mask(gb_adv, near).mean()
    spread_clean, spread_adv = metrics.entropy(gb_clean).mean(), metrics.entropy(gb_adv).mean()
    kept = metrics.top_k_intersection(cam_clean, cam_adv_true, top).mean()
    print(f"{name}: fooled {keep.sum()} of {correct.sum()} correctly classified images")
    print(f"  guided-backprop mass within 1 px of the perturbation: {near_clean:.4f} -> {near_adv:.4f}")
    print(f"  entropy of the map: {spread_clean:.3f} -> {spread_adv:.3f} bits")
    print(f"  true-class Grad-CAM top-10% pixels kept: {kept:.3f}")
    rows.append((name, xs[0], xa[0], gb_clean[0], gb_adv[0], cam_clean[0], cam_adv[0], ys[0], ya[0]))

if rows:
    titles = ["image", "adversarial", "GB clean", "GB adversarial", "Grad-CAM clean (true)", "Grad-CAM adv."]
    size = (2.0 * len(titles), 2.2 * len(rows))
    fig, axes = plt.subplots(len(rows), len(titles), figsize=size, squeeze=False)
    for r, (name, *panels, true, fooled_as) in enumerate(rows):
        for c, panel in enumerate(panels):
            axes[r, c].imshow(panel, cmap=None if c < 2 else ("gray" if c < 4 else "jet"))
            axes[r, c].set_xticks([])
            axes[r, c].set_yticks([])
            if r == 0:
                axes[r, c].set_title(titles[c], fontsize=8)
        label = f"{name}\n{data.class_names[true]} -> {data.class_names[fooled_as]}"
        axes[r, 0].set_ylabel(label, fontsize=8)
    fig.tight_layout()
    fig.savefig(args.out, dpi=100)
    print(f"Saved the figure to {args.out}")
