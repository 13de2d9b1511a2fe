"""`ExperimentConfig`: everything one run of the detection experiment depends on.

A config is plain data: it is written to `config.json` and `results.json` with every
run, and `load_config` reads it back (or a hand-written TOML file), so any run can be
repeated exactly.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from saliency_detect._files import atomic_write_text
from saliency_detect._validation import (
    BOOLEAN,
    NON_NEGATIVE_INT,
    NON_NEGATIVE_NUMBER,
    OPEN_UNIT,
    POSITIVE_INT,
    POSITIVE_NUMBER,
    SHARE,
    check_declared,
    each,
    optional,
)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

#: Baseline detectors `run_experiment` can fit beside the saliency detector.
BASELINES = ("image", "kernel_density", "lid", "mahalanobis", "feature_squeezing")


@dataclass(frozen=True)
class AttackSpec:
    """One attack of an experiment.

    Attributes:
        name: an attack name of `saliency_detect.attacks.available_attacks()`.
        eps: its perturbation size; None, for an attack that takes `eps`, searches it:
            the smallest ε that brings the classifier's accuracy below `target_accuracy`
            (or the config's `target_accuracy` when that is None; Metzen et al.'s
            protocol, the detection paper's).
        target_accuracy: the accuracy f keeps at the ε searched for this attack's
            detectors in Table 1 (the detection paper's Table 1 levels: MNIST 0.12 /
            0.05 / 0.04, CIFAR-10 0.13 / 0.07 / 0.07 for FGSM / iterative L∞ /
            iterative L2). The generalization matrices keep using the config's
            `target_accuracy` (the paper's minimal ε with accuracy < 30%). None: Table 1
            uses the config's too.
        params: its other keyword parameters (`{"nb_iter": 20}`, ...).
        label: the name used in tables and file names (default: `name`).
        train_size: clean training images for this attack's detector, overriding the
            config's `detector_train_size` (e.g. fewer for a slow attack such as C&W).
    """

    name: str
    eps: float | None = None
    params: Mapping[str, Any] = field(default_factory=dict)
    label: str | None = None
    train_size: int | None = None
    target_accuracy: float | None = None

    @property
    def display(self) -> str:
        """The label used in tables and file names."""
        return self.label or self.name

    def to_dict(self) -> dict[str, Any]:
        """Return the spec as JSON-ready values."""
        return {
            "name": self.name,
            "eps": self.eps,
            "params": dict(self.params),
            "label": self.label,
            "train_size": self.train_size,
            "target_accuracy": self.target_accuracy,
        }


def _default_attacks() -> tuple[AttackSpec, ...]:
    return (AttackSpec("fgsm"), AttackSpec("bim"), AttackSpec("iterative_l2"), AttackSpec("jsma"))


@dataclass(frozen=True, kw_only=True)
class _RunSettings:
    """The settings both experiments share (data, classifier, attacks, seed), and their conversions.

    Plain data: JSON / TOML. `ExperimentConfig` and `ExplainConfig` add their own fields;
    `ExplainConfig` changes four defaults. Each config documents every field.
    """

    dataset: str = "mnist"
    data_dir: str | None = None
    model: str | None = None
    use_pretrained: bool = True
    architecture: str | None = None
    train_size: int | None = None
    test_size: int | None = None
    epochs: int | None = None
    learning_rate: float | None = None
    augment: bool = False
    attacks: tuple[AttackSpec, ...] = field(default_factory=_default_attacks)
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        """Return the config as JSON-ready values (`from_dict` reads them back)."""
        return _to_dict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]):
        """Build a config from a mapping such as `to_dict()`'s or a TOML file's.

        Raises:
            ValueError: for an unknown key or an invalid value (the message names it).
        """
        return _from_dict(cls, values)

    def replace(self, **changes: Any):
        """Return a copy with `changes` applied (validated like a new config)."""
        return _from_dict(type(self), {**self.to_dict(), **changes})

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the config as JSON to `path`, atomically."""
        return atomic_write_text(Path(path), json.dumps(self.to_dict(), indent=2) + "\n")


@dataclass(frozen=True, kw_only=True)
class ExperimentConfig(_RunSettings):
    """The settings of one detection experiment (`run_experiment`, `saliency-detect reproduce`).

    Attributes:
        dataset: `"mnist"`, `"mnist-sample"`, `"cifar10"` or `"folder:PATH"`.
        data_dir: a folder searched first for the data set's file.
        model: a trained classifier (`.keras`) to use; None uses the pretrained one
            (`use_pretrained`) or trains one.
        use_pretrained: with `model` None, use the classifier shipped with the package
            for this data set and architecture (`models.pretrained_for`) when there is
            one; the classifier settings below then do not apply. False trains f here.
        architecture: the zoo builder for a classifier trained here; None takes the
            paper's for the data set (MNIST-NET-f, CIFAR10-NET-f, VGG16-f).
        train_size: training images for the classifier (None: all).
        test_size: test images (None: all); the detectors are tested on these.
        epochs: the classifier's epochs; None takes the paper's.
        learning_rate: the classifier's Adam learning rate; None takes the paper's.
        augment: random shifts / flips while training the classifier.
        attacks: the attacks, a detector per attack.
        target_accuracy: the accuracy the minimal-ε search drives the classifier below
            for the generalization matrices (and for Table 1, for attacks without a
            `target_accuracy` of their own).
        search_size: test images the minimal-ε search attacks.
        detector_train_size: clean training images (and as many adversarial ones) each
            detector is fitted on (None: the classifier's training images).
        detector_recipes: the training recipes of the Keras-trained detectors
            (`SaliencyDetector`'s `recipe`: `"converge"`, `"paper"`); the first is the
            one the matrices and the adaptive attack use, the others are reported beside
            it in Table 1 and the comparison (`["converge", "paper"]` puts the paper's
            fixed recipe beside the converging one).
        detector_epochs: D's (most) epochs; None takes each recipe's (converge: 100;
            paper: 10, or 5 on CIFAR-10 as in the paper).
        detector_learning_rate: Adam's learning rate for D; None takes each recipe's
            (converge: 1e-3, paper: 1e-4).
        detector_batch_size: images per step when fitting D.
        saliency: the detector's saliency map (`"gradient"`, the paper's, or
            `"guided_backprop"` / `"deconvnet"`).
        baselines: detectors fitted beside the paper's, from `BASELINES`.
        eps_factors: for every attack with an ε, detectors are also fitted at ε times
            each factor and the cross-ε generalization matrix is reported (empty: none).
        adaptive_sigmas: σ values of the detector-aware attack (Metzen et al.) run against
            the first L-infinity attack's detector (empty: none).
        adaptive_size: test images attacked by the detector-aware attack.
        security_eps_factors: the security section (`evaluation.security_evaluation`):
            for every attack, each of its detectors (the main recipe's saliency and
            image-only detectors and the feature-space baselines), calibrated to flag 5%
            of held-out clean test images, faces PGD on f alone and the joint attack on
            f and D at the attack's ε times each factor (attacks without an L∞ or L2 ε,
            such as JSMA: the first L∞ attack's ε) (empty: no security section).
        security_size: test images the security section attacks (at most half the
            test images; the others calibrate the detectors).
        security_nb_iter: steps of the security section's attacks.
        security_restarts: random restarts of its joint attack.
        security_transfer: also run the transfer sanity check: a surrogate of each
            detector (same parameters, seed + 1, fitted on the second half of its
            training pairs) attacked in its place.
        seed: the seed of training, attacks and splits.
    """

    target_accuracy: float = 0.30
    search_size: int = 1000
    detector_train_size: int | None = None
    detector_recipes: tuple[str, ...] = ("converge",)
    detector_epochs: int | None = None
    detector_learning_rate: float | None = None
    detector_batch_size: int = 128
    saliency: str = "gradient"
    baselines: tuple[str, ...] = BASELINES
    eps_factors: tuple[float, ...] = ()
    adaptive_sigmas: tuple[float, ...] = (0.0, 0.5, 1.0)
    adaptive_size: int = 200
    security_eps_factors: tuple[float, ...] = (0.5, 1.0, 2.0)
    security_size: int = 200
    security_nb_iter: int = 40
    security_restarts: int = 1
    security_transfer: bool = True

    def __post_init__(self) -> None:
        _validate(self)


def _from_dict(cls, values: Mapping[str, Any]):
    if not isinstance(values, Mapping):
        raise ValueError(f"A config must be a mapping of settings. Received: {type(values).__name__}")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"Unknown config key(s) {unknown}. Valid keys: {sorted(known)}")
    # Lists and attack tables are turned into tuples of AttackSpec by the config's checks.
    return cls(**values)


def _to_dict(config) -> dict[str, Any]:
    out = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}
    out["attacks"] = [a.to_dict() for a in config.attacks]
    for key in ("baselines", "eps_factors", "adaptive_sigmas", "security_eps_factors", "detector_recipes"):
        if key in out:
            out[key] = list(out[key])
    return out


