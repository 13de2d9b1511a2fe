"""`saliency-detect train`: build a zoo classifier, train it on a data set and save it."""

from __future__ import annotations

import argparse
import re
import shlex
import time
from pathlib import Path

from saliency_detect.cli._arguments import (
    fraction,
    non_negative_float,
    output_file,
    output_folder,
    positive_float,
    positive_int,
    random_seed,
)
from saliency_detect.cli._strategy import add_strategy_argument, strategy_from_args, worker_output


def add_parser(subparsers) -> None:
    """Declare the `train` subcommand."""
    p = subparsers.add_parser(
        "train",
        help="train a zoo classifier on a data set and save it as a .keras file",
        description=(
            "Build a classifier from the model zoo, train it with the detection paper's "
            "recipe (Adam; MNIST: lr 1e-3, 10 epochs; CIFAR-10: lr 1e-4) or the fast one "
            "(--recipe fast: shifts and flips, label smoothing, AdamW with a warm-up and "
            "cosine schedule), print its test accuracy and save it with its model card."
        ),
    )
    p.add_argument(
        "--dataset",
        default="mnist-sample",
        help="mnist, mnist-sample (embedded, no network), cifar10 or folder:PATH (default: %(default)s)",
    )
    p.add_argument(
        "--model",
        default=None,
        help="zoo builder: mnist_net_f, cifar10_net_f, vgg16_f, resnet20, … "
        "(default: the paper's classifier for the data set)",
    )
    p.add_argument(
        "--out",
        default=None,
        type=output_file,
        help="where to save the trained model (.keras; default: MODEL-DATASET.keras)",
    )
    p.add_argument(
        "--recipe", choices=("paper", "fast"), default="paper", help="training recipe (default: %(default)s)"
    )
    p.add_argument("--epochs", type=positive_int, default=None, help="default: the recipe's for the data set")
    p.add_argument(
        "--learning-rate",
        type=positive_float,
        default=None,
        help="default: the recipe's (fast: the peak) for the data set",
    )
    p.add_argument(
        "--batch-size", type=positive_int, default=None, help="default: the recipe's (paper 128, fast 256)"
    )
    p.add_argument(
        "--optimizer",
        choices=("adam", "adamw", "sgd"),
        default=None,
        help="default: the recipe's (adam, adamw)",
    )
    p.add_argument("--label-smoothing", type=fraction, default=None, help="default: the recipe's (0, 0.1)")
    p.add_argument(
        "--weight-decay", type=non_negative_float, default=None, help="default: the recipe's (0, 0.05)"
    )
    p.add_argument(
        "--train-size", type=positive_int, default=None, help="use only the first N training images"
    )
    p.add_argument("--test-size", type=positive_int, default=None, help="use only the first N test images")
    p.add_argument(
        "--augment",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="random shifts (and flips for RGB images); default: the recipe's (paper no, fast yes)",
    )
    p.add_argument("--data-dir", default=None, help="folder to look for the data set's file in first")
    p.add_argument(
        "--image-size",
        type=positive_int,
        nargs=2,
        default=(224, 224),
        metavar=("H", "W"),
        help="size folder images are resized to (default: 224 224)",
    )
    p.add_argument(
        "--resume-dir",
        type=output_folder,
        default=None,
        help="back up training state here every epoch; rerun with the same folder to resume",
    )
    p.add_argument("--seed", type=random_seed, default=0, help="random seed (default: %(default)s)")
    add_strategy_argument(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Train and save; print the test accuracy and where the model went."""
    strategy = strategy_from_args(args)
    from saliency_detect.data import load_dataset
    from saliency_detect.models import (
        classifier_accuracy,
        get_model_builder,
        paper_classifier,
        recipe_defaults,
        train_classifier,
    )
    from saliency_detect.models._pretrained import write_model_card

    dataset = load_dataset(
        args.dataset,
        data_dir=args.data_dir,
        train_size=args.train_size,
        test_size=args.test_size,
        image_size=tuple(args.image_size),
    )
    model_name = args.model or paper_classifier(args.dataset)
    model = get_model_builder(model_name)(input_shape=dataset.input_shape, num_classes=dataset.num_classes)
    out = Path(args.out or f"{model_name}-{re.sub(r'[^A-Za-z0-9_.-]+', '_', args.dataset)}.keras")
    if out.suffix != ".keras":
        raise ValueError(f"--out must end in '.keras'. Received: {out}")
    out = worker_output(out, strategy)
    print(f"Training {model_name} on {dataset!r}")
    started = time.perf_counter()
    chosen = {
        "epochs": args.epochs,
        "learning_rate": args.learning_rate,
        "batch_size": args.batch_size,
        "augment": args.augment,
        "optimizer": args.optimizer,
        "label_smoothing": args.label_smoothing,
        "weight_decay": args.weight_decay,
    }
    train_classifier(
        model,
        dataset,
        recipe=args.recipe,
        **chosen,
        save_path=out,
        backup_dir=args.resume_dir,
        random_state=args.seed,
        strategy=strategy,
    )
    seconds = time.perf_counter() - started
    accuracy = classifier_accuracy(model, dataset.x_test, dataset.y_test)
    defaults = recipe_defaults(args.recipe, dataset.name)
    settings = {
        "recipe": args.recipe,
        **{key: defaults[key] if value is None else value for key, value in chosen.items()},
        "warmup": defaults["warmup"],
        "seed": args.seed,
    }
    card = write_model_card(
        out,
        model,
        dataset,
        architecture=model_name,
        settings=settings,
        test_accuracy=accuracy,
        wall_clock_seconds=seconds,
        command=shlex.join(["saliency-detect", *args.argv]),
    )
    print(f"Test accuracy: {accuracy:.4f} on {len(dataset.x_test)} test images ({seconds:.0f} s of training)")
    print(f"Saved the model to {out} and its card (command, data, accuracy, versions) to {card}")
    return 0
