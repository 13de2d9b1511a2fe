"""Draw a grid of saliency maps for a few MNIST test digits: image, gradient, guided backprop, Grad-CAM.

python examples/saliency_maps.py                        # trains MNIST-NET-f on the embedded sample
python examples/saliency_maps.py --model f.keras --out maps.png
"""

import argparse

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from saliency_detect import saliency
from saliency_detect.data import load_dataset
from saliency_detect.models import load_model, mnist_net_f, predict_labels, train_classifier

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--model", help="a trained MNIST-NET-f (.keras); default: train one")
parser.add_argument("--epochs", type=int, default=None, help="when training: default the paper's 10")
parser.add_argument("--train-size", type=int, default=None)
parser.add_argument("--images", type=int, default=5)
parser.add_argument("--out", default="saliency_maps.png")
args = parser.parse_args()

data = load_dataset("mnist-sample", train_size=args.train_size)
if args.model:
    model = load_model(args.model)
else:
    model = mnist_net_f()
    train_classifier(model, data, epochs=args.epochs, random_state=0)

x = data.x_test[: args.images]
predicted = predict_labels(model, x)
columns = {
    "image": x[..., 0],
    "gradient |max|": saliency.gradient(model, x, reduce="max_abs"),
    "guided backprop |max|": saliency.guided_backprop(model, x, reduce="max_abs"),
    "Grad-CAM (block2_conv2)": saliency.grad_cam(model, x, layer="block2_conv2"),
}
fig, axes = plt.subplots(len(x), len(columns), figsize=(2.2 * len(columns), 2.2 * len(x)), squeeze=False)
for col, (title, maps) in enumerate(columns.items()):
    for row in range(len(x)):
        ax = axes[row, col]
        ax.imshow(maps[row], cmap="gray" if col == 0 else "inferno")
        ax.set_xticks([])
        ax.set_yticks([])
        if row == 0:
            ax.set_title(title, fontsize=9)
        if col == 0:
            ax.set_ylabel(f"true {data.y_test[row]} / pred {predicted[row]}", fontsize=8)
fig.tight_layout()
fig.savefig(args.out, dpi=100)
print(f"Saved a {len(x)}x{len(columns)} grid of saliency maps to {args.out}")
print(f"mean |gradient| per image: {np.round(columns['gradient |max|'].mean(axis=(1, 2)), 5).tolist()}")