def _explain_attacks() -> tuple[AttackSpec, ...]:
    return (AttackSpec("pixel_attack", params={"pixels": 3}), AttackSpec("pgd", eps=8 / 255))


@dataclass(frozen=True, kw_only=True)
class ExplainConfig(_RunSettings):
    """The settings of the attention analysis (`run_explain`, `saliency-detect explain`).

    The attention paper's question: where does the classifier look on adversarial images?
    For each attack, guided-backpropagation saliency and Grad-CAM of clean and
    adversarial images are compared over `n_images` test images, each measure beside the
    same measure for a control (the same perturbation moved to random pixels).

    Attributes:
        dataset: `"cifar10"` (the paper's), `"mnist"`, `"mnist-sample"` or `"folder:PATH"`.
        data_dir: a folder searched first for the data set's file.
        model: a trained classifier (`.keras`); None uses the pretrained one
            (`use_pretrained`) or trains `architecture`.
        use_pretrained: with `model` None, use the classifier shipped with the package
            for this data set and architecture when there is one; False trains it here.
        architecture: the zoo classifier trained when `model` is None (the paper's
            ResNet: `"resnet20"`).
        train_size: training images for the classifier (None: all).
        test_size: test images loaded (None: all); the analysis uses the first
            `n_images` of them.
        epochs: the classifier's epochs; None takes the paper's for the data set.
        learning_rate: Adam's learning rate; None takes the paper's.
        augment: random shifts and flips while training.
        attacks: the attacks analysed (default: Pixel Attack with 3 pixels, PGD ε = 8/255).
        n_images: test images attacked and analysed.
        n_figures: images shown in each attack's figure grid.
        radius: pixels around each perturbed pixel counted as "near" it.
        top_fraction: share of a Grad-CAM map's pixels compared by the overlap measure.
        per_layer: also compare clean and adversarial revised Grad-CAM at every
            convolution layer of f, input to output (the detection paper's §5).
        seed: the seed of training, attacks and the control.
    """

    # The attention paper's setting: its ResNet on CIFAR-10, Pixel Attack and PGD.
    dataset: str = "cifar10"
    architecture: str | None = "resnet20"
    augment: bool = True
    attacks: tuple[AttackSpec, ...] = field(default_factory=_explain_attacks)
    n_images: int = 500
    n_figures: int = 4
    radius: int = 1
    top_fraction: float = 0.1
    per_layer: bool = True

    def __post_init__(self) -> None:
        _validate_common(self)
        check_declared(self, _EXPLAIN_FIELDS)
        from saliency_detect._registry import REQUIRED
        from saliency_detect.attacks._registry import available_attacks

        for spec in self.attacks:
            if available_attacks()[spec.name].get("eps") is REQUIRED and spec.eps is None:
                raise ValueError(
                    f"Attack {spec.display!r} needs `eps` here (the attention analysis does not search "
                    "it); e.g. 8/255 for PGD on CIFAR-10."
                )


