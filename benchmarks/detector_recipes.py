"""Accuracy of SaliencyDetector's recipes on real MNIST JSMA, per seed (docs/results.md).

Two settings, as recorded in docs/results.md ("The recipes side by side"):

- `--classifier pretrained` (the test suite's): the shipped MNIST-NET-f, JSMA on the first
  4,000 training and first 1,000 test images.
- `--classifier sample`: MNIST-NET-f trained on `mnist-sample` (10 epochs, seed 0), JSMA
  on training images 10,000-13,999 and test images 2,000-2,999, `cache_saliency=True`.

Pairs JSMA left unchanged are dropped unless `--keep-unchanged`. Each detector is
`SaliencyDetector(f, input_mode=MODE, random_state=SEED, **PARAMS)`, scored by
`evaluation.detection_report`.

    python benchmarks/detector_recipes.py --classifier pretrained --seeds 0,1,2
    python benchmarks/detector_recipes.py --classifier pretrained --seeds 0,1,2 --recipe paper
    python benchmarks/detector_recipes.py --classifier sample --mode image --seeds 0,1,2
    python benchmarks/detector_recipes.py --classifier sample --normalization global
"""

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from saliency_detect.attacks import jsma
from saliency_detect.data import load_dataset
from saliency_detect.detector import SaliencyDetector
from saliency_detect.evaluation import changed_images, detection_report
from saliency_detect.models import mnist_net_f, pretrained, train_classifier


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classifier", choices=("pretrained", "sample"), default="pretrained")
    parser.add_argument("--mode", default="image+saliency", help="input_mode: image+saliency or image")
    parser.add_argument("--seeds", default="0", help="comma-separated random_state values")
    parser.add_argument("--recipe", default="converge", help="converge or paper")
    parser.add_argument("--normalization", default=None, help="image or global (default: the recipe's)")
    parser.add_argument("--keep-unchanged", action="store_true", help="keep pairs JSMA left unchanged")
    args = parser.parse_args()

    full = load_dataset("mnist")
    if args.classifier == "pretrained":
        f = pretrained("mnist_net_f")
        train, test, extra = slice(0, 4000), slice(0, 1000), {}
    else:
        f = mnist_net_f()
        train_classifier(f, load_dataset("mnist-sample"), random_state=0, verbose=0)
        train, test, extra = slice(10_000, 14_000), slice(2_000, 3_000), {"cache_saliency": True}
    sets = []
    for x, y in ((full.x_train[train], full.y_train[train]), (full.x_test[test], full.y_test[test])):
        x_adv = jsma(f, x, y)
        kept = changed_images(x, x_adv) | args.keep_unchanged
        sets.append((x[kept], y[kept], x_adv[kept]))
    (x, _, x_adv), (x_test, y_test, x_test_adv) = sets
    print(f"pairs: {len(x)} training, {len(x_test)} test")
    for seed in (int(s) for s in args.seeds.split(",")):
        start = time.perf_counter()
        detector = SaliencyDetector(
            f,
            input_mode=args.mode,
            recipe=args.recipe,
            normalization=args.normalization,
            random_state=seed,
            verbose=0,
            **extra,
        ).fit(x, x_adv)
        r = detection_report(f, detector, x_test, y_test, x_test_adv)
        print(
            f"{args.mode} {args.recipe} seed {seed}: clean {r.d_accuracy_clean:.3f} adv "
            f"{r.d_accuracy_adversarial:.3f} AUC {r.roc_auc:.4f} TPR@1% {r.tpr_at_1_fpr:.3f} "
            f"TPR@5% {r.tpr_at_5_fpr:.3f} epochs {detector.n_epochs_} (best {detector.best_epoch_}) "
            f"{time.perf_counter() - start:.0f} s"
        )


if __name__ == "__main__":
    main()
