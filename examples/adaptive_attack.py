"""Attack a classifier and its detector together: which detectors survive an attacker who knows them?

python examples/adaptive_attack.py                                # real MNIST, the shipped MNIST-NET-f
python examples/adaptive_attack.py --train-size 2000 --test-size 300 --eps 0.1 0.2 0.3 --out security.md
python examples/adaptive_attack.py --detectors saliency Mahalanobis --harden-rounds 3  # and hardened twins
python examples/adaptive_attack.py --detectors "feature squeezing" --cw --nb-iter 100 --restarts 3  # stronger

Every detector of the library is fitted on clean training images and their BIM versions,
then calibrated to flag 5% of held-out clean images. For each ε, the test images are
attacked three ways: PGD on f alone (the detector unknown to the attacker), and the
joint attack `joint_pgd` in its two modes (Carlini & Wagner's summed loss, and the
selective gradient). An attack succeeds on an image when f is fooled and the detector
does not flag it (`evaluation.adaptive_success`); "best" counts an image when any of the
joint attacks succeeds. With `--cw`, the joint attack also runs with C&W's L2 optimiser
(`carlini_wagner_l2(detector=...)`, unbounded: its success is printed, and counted at
each ε only for images it changed by at most ε in L∞). Rates come with 95% Wilson
intervals. With `--transfer`, the joint attack (sum) also runs against a surrogate of
each detector (same parameters, the next training images, seed + 1, not hardened) and
is judged by the real detector: white-box should beat it (else a line says the sanity
check failed). With `--harden-rounds R`,
each detector also gets a hardened twin (`detector.harden`: R rounds of refitting on the
joint attack against itself, at `--harden-eps`, in `--harden-mode`), calibrated and
attacked the same way.
"""

import argparse
import time

import numpy as np
from sklearn.base import clone
from sklearn.metrics import roc_auc_score

from saliency_detect.attacks import bim, carlini_wagner_l2, joint_pgd, pgd
from saliency_detect.data import load_dataset
from saliency_detect.detector import (
    FeatureSqueezingDetector,
    KernelDensityDetector,
    LIDDetector,
    MahalanobisDetector,
    SaliencyDetector,
    harden,
)
from saliency_detect.evaluation import adaptive_success, rate_interval
from saliency_detect.models import pretrained

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--dataset", default="mnist", help="mnist (real, needs the data) or mnist-sample")
parser.add_argument(
    "--train-size", type=int, default=1000, help="clean training images (each with a BIM twin)"
)
parser.add_argument("--test-size", type=int, default=200, help="test images attacked")
parser.add_argument(
    "--calibration-size", type=int, default=1000, help="held-out clean images for the 5%% FPR"
)
parser.add_argument("--eps", type=float, nargs="+", default=[0.1, 0.2, 0.3], help="L-inf budgets")
parser.add_argument("--fit-eps", type=float, default=0.2, help="BIM ε of the detectors' training pairs")
parser.add_argument("--nb-iter", type=int, default=40, help="attack steps")
parser.add_argument("--restarts", type=int, default=1, help="random restarts of each joint PGD run")
parser.add_argument(
    "--transfer",
    action="store_true",
    help="also attack a surrogate of each detector (other images, seed) and count what passes the real one",
)
parser.add_argument(
    "--cw", action="store_true", help="also run the joint attack with C&W's L2 optimiser (its own column)"
)
parser.add_argument("--detector-epochs", type=int, default=30, help="epoch cap of the saliency detectors")
parser.add_argument(
    "--detectors", nargs="+", help="only these detectors (names as in the table; default: all)"
)
parser.add_argument("--harden-rounds", type=int, default=0, help="also fit hardened twins, this many rounds")
parser.add_argument("--harden-eps", type=float, default=0.2, help="the hardening attack's ε")
parser.add_argument(
    "--harden-mode", default="sum", help="the hardening attack's joint_pgd mode (sum: the stronger one here)"
)
parser.add_argument("--seed", type=int, default=0)
parser.add_argument("--out", help="also write the table (markdown) here")
args = parser.parse_args()


def rate(hits: np.ndarray) -> str:
    r = rate_interval(hits)
    return f"{r['rate']:.2f} [{r['low']:.2f}, {r['high']:.2f}]"


NAMES = ("saliency", "image only", "KD+BU", "LID", "Mahalanobis", "feature squeezing")
if set(args.detectors or ()) - set(NAMES):
    parser.error(f"unknown detectors {sorted(set(args.detectors) - set(NAMES))}; choose from {list(NAMES)}")