def demo_config() -> ExperimentConfig:
    """The settings of `saliency-detect demo`: a few minutes on 2 CPU cores, no network.

    The pretrained MNIST-NET-f (`models.pretrained("mnist_net_f")`) on the embedded
    `mnist-sample`; FGSM, BIM and iterative L2, each at its minimal ε for accuracy < 30%
    (searched on 500 test images), and JSMA; per attack a saliency detector and the
    image-only detector beside it, both with the converging recipe, fitted on 3,000 clean
    training images and their adversarial twins and tested on 1,000 test images; no
    feature-space baselines, no adaptive attack and no security section (`reproduce`
    runs those).

    Examples:
        >>> from saliency_detect.experiments import demo_config
        >>> [a.display for a in demo_config().attacks]
        ['fgsm', 'bim', 'iterative_l2', 'jsma']
    """
    return ExperimentConfig(
        dataset="mnist-sample",
        test_size=1000,
        search_size=500,
        detector_train_size=3000,
        attacks=(
            AttackSpec("fgsm"),
            AttackSpec("bim"),
            AttackSpec("iterative_l2"),
            AttackSpec("jsma"),
        ),
        baselines=("image",),
        adaptive_sigmas=(),
        security_eps_factors=(),
    )


def named_configs() -> tuple[str, ...]:
    """The names of the configs shipped with the library, which `load_config` accepts as paths.

    `"paper-mnist"` and `"paper-cifar10"` are the detection paper's experiments at their
    scale (Table 1 at the paper's accuracy levels, the matrices at the < 30 % ε).

    Examples:
        >>> from saliency_detect.experiments import named_configs
        >>> named_configs()
        ('paper-cifar10', 'paper-mnist')
    """
    folder = resources.files("saliency_detect.experiments") / "configs"
    return tuple(sorted(f.name.removesuffix(".toml") for f in folder.iterdir() if f.name.endswith(".toml")))


