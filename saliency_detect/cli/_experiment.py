"""`saliency-detect demo`, `reproduce` (the detection experiment) and `explain` (the attention analysis)."""

from __future__ import annotations

import argparse
from pathlib import Path

from saliency_detect.cli._arguments import output_folder, positive_int, random_seed
from saliency_detect.cli._strategy import (
    add_strategy_argument,
    strategy_from_args,
    worker_output,
)


def _csv(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _floats(text: str) -> list[float]:
    try:
        return [float(part) for part in _csv(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def _floats_or_none(text: str) -> list[float]:
    """Comma-separated numbers, or `none` for an empty list."""
    return [] if text.strip().lower() == "none" else _floats(text)


def _attacks(text: str) -> list[dict]:
    """`fgsm,bim=0.1,jsma` -> attack tables; `NAME=EPS` fixes ε, a bare name searches it."""
    specs = []
    for part in _csv(text):
        name, _, eps = part.partition("=")
        spec: dict = {"name": name.strip()}
        if eps:
            try:
                spec["eps"] = float(eps)
            except ValueError:
                raise argparse.ArgumentTypeError(f"expected NAME or NAME=EPS, got {part!r}") from None
        specs.append(spec)
    if not specs:
        raise argparse.ArgumentTypeError("expected at least one attack")
    return specs


def _baselines(text: str) -> list[str]:
    return [] if text.strip().lower() == "none" else _csv(text)


def _add_verbosity(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--quiet", action="store_true", help="print only the tables")
    group.add_argument("--verbose", action="store_true", help="also print Keras's line per training epoch")


def _verbosity(args: argparse.Namespace) -> int:
    return 0 if args.quiet else 2 if args.verbose else 1


def add_parser(subparsers) -> None:
    """Declare the `demo`, `reproduce` and `explain` subcommands."""
    demo = subparsers.add_parser(
        "demo",
        help="the detection experiment in a few minutes on the embedded MNIST sample (no network)",
        description=(
            "Train (or reuse) MNIST-NET-f on the embedded mnist-sample, craft FGSM, BIM, "
            "iterative-L2 and JSMA sets, fit a saliency detector per attack, and print Table 1 "
            "and the cross-attack generalization matrix. The report (results.json, tables.md, "
            "figures, report.html) goes to --out; rerunning reuses every finished step."
        ),
    )
    demo.add_argument(
        "--out",
        default="saliency-detect-demo",
        type=output_folder,
        help="report folder (default: %(default)s)",
    )
    _add_verbosity(demo)
    demo.add_argument(
        "--retrain", action="store_true", help="train MNIST-NET-f here instead of using the pretrained one"
    )
    demo.set_defaults(run=run_demo)

    p = subparsers.add_parser(
        "reproduce",
        help="the detection paper's experiment end to end: tables, matrices, ROC curves, HTML report",
        description=(
            "Train or load f, find each attack's minimal ε (accuracy < 30%%), craft cached "
            "adversarial sets, fit a saliency detector per attack plus the baselines, and write "
            "results.json, tables.md, PNG figures and report.html. Settings come from the "
            "defaults, then --config, then the flags given. Interrupted runs resume when the "
            "same command is run again."
        ),
    )
    p.add_argument(
        "--config",
        default=None,
        help="a .toml or .json config (a results.json reruns that run), or a shipped config by name: "
        "paper-mnist, paper-cifar10",
    )
    _add_shared_arguments(
        p,
        dataset="mnist, mnist-sample, cifar10 or folder:PATH (default: mnist)",
        architecture="the paper's for the data set",
        attacks="comma-separated; NAME=EPS fixes ε (default: fgsm,bim,iterative_l2,jsma, ε searched)",
        out="reproduce-DATASET",
        seed="seed of training and attacks (default: 0)",
    )
    p.add_argument("--test-size", type=positive_int, default=None, help="test images (default: all)")
    p.add_argument(
        "--detector-train-size",
        type=positive_int,
        default=None,
        help="clean images each detector is fitted on",
    )
    p.add_argument(
        "--detector-epochs",
        type=positive_int,
        default=None,
        help="most epochs of each detector (default: the recipe's: converge 100, paper 10)",
    )
    p.add_argument(
        "--detector-recipes",
        type=_csv,
        default=None,
        help="comma-separated detector training recipes, the first the main one: converge, paper "
        "(default: converge)",
    )
    p.add_argument(
        "--baselines",
        type=_baselines,
        default=None,
        help=(
            "comma-separated: image,kernel_density,lid,mahalanobis,feature_squeezing, "
            "or none (default: all five)"
        ),
    )
    p.add_argument(
        "--eps-factors", type=_floats, default=None, help="cross-ε matrix at ε times these, e.g. 0.5,2"
    )
    p.add_argument(
        "--sigmas", type=_floats, default=None, help="σ of the detector-aware attack (default: 0,0.5,1)"
    )
    p.add_argument(
        "--security-eps-factors",
        type=_floats_or_none,
        default=None,
        help="security section: each attack's detectors attacked at its ε (JSMA, C&W: the first L∞ "
        "attack's) times these, or none (default: 0.5,1,2)",
    )
    p.add_argument(
        "--security-size", type=positive_int, default=None, help="test images the security section attacks"
    )
    p.add_argument("--saliency", default=None, help="gradient (default), guided_backprop or deconvnet")
    p.set_defaults(run=run_reproduce)

    e = subparsers.add_parser(
        "explain",
        help="the attention paper's analysis: saliency and Grad-CAM of clean vs adversarial images",
        description=(
            "Load the pretrained classifier (default: ResNet-20 on CIFAR-10), a given one, or train "
            "one; attack test images "
            "(default: Pixel Attack with 3 pixels and PGD at 8/255), and compare guided-backprop "
            "saliency and Grad-CAM of clean and adversarial images: figure grids and a table of "
            "measures with 95% confidence intervals beside a random-pixel control, and the same "
            "comparison of revised Grad-CAM at every convolution layer, input to output. Writes "
            "results.json, tables.md, PNGs and report.html; reruns reuse finished steps."
        ),
    )
    e.add_argument("--config", default=None, help="a .toml or .json config (a results.json reruns that run)")
    _add_shared_arguments(
        e,
        dataset="cifar10 (default), mnist, mnist-sample or folder:PATH",
        architecture="resnet20",
        attacks="comma-separated NAME or NAME=EPS (default: pixel_attack,pgd=8/255)",
        out="explain-DATASET",
        seed="seed of training, attacks and the control (default: 0)",
    )
    e.add_argument(
        "--n-images", type=positive_int, default=None, help="test images attacked and analysed (default: 500)"
    )
    e.set_defaults(run=run_explain)


def _add_shared_arguments(
    parser, *, dataset: str, architecture: str, attacks: str, out: str, seed: str
) -> None:
    """Declare the flags `reproduce` and `explain` share (`_SHARED_FLAGS`), with each one's defaults."""
    parser.add_argument("--dataset", default=None, help=dataset)
    parser.add_argument("--data-dir", default=None, help="folder to look for the data set's file in first")
    parser.add_argument(
        "--model",
        default=None,
        help="a trained classifier (.keras); default: the pretrained one for the data set and "
        "architecture if the package ships it, else one trained here",
    )
    parser.add_argument(
        "--architecture",
        default=None,
        help=f"zoo classifier, pretrained or trained (default: {architecture})",
    )
    parser.add_argument("--attacks", type=_attacks, default=None, help=attacks)
    parser.add_argument("--out", default=None, type=output_folder, help=f"report folder (default: {out})")
    parser.add_argument(
        "--epochs", type=positive_int, default=None, help="classifier epochs (default: the paper's)"
    )
    parser.add_argument(
        "--train-size", type=positive_int, default=None, help="classifier training images (default: all)"
    )
    parser.add_argument("--seed", type=random_seed, default=None, help=seed)
    parser.add_argument(
        "--retrain", action="store_true", help="train the classifier here even when a pretrained one fits"
    )
    _add_verbosity(parser)
    add_strategy_argument(parser)


#: Flags of both `reproduce` and `explain`, by the config key each sets.
_SHARED_FLAGS = {
    "dataset": "dataset",
    "data_dir": "data_dir",
    "model": "model",
    "architecture": "architecture",
    "attacks": "attacks",
    "epochs": "epochs",
    "train_size": "train_size",
    "seed": "seed",
}


_FLAGS = {
    **_SHARED_FLAGS,
    "test_size": "test_size",
    "detector_train_size": "detector_train_size",
    "detector_epochs": "detector_epochs",
    "detector_recipes": "detector_recipes",
    "baselines": "baselines",
    "eps_factors": "eps_factors",
    "sigmas": "adaptive_sigmas",
    "security_eps_factors": "security_eps_factors",
    "security_size": "security_size",
    "saliency": "saliency",
}


_EXPLAIN_FLAGS = {**_SHARED_FLAGS, "n_images": "n_images"}


def config_from_args(args: argparse.Namespace):
    """The config `reproduce` or `explain` runs: defaults, then `--config`, then the flags given."""
    from saliency_detect.experiments import ExperimentConfig, ExplainConfig, load_config

    explain = args.command == "explain"
    flags = _EXPLAIN_FLAGS if explain else _FLAGS
    if args.config:
        config = load_config(args.config, kind="attention" if explain else "detection")
    else:
        config = ExplainConfig() if explain else ExperimentConfig()
    changes = {key: getattr(args, flag) for flag, key in flags.items() if getattr(args, flag) is not None}
    if getattr(args, "retrain", False):
        changes["use_pretrained"] = False
    return config.replace(**changes) if changes else config


def _finish(results: dict, out: Path) -> int:
    from saliency_detect.experiments import tables_markdown

    print()
    print(tables_markdown(results))
    print(f"Report: {out / 'report.html'} (also results.json, tables.md and the figures in {out})")
    return 0


def run_demo(args: argparse.Namespace) -> int:
    """Run the demo config and print its tables."""
    from saliency_detect.experiments import demo_config, run_experiment

    out = Path(args.out)
    config = demo_config().replace(use_pretrained=False) if args.retrain else demo_config()
    results = run_experiment(config, out, verbose=_verbosity(args))
    return _finish(results, out)


def _default_out(prefix: str, dataset: str) -> Path:
    return Path(f"{prefix}-{dataset.replace(':', '_').replace('/', '_')}")


def run_explain(args: argparse.Namespace) -> int:
    """Run the attention analysis and print its tables."""
    from saliency_detect.experiments import run_explain as explain

    strategy = strategy_from_args(args)
    config = config_from_args(args)
    out = worker_output(Path(args.out) if args.out else _default_out("explain", config.dataset), strategy)
    results = explain(config, out, verbose=_verbosity(args), strategy=strategy)
    return _finish(results, out)


def run_reproduce(args: argparse.Namespace) -> int:
    """Run the configured experiment and print its tables."""
    from saliency_detect.experiments import run_experiment

    strategy = strategy_from_args(args)
    config = config_from_args(args)
    out = worker_output(Path(args.out) if args.out else _default_out("reproduce", config.dataset), strategy)
    results = run_experiment(config, out, verbose=_verbosity(args), strategy=strategy)
    return _finish(results, out)