data = load_dataset(args.dataset)
f = pretrained("mnist_net_f")
x, y = data.x_train[: args.train_size], data.y_train[: args.train_size]
x_test, y_test = data.x_test[: args.test_size], data.y_test[: args.test_size]
x_calibration = data.x_test[args.test_size : args.test_size + args.calibration_size]
start = time.perf_counter()
x_adv = bim(f, x, y, eps=args.fit_eps, nb_iter=10)
common = {"random_state": args.seed}
detectors = {
    "saliency": SaliencyDetector(f, epochs=args.detector_epochs, verbose=0, **common),
    "image only": SaliencyDetector(f, input_mode="image", epochs=args.detector_epochs, verbose=0, **common),
    "KD+BU": KernelDensityDetector(f, **common),
    "LID": LIDDetector(f, **common),
    "Mahalanobis": MahalanobisDetector(f, **common),
    "feature squeezing": FeatureSqueezingDetector(f),
}
fitted = {}  # each detector, then its hardened twin
for name in (name for name in detectors if name in (args.detectors or NAMES)):
    fitted[name] = detectors[name].fit(x, x_adv).calibrate(x_calibration, fpr=0.05)
    print(f"fitted {name} ({time.perf_counter() - start:.0f} s)", flush=True)
    if args.harden_rounds:
        attack = {"eps": args.harden_eps, "nb_iter": args.nb_iter, "mode": args.harden_mode}
        hardened = harden(detectors[name], x, x_adv, y, rounds=args.harden_rounds, random_state=args.seed,
                          verbose=0, **attack)  # fmt: skip
        fitted[f"{name} (hardened)"] = hardened.calibrate(x_calibration, fpr=0.05)
        rounds = ", ".join(f"{entry['attack_success']:.2f}" for entry in hardened.hardening_)
        print(f"hardened {name}: attack success per round {rounds} ({time.perf_counter() - start:.0f} s)")
detectors = fitted
surrogates = {}  # the transfer attacker's: same kind and parameters, other images and seed, not hardened
if args.transfer:
    n = args.train_size
    x_other, y_other = data.x_train[n : 2 * n], data.y_train[n : 2 * n]
    x_other_adv = bim(f, x_other, y_other, eps=args.fit_eps, nb_iter=10)
    for name, detector in detectors.items():
        surrogate = clone(detector)
        if "random_state" in surrogate.get_params():
            surrogate.set_params(random_state=args.seed + 1)
        surrogates[name] = surrogate.fit(x_other, x_other_adv).calibrate(
            data.x_train[2 * n : 3 * n], fpr=0.05
        )
    print(f"fitted the surrogates ({time.perf_counter() - start:.0f} s)", flush=True)

clean_scores = {name: detector.decision_function(x_test) for name, detector in detectors.items()}
carlini_wagner = {}  # unbounded: which images it gets past f and D, and each one's L-inf size
for name, detector in detectors.items() if args.cw else ():
    found = carlini_wagner_l2(f, x_test, y_test, detector=detector)
    size = np.abs(found - x_test).reshape(len(x_test), -1).max(axis=1)
    carlini_wagner[name] = (adaptive_success(f, detector, found, y_test), size)
    hits = carlini_wagner[name][0]
    sizes = f"median L∞ of its successes {np.median(size[hits]):.3f}" if hits.any() else "no success"
    print(f"joint C&W L2 on {name}, unbounded: {rate(hits)}, {sizes} "
          f"({time.perf_counter() - start:.0f} s)", flush=True)  # fmt: skip
rows = []
for eps in args.eps:
    plain = pgd(f, x_test, y_test, eps=eps, nb_iter=args.nb_iter, loss="margin", random_state=args.seed)
    fooled = f.predict(plain, verbose=0).argmax(1) != y_test
    for name, detector in detectors.items():
        auc = roc_auc_score(np.r_[np.zeros(len(x_test)), np.ones(len(x_test))],
                            np.r_[clean_scores[name], detector.decision_function(plain)])  # fmt: skip
        success = {"PGD on f": adaptive_success(f, detector, plain, y_test)}
        for mode in ("sum", "selective"):
            joint = joint_pgd(f, x_test, y_test, eps=eps, nb_iter=args.nb_iter, detector=detector, mode=mode,
                              restarts=args.restarts, random_state=args.seed)  # fmt: skip
            success[f"joint ({mode})"] = adaptive_success(f, detector, joint, y_test)
        if name in carlini_wagner:  # a C&W image counts at this ε only if it lies in the ball
            hits, size = carlini_wagner[name]
            success["joint C&W L2 (L∞ ≤ ε)"] = hits & (size <= eps + 1e-6)
        best = np.any([hits for key, hits in success.items() if key != "PGD on f"], axis=0)
        if name in surrogates:  # black-box on D: the joint attack on the surrogate, judged by D
            transferred = joint_pgd(f, x_test, y_test, eps=eps, nb_iter=args.nb_iter, mode="sum",
                                    detector=surrogates[name], restarts=args.restarts,
                                    random_state=args.seed)  # fmt: skip
            success["transfer (sum)"] = adaptive_success(f, detector, transferred, y_test)
            if success["transfer (sum)"].mean() > best.mean():
                print(f"sanity check failed: transfer beats white-box on {name} at ε {eps:g}", flush=True)
        rows.append([f"{eps:g}", name, f"{auc:.3f}", f"{fooled.mean():.2f}",
                     *(rate(s) for key, s in success.items() if key != "transfer (sum)"), rate(best),
                     *([rate(success["transfer (sum)"])] if name in surrogates else [])])  # fmt: skip
        print(" | ".join(rows[-1]), f"({time.perf_counter() - start:.0f} s)", flush=True)

header = ["ε", "detector", "ROC AUC (PGD)", "f fooled (PGD)", *(k for k in success if k != "transfer (sum)"),
          "joint (best)", *(["transfer (sum)"] if surrogates else [])]  # fmt: skip
table = "\n".join(
    ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    + ["| " + " | ".join(r) + " |" for r in rows]
)
print(table)
print(f"wall-clock {time.perf_counter() - start:.0f} s")
if args.out:
    with open(args.out, "w", encoding="utf-8") as file:
        file.write(table + "\n")