def load_config(path: str | os.PathLike[str], kind: str = "detection") -> ExperimentConfig | ExplainConfig:
    r"""Read a config from a `.toml` or `.json` file, or one shipped with the library by name.

    A `results.json` written by `run_experiment` is accepted too: its `"config"` entry is
    read, so a finished run can be repeated exactly.

    Args:
        path: the file, or a name of `named_configs()` (`"paper-mnist"`) when no file of
            that name exists.
        kind: `"detection"` for an `ExperimentConfig` (`reproduce`), `"attention"` for
            an `ExplainConfig` (`explain`).

    Returns:
        An `ExperimentConfig` or `ExplainConfig`.

    Raises:
        FileNotFoundError: if there is no such file.
        ValueError: if the file is not valid TOML / JSON, has another suffix, or holds
            an unknown key or an invalid value.

    Examples:
        >>> import os, tempfile
        >>> from saliency_detect.experiments import load_config
        >>> path = os.path.join(tempfile.mkdtemp(), "exp.toml")
        >>> with open(path, "w") as f:
        ...     _ = f.write('dataset = "mnist-sample"\n[[attacks]]\nname = "fgsm"\neps = 0.3\n')
        >>> load_config(path).attacks[0].eps
        0.3
    """
    if not Path(path).is_file() and str(path) in named_configs():
        with resources.as_file(
            resources.files("saliency_detect.experiments") / "configs" / f"{path}.toml"
        ) as file:
            return load_config(file, kind)
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"No config file at {path} (shipped configs, usable by name: {', '.join(named_configs())})"
        )
    suffix = path.suffix.lower()
    try:
        if suffix == ".toml":
            with path.open("rb") as file:
                values = tomllib.load(file)
        elif suffix == ".json":
            values = json.loads(path.read_text(encoding="utf-8"))
        else:
            raise ValueError(f"A config file must end in '.toml' or '.json'. Received: {path}")
    except (tomllib.TOMLDecodeError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"Config file {path} is not valid {suffix[1:].upper()}: {e}") from e
    if isinstance(values, dict) and "config" in values and "versions" in values:
        values = values["config"]
    if kind not in ("detection", "attention"):
        raise ValueError(f"`kind` must be 'detection' or 'attention'. Received: {kind!r}")
    return (ExperimentConfig if kind == "detection" else ExplainConfig).from_dict(values)


def _as_list(value: Any, name: str) -> list:
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        raise ValueError(f"`{name}` must be a list. Received: {value!r}")
    return list(value)


def _attack_spec(value: Any) -> AttackSpec:
    if isinstance(value, AttackSpec):
        return value
    if isinstance(value, str):
        return AttackSpec(value)
    if isinstance(value, Mapping):
        allowed = {"name", "eps", "params", "label", "train_size", "target_accuracy"}
        unknown = sorted(set(value) - allowed)
        if unknown or "name" not in value:
            raise ValueError(
                f"An attack must be a name or a table with keys {sorted(allowed)} ('name' required). "
                f"Received: {dict(value)!r}"
            )
        return AttackSpec(
            name=value["name"],
            eps=value.get("eps"),
            params=dict(value.get("params") or {}),
            label=value.get("label"),
            train_size=value.get("train_size"),
            target_accuracy=value.get("target_accuracy"),
        )
    raise ValueError(f"An attack must be a name or a table. Received: {value!r}")


