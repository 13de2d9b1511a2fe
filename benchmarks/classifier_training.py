"""CIFAR-10 classifier training speed: the fast recipe's epoch against the floor, and the zoo's cards.

Two parts, in one run on the same machine:

- per-epoch cost: for each model, `train_classifier(recipe="fast", epochs=1)` on the first
  `--images` CIFAR-10 training images (augmentation, label smoothing, AdamW and its
  schedule included, no validation) against the floor, a bare Keras `fit` of the same
  model on the same images in memory (Adam, integer labels, no augmentation, same batch).
  Both are scaled to one epoch over 50,000 images; the ratio is the recipe's overhead.
- the shipped models (`pretrained_info`): test accuracy, epochs, wall-clock of the
  training recorded on the card, and the number of epochs one hour buys at the per-epoch
  cost measured here.

Every timing is the best of `--repeats` runs after a warm-up run (tracing excluded).
Run it on an idle machine: the two cores are the whole budget.

    python benchmarks/classifier_training.py
    python benchmarks/classifier_training.py --models resnet20 --images 10240 --repeats 3

Target (issue 17): CIFAR10-NET-f >= 0.81 and ResNet-20 >= 0.90 test accuracy, each within
60 minutes of training on 2 cores.
"""

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
from _timing import best_time

from saliency_detect.data import load_dataset
from saliency_detect.models import available_pretrained, get_model_builder, pretrained_info, train_classifier

TARGETS = {"cifar10_net_f": 0.81, "resnet20": 0.90}
BATCH = 256  # the fast recipe's


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="cifar10_net_f,resnet20", help="comma-separated zoo names")
    parser.add_argument("--images", type=int, default=5120, help="training images per timed epoch")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    data = load_dataset("cifar10", train_size=args.images)
    scale = 50_000 / args.images
    per_epoch = {}
    print(f"One epoch over 50,000 images, from {args.images} images, best of {args.repeats}:")
    print("| model | floor: bare fit (min) | fast recipe (min) | fast / floor |")
    print("| --- | --- | --- | --- |")
    for name in args.models.split(","):
        builder = get_model_builder(name)
        bare = builder()
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        bare.compile(keras.optimizers.Adam(1e-3), loss)

        def floor(model=bare):
            model.fit(data.x_train, data.y_train, batch_size=BATCH, epochs=1, verbose=0)

        model = builder()

        def fast(model=model):
            train_classifier(model, data, recipe="fast", epochs=1, validation=False, verbose=0)

        t_floor, t_fast = best_time(floor, args.repeats) * scale, best_time(fast, args.repeats) * scale
        per_epoch[name] = t_fast
        print(f"| {name} | {t_floor / 60:.2f} | {t_fast / 60:.2f} | {t_fast / t_floor:.2f} |")

    print()
    print("The shipped CIFAR-10 models (their cards):")
    print("| model | test accuracy | target | epochs | recorded wall-clock | epochs in 60 min at this cost |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name in args.models.split(","):
        if name not in available_pretrained():
            print(f"| {name} | not shipped | {TARGETS.get(name, '—')} | | | {3600 / per_epoch[name]:.1f} |")
            continue
        card = pretrained_info(name)
        minutes = card["wall_clock_seconds"] / 60
        print(
            f"| {name} | {card['test_accuracy']:.4f} | {TARGETS.get(name, '—')} | {card['epochs']} | "
            f"{minutes:.1f} min | {3600 / per_epoch[name]:.1f} |"
        )


if __name__ == "__main__":
    main()
