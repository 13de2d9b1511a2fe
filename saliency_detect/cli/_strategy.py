"""The `--strategy` option shared by the commands that train or attack."""

from __future__ import annotations

import argparse
from pathlib import Path

_HELP = {
    "default": "one device",
    "mirrored": "every local GPU (MirroredStrategy)",
    "multiworker": "several machines, each configured by its TF_CONFIG (MultiWorkerMirroredStrategy)",
}


def add_strategy_argument(parser: argparse.ArgumentParser, *, multiworker: bool = True) -> None:
    """Add `--strategy {default,mirrored[,multiworker]}` and `--mixed-precision` to a subcommand."""
    choices = ("default", "mirrored", "multiworker") if multiworker else ("default", "mirrored")
    parser.add_argument(
        "--strategy",
        choices=choices,
        default="default",
        help="tf.distribute strategy: " + "; ".join(f"{c}: {_HELP[c]}" for c in choices),
    )
    parser.add_argument(
        "--mixed-precision",
        action="store_true",
        help="build and train models in mixed float16 (GPU only; saliency stays float32)",
    )


def strategy_from_args(args: argparse.Namespace):
    """Build the strategy `--strategy` names.

    Call it before any other TensorFlow work: a multi-worker strategy must be created
    at program start-up.
    """
    from saliency_detect._distribute import make_strategy

    strategy = make_strategy(getattr(args, "strategy", "default"))
    if getattr(args, "mixed_precision", False):
        import keras
        import tensorflow as tf

        if not tf.config.list_physical_devices("GPU"):
            raise ValueError(
                "--mixed-precision needs a GPU: float16 on a CPU is slower than float32 and some "
                "operations lack float16 kernels. Drop the flag on this machine."
            )
        keras.mixed_precision.set_global_policy("mixed_float16")
    return strategy


def worker_output(path: Path, strategy) -> Path:
    """`path` for the chief; `path` with a `-worker-N` suffix for the other workers.

    Under a multi-worker strategy every worker runs the same command; only the chief
    (worker 0, or the task of type "chief") writes where the user asked, so the workers
    never write the same files.
    """
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return path
    task_type, task_id = resolver.task_type, int(resolver.task_id or 0)
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    if task_type == "chief" or (task_type == "worker" and task_id == 0 and not has_chief):
        return path
    return path.with_name(f"{path.stem}-{task_type}-{task_id}{path.suffix}")