#: The constraints of the fields both configs have, checked in this order (`check_declared`).
_COMMON_FIELDS = {
    "use_pretrained": BOOLEAN,
    "train_size": optional(POSITIVE_INT),
    "test_size": optional(POSITIVE_INT),
    "epochs": optional(POSITIVE_INT),
    "seed": NON_NEGATIVE_INT,
    "learning_rate": optional(POSITIVE_NUMBER),
    "augment": BOOLEAN,
}
#: `ExperimentConfig`'s own numeric and switch fields.
_EXPERIMENT_FIELDS = {
    "detector_train_size": optional(POSITIVE_INT),
    "detector_epochs": optional(POSITIVE_INT),
    "search_size": POSITIVE_INT,
    "detector_batch_size": POSITIVE_INT,
    "adaptive_size": POSITIVE_INT,
    "security_size": POSITIVE_INT,
    "security_nb_iter": POSITIVE_INT,
    "security_restarts": POSITIVE_INT,
    "detector_learning_rate": optional(POSITIVE_NUMBER),
    "target_accuracy": OPEN_UNIT,
    "eps_factors": each(POSITIVE_NUMBER, "positive numbers"),
    "security_eps_factors": each(POSITIVE_NUMBER, "positive numbers"),
    "security_transfer": BOOLEAN,
    "adaptive_sigmas": each(NON_NEGATIVE_NUMBER, "non-negative numbers"),
}
#: An `AttackSpec`'s numeric fields (checked in both configs).
_ATTACK_FIELDS = {
    "eps": optional(POSITIVE_NUMBER),
    "train_size": optional(POSITIVE_INT),
    "target_accuracy": optional(OPEN_UNIT),
}
#: `ExplainConfig`'s own numeric and switch fields.
_EXPLAIN_FIELDS = {
    "n_images": POSITIVE_INT,
    "n_figures": POSITIVE_INT,
    "radius": NON_NEGATIVE_INT,
    "top_fraction": SHARE,
    "per_layer": BOOLEAN,
}


def _validate_common(config) -> None:
    """Checks shared by `ExperimentConfig` and `ExplainConfig`: data, classifier, attacks, seed."""
    from saliency_detect.attacks._registry import _ATTACKS

    # Accept lists and attack tables as given to the constructor; store tuples of AttackSpec.
    object.__setattr__(config, "attacks", tuple(_attack_spec(a) for a in _as_list(config.attacks, "attacks")))
    for key in ("baselines", "eps_factors", "adaptive_sigmas", "security_eps_factors", "detector_recipes"):
        if hasattr(config, key):
            object.__setattr__(config, key, tuple(_as_list(getattr(config, key), key)))
    if not isinstance(config.dataset, str) or not config.dataset:
        raise ValueError(f"`dataset` must be a data set name. Received: {config.dataset!r}")
    check_declared(config, _COMMON_FIELDS)
    if not config.attacks:
        raise ValueError("`attacks` must name at least one attack.")
    labels = []
    for spec in config.attacks:
        if spec.name not in _ATTACKS:
            raise ValueError(f"Unknown attack {spec.name!r} in `attacks`. Valid attacks: {sorted(_ATTACKS)}")
        if not isinstance(spec.params, Mapping) or {"eps", "batch_size"} & set(spec.params):
            raise ValueError(
                f"Attack {spec.display!r}: `params` must be a table of keyword parameters other than "
                f"'eps' (its own key) and 'batch_size'. Received: {spec.params!r}"
            )
        try:
            _ATTACKS.check_options(spec.name, spec.params)
        except TypeError as e:
            raise ValueError(str(e)) from None
        # An attack's own fields: the same constraints, the attack named in the message.
        try:
            check_declared(spec, _ATTACK_FIELDS)
        except ValueError as e:
            raise ValueError(f"Attack {spec.display!r}: {e}") from None
        if spec.target_accuracy is not None and (
            spec.eps is not None or "eps" not in inspect.signature(_ATTACKS[spec.name]).parameters
        ):
            raise ValueError(
                f"Attack {spec.display!r}: `target_accuracy` sets the searched ε, so it needs an attack "
                f"with `eps` and no fixed `eps`. Received: eps={spec.eps!r}"
            )
        labels.append(spec.display)
    if len(set(labels)) != len(labels):
        raise ValueError(f"Attack labels must be unique; give repeated attacks a `label`. Received: {labels}")


def _validate(config: ExperimentConfig) -> None:
    from saliency_detect.detector._detector import RECIPES
    from saliency_detect.detector._features import DETECTOR_SALIENCY

    _validate_common(config)
    check_declared(config, _EXPERIMENT_FIELDS)
    recipes = config.detector_recipes
    if not recipes or len(set(recipes)) != len(recipes) or not set(recipes) <= set(RECIPES):
        raise ValueError(
            f"`detector_recipes` must list distinct recipes of {list(RECIPES)}, at least one. "
            f"Received: {list(recipes)}"
        )
    unknown = sorted(set(config.baselines) - set(BASELINES))
    if unknown:
        raise ValueError(f"Unknown baseline(s) {unknown} in `baselines`. Valid baselines: {list(BASELINES)}")
    if config.saliency not in DETECTOR_SALIENCY:
        raise ValueError(
            f"`saliency` must be one of {list(DETECTOR_SALIENCY)}. Received: {config.saliency!r}"
        )
