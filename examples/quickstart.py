"""Quickstart: fit the detection paper's saliency detector on MNIST in about 20 lines.

python examples/quickstart.py               # a few minutes on 2 CPU cores, no network
"""

import argparse

from saliency_detect.attacks import fgsm
from saliency_detect.data import load_dataset
from saliency_detect.detector import SaliencyDetector
from saliency_detect.evaluation import detection_report
from saliency_detect.models import mnist_net_f, train_classifier

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--epochs", type=int, default=3, help="classifier epochs (paper: 10)")
parser.add_argument("--train-size", type=int, default=None, help="training images (default: all 10,000)")
parser.add_argument("--detector-size", type=int, default=4000, help="clean images the detector is fitted on")
args = parser.parse_args()

data = load_dataset("mnist-sample", train_size=args.train_size)  # embedded: no download
f = mnist_net_f()  # MNIST-NET-f, outputs logits
train_classifier(f, data, epochs=args.epochs, verbose=0, random_state=0)

x_clean = data.x_train[: args.detector_size]
detector = SaliencyDetector(f, learning_rate=1e-3, cache_saliency=True, verbose=0, random_state=0)
detector.fit(x_clean, fgsm(f, x_clean, eps=0.3))  # D on [image || saliency], clean vs FGSM

x_test_adv = fgsm(f, data.x_test, eps=0.3)
print(detection_report(f, detector, data.x_test, data.y_test, x_test_adv, name="FGSM ε=0.3").to_markdown())
