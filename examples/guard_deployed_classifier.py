"""Guard a deployed classifier: fit a saliency detector, save classifier + detector as one model, reload it.

python examples/guard_deployed_classifier.py                    # trains MNIST-NET-f on the embedded sample
python examples/guard_deployed_classifier.py --model f.keras --out guard.keras
"""

import argparse

import numpy as np

from saliency_detect.attacks import fgsm
from saliency_detect.data import load_dataset
from saliency_detect.detector import GuardedClassifier, SaliencyDetector
from saliency_detect.models import load_model, mnist_net_f, save_model, train_classifier

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--model", help="a trained MNIST-NET-f (.keras); default: train one")
parser.add_argument("--epochs", type=int, default=None, help="classifier epochs when training (paper: 10)")
parser.add_argument("--train-size", type=int, default=None, help="training images (default: all 10,000)")
parser.add_argument("--detector-epochs", type=int, default=10)
parser.add_argument("--eps", type=float, default=0.3, help="FGSM size")
parser.add_argument("--out", default="guard.keras")
args = parser.parse_args()

# 1. The deployed classifier.
data = load_dataset("mnist-sample", train_size=args.train_size)
if args.model:
    classifier = load_model(args.model)
else:
    classifier = mnist_net_f()
    train_classifier(classifier, data, epochs=args.epochs, random_state=0, verbose=0)

# 2. A detector fitted on clean training images and their FGSM versions.
x_train = data.x_train[:4000]
detector = SaliencyDetector(
    classifier, epochs=args.detector_epochs, cache_saliency=True, random_state=0, verbose=0
)
detector.fit(x_train, fgsm(classifier, x_train, eps=args.eps))
detector.calibrate(data.x_test[1000:], fpr=0.05)  # flag at most 5% of clean images

# 3. Classifier + saliency + detector as one Keras model, saved as one file.
guard = GuardedClassifier(classifier, detector)
save_model(guard.as_keras_model(), args.out)
print(f"Saved the guarded classifier to {args.out}")

# 4. In the serving process: reload (safe mode) and screen incoming images.
served = load_model(args.out)
x_clean = data.x_test[:500]
x_attack = fgsm(classifier, x_clean, eps=args.eps)
for name, images in (("clean", x_clean), ("FGSM", x_attack)):
    out = served.predict(images, verbose=0)
    flagged = np.asarray(out["is_adversarial"]).mean()
    accuracy = np.mean(np.argmax(out["logits"], axis=1) == data.y_test[:500])
    print(f"{name:>5} images: classifier accuracy {accuracy:.3f}, flagged as adversarial {flagged:.3f}")
