"""The pretrained zoo: trained classifiers shipped inside the package, each with its model card.

Each model is `pretrained/NAME.keras` beside `pretrained/NAME.json`, its card: the command
that trained it, the data set and its fingerprint, the test accuracy measured after
training, the library and framework versions, and the wall-clock. Nothing is ever
downloaded: a model is here or it is not.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import sys
from importlib import resources
from pathlib import Path
from typing import Any

import keras

from saliency_detect._files import atomic_write_text
from saliency_detect._version import __version__

#: The data sets each pretrained model serves (`load_dataset` names; a prefix matches).
_SERVES = {"mnist_net_f": ("mnist",), "cifar10_net_f": ("cifar10",), "resnet20": ("cifar10",)}


def _folder():
    return resources.files("saliency_detect.models") / "pretrained"


def available_pretrained() -> tuple[str, ...]:
    """Return the names of the pretrained classifiers shipped with this installation.

    Examples:
        >>> from saliency_detect.models import available_pretrained
        >>> "mnist_net_f" in available_pretrained()
        True
    """
    folder = _folder()
    if not folder.is_dir():
        return ()
    names = {f.name.removesuffix(".keras") for f in folder.iterdir() if f.name.endswith(".keras")}
    return tuple(sorted(n for n in names if (folder / f"{n}.json").is_file()))


def _check_name(name: str) -> str:
    available = available_pretrained()
    if not isinstance(name, str) or name not in available:
        raise ValueError(
            f"No pretrained model named {name!r}. Pretrained models in this installation: "
            f"{list(available)} (their cards: `pretrained_info(name)`)."
        )
    return name


def pretrained_info(name: str) -> dict[str, Any]:
    """Return a pretrained model's card: how it was trained, on what, and how well it does.

    Args:
        name: a name of `available_pretrained()`.

    Returns:
        A dict with `command`, `dataset`, `data_fingerprint`, `train_images`,
        `test_images`, `test_accuracy`, `epochs`, `wall_clock_seconds`,
        `library_version`, `versions` and `trained_on` (a date).

    Raises:
        ValueError: for an unknown name.

    Examples:
        >>> from saliency_detect.models import pretrained_info
        >>> pretrained_info("mnist_net_f")["dataset"]
        'mnist'
    """
    name = _check_name(name)
    return json.loads((_folder() / f"{name}.json").read_text(encoding="utf-8"))


def pretrained(name: str) -> keras.Model:
    """Load a pretrained classifier shipped with the package (offline, in Keras's safe mode).

    Args:
        name: `"mnist_net_f"` (MNIST-NET-f on all 60,000 MNIST training images), or
            another name of `available_pretrained()`.

    Returns:
        The trained `keras.Model` (logits output), not compiled.

    Raises:
        ValueError: for an unknown name.

    Examples:
        >>> from saliency_detect.models import pretrained
        >>> pretrained("mnist_net_f").output_shape
        (None, 10)
    """
    from saliency_detect.models._io import load_model

    name = _check_name(name)
    with resources.as_file(_folder() / f"{name}.keras") as path:
        return load_model(path, compile=False)


def pretrained_for(dataset: str, architecture: str | None = None) -> str | None:
    """The pretrained model that serves a data set (and architecture), or None.

    Args:
        dataset: a `load_dataset` name (`"mnist"`, `"mnist-sample"`, `"cifar10"`).
        architecture: the zoo architecture wanted; None takes the paper's for the data set.

    Returns:
        A name of `available_pretrained()`, or None when none was trained for it.

    Examples:
        >>> from saliency_detect.models import pretrained_for
        >>> pretrained_for("mnist-sample"), pretrained_for("folder:/data")
        ('mnist_net_f', None)
    """
    from saliency_detect.models._training import paper_classifier

    wanted = architecture or paper_classifier(dataset)
    if wanted not in available_pretrained():
        return None
    return wanted if any(dataset.startswith(prefix) for prefix in _SERVES.get(wanted, ())) else None


def write_model_card(
    path: str | os.PathLike[str],
    model: keras.Model,
    dataset,
    *,
    architecture: str,
    settings: dict[str, Any],
    test_accuracy: float,
    wall_clock_seconds: float,
    command: str | None = None,
) -> Path:
    """Write the card of a trained model as JSON beside it (`model.keras` -> `model.json`).

    Args:
        path: the saved model's path (`.keras`).
        model: the trained model.
        dataset: the `Dataset` it was trained and tested on.
        architecture: its zoo builder's name.
        settings: the training settings (epochs, learning rate, augmentation, seed, ...).
        test_accuracy: its accuracy on `dataset`'s test images.
        wall_clock_seconds: how long the training took.
        command: the command line that trained it; None takes this process's.

    Returns:
        The card's path.
    """
    import numpy as np
    import tensorflow as tf

    from saliency_detect.models._io import model_fingerprint

    card = {
        "model": architecture,
        "command": command or " ".join(["saliency-detect", *sys.argv[1:]]),
        "dataset": dataset.name,
        "data_source": Path(dataset.source).name if dataset.source else "",
        "data_fingerprint": dataset.fingerprint(),
        "train_images": len(dataset.x_train),
        "test_images": len(dataset.x_test),
        "test_accuracy": round(float(test_accuracy), 4),
        **settings,
        "model_fingerprint": model_fingerprint(model),
        "wall_clock_seconds": round(float(wall_clock_seconds), 1),
        "machine": f"{os.cpu_count()} CPU cores, {platform.machine()}",
        "library_version": __version__,
        "versions": {
            "python": platform.python_version(),
            "tensorflow": tf.__version__,
            "keras": keras.__version__,
            "numpy": np.__version__,
        },
        "trained_on": datetime.date.today().isoformat(),
    }
    card_path = Path(path).with_suffix(".json")
    atomic_write_text(card_path, json.dumps(card, indent=2) + "\n")
    return card_path
