"""Not a timing: LID's ROC AUC under the reference code's protocol and under ours, on real MNIST.

    python benchmarks/lid_protocols.py                      # FGSM ε 0.3 and BIM ε 0.1, 2,000 pairs
    python benchmarks/lid_protocols.py --train-size 5000 --seeds 0 1 2

The published LID numbers (Ma et al. 2018) come from their code's `mle_batch`: the images
go in minibatches of 100 clean images with their adversarial twins, each minibatch's own
clean activations are the neighbours, and the nearest neighbour of every point is
dropped (for an adversarial image, usually its own clean twin). A logistic regression
is fitted on the training minibatches' LIDs and scored on the test minibatches'. Ours
(`LIDDetector.fit` / `decision_function`) keeps one fixed reference batch of clean
training images, drops only exact self-matches, and scores any image alone, as a
deployed detector must. Same classifier, layers, k and images for both; the table in
docs/results.md comes from this script.
"""

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from saliency_detect.attacks import bim, fgsm
from saliency_detect.data import load_dataset
from saliency_detect.detector import LIDDetector
from saliency_detect.models import pretrained


def auc(clean_scores, adversarial_scores):
    labels = np.r_[np.zeros(len(clean_scores)), np.ones(len(adversarial_scores))]
    return roc_auc_score(labels, np.r_[clean_scores, adversarial_scores])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-size", type=int, default=2000)
    parser.add_argument("--test-size", type=int, default=1000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    args = parser.parse_args()

    data = load_dataset("mnist")
    f = pretrained("mnist_net_f")
    x, x_test = data.x_train[: args.train_size], data.x_test[: args.test_size]
    attacks = {"FGSM ε 0.3": lambda z: fgsm(f, z, eps=0.3), "BIM ε 0.1": lambda z: bim(f, z, eps=0.1)}
    header = ["attack", "seed", "ours: fixed reference, any image alone", "reference: minibatch neighbours"]
    print("| " + " | ".join(header) + " |")
    print("| --- | ---: | ---: | ---: |")
    for name, attack in attacks.items():
        x_adv, x_test_adv = attack(x), attack(x_test)
        for seed in args.seeds:
            detector = LIDDetector(f, random_state=seed).fit(x, x_adv)
            ours = auc(detector.decision_function(x_test), detector.decision_function(x_test_adv))
            # The reference protocol: shuffle the pairs (the seed), LIDs per minibatch, then the regression.
            order = np.random.default_rng(seed).permutation(len(x))
            train_clean, train_adv = detector.minibatch_lids(x[order], x_adv[order])
            test_clean, test_adv = detector.minibatch_lids(x_test, x_test_adv)
            regression = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000, random_state=seed))
            regression.fit(np.r_[train_clean, train_adv], np.r_[np.zeros(len(x)), np.ones(len(x))])
            reference = auc(regression.decision_function(test_clean), regression.decision_function(test_adv))
            print(f"| {name} | {seed} | {ours:.4f} | {reference:.4f} |", flush=True)


if __name__ == "__main__":
    main()
