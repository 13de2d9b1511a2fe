"""`saliency-detect attack`: craft an adversarial set for a saved model and write it to HDF5."""

from __future__ import annotations

import argparse
import ast

from saliency_detect.cli._arguments import output_file, positive_float, positive_int, random_seed
from saliency_detect.cli._strategy import add_strategy_argument, strategy_from_args


def _parse_param(text: str) -> tuple[str, object]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    key, value = text.split("=", 1)
    try:
        parsed = ast.literal_eval(value)
    except (ValueError, SyntaxError):
        parsed = value
    return key.strip(), parsed


def add_parser(subparsers) -> None:
    """Declare the `attack` subcommand."""
    p = subparsers.add_parser(
        "attack",
        help="craft adversarial images for a saved model and write them to an HDF5 file",
        description=(
            "Run an attack on a data set's images for a saved classifier and write the "
            "adversarial set (images, success flags, L0/L2/Linf norms, parameters, model "
            "fingerprint) to HDF5, with a progress bar. Interrupted runs resume when the "
            "same command is run again."
        ),
    )
    p.add_argument("--model", required=True, help="the classifier, a .keras file")
    p.add_argument("--dataset", default="mnist-sample", help="mnist, mnist-sample, cifar10 or folder:PATH")
    p.add_argument(
        "--attack", required=True, help="fgsm, bim, iterative_l2, pgd, jsma, carlini_wagner_l2, pixel_attack"
    )
    p.add_argument("--out", required=True, type=output_file, help="the .h5 file to write")
    p.add_argument("--split", choices=("test", "train"), default="test", help="which images to attack")
    p.add_argument("--size", type=positive_int, default=None, help="attack only the first N images")
    p.add_argument(
        "--eps", type=positive_float, default=None, help="perturbation size, for attacks that take one"
    )
    p.add_argument("--targeted", action="store_true", help="targeted attack (targets: the next class)")
    p.add_argument(
        "--param",
        type=_parse_param,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="another attack parameter, e.g. --param nb_iter=20 --param norm=2 (repeatable)",
    )
    p.add_argument(
        "--chunk-size", type=positive_int, default=256, help="images attacked and written per step"
    )
    p.add_argument("--data-dir", default=None, help="folder to look for the data set's file in first")
    p.add_argument("--seed", type=random_seed, default=0, help="random_state for attacks that take one")
    add_strategy_argument(p, multiworker=False)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Craft and write the set; print where it went and the success rate."""
    import inspect

    strategy = strategy_from_args(args)

    from saliency_detect.attacks import generate_adversarial_set, get_attack, load_adversarial_set
    from saliency_detect.data import load_dataset
    from saliency_detect.models import load_model, predict_labels

    attack = get_attack(args.attack)
    accepted = inspect.signature(attack).parameters
    params = dict(args.param)
    if args.eps is not None:
        params["eps"] = args.eps
    if "eps" in accepted and accepted["eps"].default is inspect.Parameter.empty and "eps" not in params:
        raise ValueError(f"--eps is required for {args.attack}.")
    if "random_state" in accepted:
        params.setdefault("random_state", args.seed)
    if args.targeted:
        params["targeted"] = True
    model = load_model(args.model, compile=False)
    dataset = load_dataset(args.dataset, data_dir=args.data_dir)
    x = dataset.x_test if args.split == "test" else dataset.x_train
    y = dataset.y_test if args.split == "test" else dataset.y_train
    if args.size is not None:
        x, y = x[: args.size], y[: args.size]
    if args.targeted:
        y = (predict_labels(model, x) + 1) % dataset.num_classes
    print(f"{args.attack} on {len(x)} {args.split} images of {dataset.name} with {params}")
    path = generate_adversarial_set(
        model, x, y, args.attack, params, args.out, chunk_size=args.chunk_size, strategy=strategy
    )
    adversarial = load_adversarial_set(path)
    print(
        f"Wrote {path}: success rate {adversarial.success_rate:.3f}, mean L2 {adversarial.l2.mean():.3f}, "
        f"mean L0 {adversarial.l0.mean():.1f} pixels"
    )
    return 0
