"""Train the detection paper's MNIST classifier (MNIST-NET-f) and save it.

Runs on the MNIST sample shipped inside the package, so it needs no network:

    python examples/train_classifier.py                 # paper settings: 10 epochs, Adam 1e-3
    python examples/train_classifier.py --dataset mnist --out f.keras   # full MNIST
"""

import argparse

from saliency_detect.data import load_dataset
from saliency_detect.models import classifier_accuracy, mnist_net_f, train_classifier

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--dataset", default="mnist-sample")
parser.add_argument("--epochs", type=int, default=None, help="default: the paper's (10)")
parser.add_argument("--train-size", type=int, default=None)
parser.add_argument("--out", default="mnist_net_f.keras")
args = parser.parse_args()

dataset = load_dataset(args.dataset, train_size=args.train_size)
model = mnist_net_f(dataset.input_shape, dataset.num_classes)
train_classifier(model, dataset, epochs=args.epochs, save_path=args.out, random_state=0)
accuracy = classifier_accuracy(model, dataset.x_test, dataset.y_test)
print(f"MNIST-NET-f test accuracy: {accuracy:.4f}; saved to {args.out}")
