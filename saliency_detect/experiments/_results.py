"""What the experiments return: typed results that write and read `results.json`.

`run_experiment` returns a `DetectionResults`, `run_explain` an `AttentionResults`.
Both are frozen dataclasses of smaller ones; `to_dict()` gives exactly the JSON written
to `results.json` and `from_dict()` (or `load_results(path)`) reads such a file back,
so a finished run's report can be redrawn (`tables_markdown`) without rerunning it.
The evaluation layer's own results (`DetectionReport`, `GeneralizationMatrix`,
`SecurityEvaluation`) are kept as they are inside them.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from saliency_detect.evaluation import DetectionReport, GeneralizationMatrix, SecurityEvaluation
from saliency_detect.experiments._config import AttackSpec, ExperimentConfig, ExplainConfig

_SPEC_KEYS = tuple(f.name for f in dataclasses.fields(AttackSpec))

#: The measures of the claims table, what each compares, and the claim it tests.
MEASURES = {
    "attention_near_perturbation": (
        "change in the share of guided-backprop mass (predicted class) within `radius` of the "
        "perturbed pixels, adversarial minus clean",
        "Pixel Attack pulls attention onto the perturbed pixels",
    ),
    "entropy_change": (
        "change in the entropy (bits) of the guided-backprop map (predicted class), adversarial minus clean",
        "PGD diffuses attention",
    ),
    "rank_correlation_true_class": (
        "Spearman correlation of the clean and adversarial guided-backprop maps for the true class",
        "attention to the true class is lost",
    ),
    "gradcam_overlap_true_class": (
        "share of the top Grad-CAM pixels (true class) shared by clean and adversarial image",
        "the true class's evidence moves",
    ),
    "gradcam_overlap_adversarial_class": (
        "share of the clean image's top Grad-CAM pixels (true class) among the adversarial image's "
        "top pixels for the class f now predicts; its control compares the same two classes on the "
        "clean image (a random perturbation of the attack's size seldom changes f's class: "
        "`control_fooled_rate`), so the control tells how much of the overlap the class pair alone gives",
        "the adversarial class is seen where the true class was",
    ),
}

#: The per-layer measures: how far an image's revised Grad-CAM map at a layer moved (and,
#: without any gradient, `feature_change`: the layer's activations' relative change).
LAYER_MEASURES = {
    "rank_correlation": "Spearman correlation of the clean and the other image's map at the layer",
    "top_overlap": "share of the clean map's top cells (top_fraction of the layer's cells) among the other's",
}

#: The classes the per-layer maps are taken for: each image's predicted class (the
#: adversarial image's is the class the attack reached), and the true class on every image
#: (so a map that moved is told apart from a map of another class).
LAYER_CLASSES = ("predicted", "true")


def _spec(values: Mapping[str, Any]) -> AttackSpec:
    return AttackSpec(**{key: values[key] for key in _SPEC_KEYS if key in values})


@dataclass(frozen=True)
class ClassifierResult:
    """The classifier f of a run.

    Attributes:
        source: where f came from: `"pretrained:NAME"`, or the path of the file loaded
            or trained.
        fingerprint: the SHA-256 of its weights (`models.model_fingerprint`).
        test_accuracy: its accuracy on the run's test images.
    """

    source: str
    fingerprint: str
    test_accuracy: float

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> ClassifierResult:
        return cls(str(values["source"]), str(values["fingerprint"]), float(values["test_accuracy"]))


@dataclass(frozen=True)
class AttackResult:
    """One attack of the detection experiment: its ε and what it did to the test images.

    Attributes:
        spec: the attack as configured.
        eps: the ε of Table 1's sets (searched, or as given; None for an attack without
            one).
        eps_searched: whether `eps` was searched (Metzen et al.'s protocol).
        matrix_eps: the ε of the generalization matrices (the config's accuracy level).
        matrix_eps_search_accuracy: f's accuracy at `matrix_eps` when it was searched.
        detector_train_size: the training pairs D learned (those the attack changed).
        unchanged_train: training pairs the attack left unchanged (left out).
        unchanged_test: test pairs it left unchanged.
        success_rate_test: the share of test images it fooled f on.
        mean_l0_test: the mean number of pixel values it changed per test image.
        mean_l2_test: the mean L2 size of its perturbations.
        mean_linf_test: the mean L∞ size of its perturbations.
        eps_target_accuracy: the accuracy the search aimed below (searched ε only).
        eps_search_accuracy: f's accuracy at the ε found (searched ε only).
        eps_search_history: every (ε, accuracy) the search tried (searched ε only).
    """

    spec: AttackSpec
    eps: float | None
    eps_searched: bool
    matrix_eps: float | None
    matrix_eps_search_accuracy: float | None
    detector_train_size: int
    unchanged_train: int
    unchanged_test: int
    success_rate_test: float
    mean_l0_test: float
    mean_l2_test: float
    mean_linf_test: float
    eps_target_accuracy: float | None = None
    eps_search_accuracy: float | None = None
    eps_search_history: tuple[tuple[float, float], ...] | None = None

    _SEARCH: ClassVar[tuple[str, ...]] = ("eps_target_accuracy", "eps_search_accuracy", "eps_search_history")

    def to_dict(self) -> dict[str, Any]:
        """The spec's fields, then the attack's; the search's keys only for a searched ε."""
        out = {**self.spec.to_dict()}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "spec" or (f.name in self._SEARCH and not self.eps_searched):
                continue
            out[f.name] = [list(h) for h in value] if f.name == "eps_search_history" else value
        return out

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> AttackResult:
        own = {f.name for f in dataclasses.fields(cls)} - {"spec"}
        kept = {key: values[key] for key in own if key in values}
        if kept.get("eps_search_history") is not None:
            kept["eps_search_history"] = tuple(tuple(h) for h in kept["eps_search_history"])
        # results.json writes the ε used over the spec's; a searched ε was None in the spec.
        spec = dataclasses.replace(_spec(values), eps=None if kept.get("eps_searched") else values.get("eps"))
        return cls(spec=spec, **kept)


@dataclass(frozen=True)
class DetectionRow:
    """One detector's report against one attack's test set (a row of Table 1 or the comparison).

    Attributes:
        attack: the attack's label.
        detector: `"saliency"`, `"image"`, a baseline's name, or with a recipe:
            `"saliency (paper)"`.
        report: the measures (`evaluation.DetectionReport`).
    """

    attack: str
    detector: str
    report: DetectionReport

    def to_dict(self) -> dict[str, Any]:
        return {"attack": self.attack, "detector": self.detector, **self.report.to_dict()}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> DetectionRow:
        return cls(str(values["attack"]), str(values["detector"]), DetectionReport.from_dict(values))


@dataclass(frozen=True)
class RocCurve:
    """A detector's ROC curve on one attack's test set (rounded to 5 decimals)."""

    fpr: tuple[float, ...]
    tpr: tuple[float, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"fpr": list(self.fpr), "tpr": list(self.tpr)}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> RocCurve:
        return cls(tuple(values["fpr"]), tuple(values["tpr"]))


@dataclass(frozen=True)
class AdaptiveResult:
    """The detector-aware attack (Carlini & Wagner's loss on f and D) on one detector.

    Attributes:
        attack: the attack whose detector was attacked (the first L∞ one).
        eps: its ε.
        n_images: the test images attacked.
        rows: per σ (the weight of D's term): `{"sigma", "detection_rate", "f_accuracy"}`.
    """

    attack: str
    eps: float
    n_images: int
    rows: tuple[dict[str, float], ...]

    def to_dict(self) -> dict[str, Any]:
        return {"attack": self.attack, "eps": self.eps, "n_images": self.n_images, "rows": list(self.rows)}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> AdaptiveResult:
        rows = tuple(dict(r) for r in values["rows"])
        return cls(str(values["attack"]), float(values["eps"]), int(values["n_images"]), rows)


@dataclass(frozen=True)
class SecurityRow:
    """One detector of the security section: its unattacked measures and its evaluation.

    Attributes:
        roc_auc: the detector's ROC AUC on the attack's own test set (no adaptation).
        tpr_at_1_fpr: its TPR at 1% FPR there.
        tpr_at_5_fpr: its TPR at 5% FPR there.
        evaluation: the attacks on it (`evaluation.SecurityEvaluation`).
    """

    roc_auc: float | None
    tpr_at_1_fpr: float | None
    tpr_at_5_fpr: float | None
    evaluation: SecurityEvaluation

    def to_dict(self) -> dict[str, Any]:
        own = {"roc_auc": self.roc_auc, "tpr_at_1_fpr": self.tpr_at_1_fpr, "tpr_at_5_fpr": self.tpr_at_5_fpr}
        return {**own, **self.evaluation.to_dict()}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> SecurityRow:
        keys = ("roc_auc", "tpr_at_1_fpr", "tpr_at_5_fpr")
        return cls(*(values.get(key) for key in keys), SecurityEvaluation.from_dict(values))


@dataclass(frozen=True)
class SecuritySection:
    """The security section of one attack: each detector against PGD on f and the joint attack.

    Attributes:
        eps: the budgets attacked, ascending.
        eps_from: the attack whose ε they multiply (itself, or for an attack without an
            Lp ball the first L∞ one's).
        norm: `"inf"` or `2`.
        n_images: the test images attacked.
        n_calibration: the held-out clean images each detector was calibrated on.
        fpr: the clean false-positive rate of that calibration.
        nb_iter: the steps of each attack.
        restarts: its random restarts.
        detectors: a `SecurityRow` per detector.
    """

    eps: tuple[float, ...]
    eps_from: str
    norm: str | int
    n_images: int
    n_calibration: int
    fpr: float
    nb_iter: int
    restarts: int
    detectors: dict[str, SecurityRow]

    @property
    def norm_label(self) -> str:
        """The norm as the report writes it: `"L∞"` or `"L2"`."""
        return "L∞" if self.norm == "inf" else "L2"

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["eps"] = list(self.eps)
        out["detectors"] = {kind: row.to_dict() for kind, row in self.detectors.items()}
        return out

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> SecuritySection:
        detectors = {kind: SecurityRow.from_dict(row) for kind, row in values["detectors"].items()}
        own = {f.name: values[f.name] for f in dataclasses.fields(cls) if f.name not in ("eps", "detectors")}
        return cls(eps=tuple(values["eps"]), detectors=detectors, **own)


@dataclass(frozen=True, kw_only=True)
class _Results:
    """What both experiments' results hold besides their own sections."""

    versions: dict[str, str]
    classifier: ClassifierResult
    timings: dict[str, float] = field(default_factory=dict)
    timings_all_invocations: dict[str, float] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)

    experiment: ClassVar[str]
    _config_type: ClassVar[type]

    def _json(self, **sections: Any) -> dict[str, Any]:
        """`results.json`: what both experiments write around their own `sections`."""
        head = {
            "experiment": self.experiment,
            "config": self.config.to_dict(),
            "versions": dict(self.versions),
        }
        return {
            **head,
            "classifier": self.classifier.to_dict(),
            **sections,
            "timings": dict(self.timings),
            "files": dict(self.files),
            "timings_all_invocations": dict(self.timings_all_invocations),
        }

    @classmethod
    def _shared(cls, values: Mapping[str, Any]) -> dict[str, Any]:
        """The fields both experiments read from `results.json` (after checking which it is)."""
        _check_experiment(values, cls.experiment)
        return {
            "config": cls._config_type.from_dict(values["config"]),
            "versions": dict(values["versions"]),
            "classifier": ClassifierResult.from_dict(values["classifier"]),
            "timings": dict(values.get("timings", {})),
            "timings_all_invocations": dict(values.get("timings_all_invocations", {})),
            "files": dict(values.get("files", {})),
        }

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write `to_dict()` as JSON to `path` (atomically); returns the path."""
        from saliency_detect._files import atomic_write_text

        path = Path(path)
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2) + "\n")
        return path


@dataclass(frozen=True, kw_only=True)
class DetectionResults(_Results):
    """What `run_experiment` returns and writes to `results.json`.

    Attributes:
        config: the run's settings.
        versions: the library versions it ran with.
        classifier: the classifier f.
        attacks: an `AttackResult` per attack label, in the config's order.
        comparison: a `DetectionRow` per attack and detector (saliency, recipes,
            image-only, baselines).
        cross_attack: D's accuracy when trained on one attack and tested on another.
        cross_eps: per attack, D's accuracy across ε (empty without `eps_factors`).
        roc: per attack and detector, the ROC curve.
        adaptive: the detector-aware attack, or None when not run.
        security: a `SecuritySection` per attack, or None when not run.
        timings: seconds per step in this invocation (`"total"` included).
        timings_all_invocations: seconds per step summed over every invocation of the
            run (a resumed run's earlier ones too).
        files: the files written, by name (`"results"`, `"tables"`, `"report"`, figures).
    """

    experiment: ClassVar[str] = "detection"
    _config_type: ClassVar[type] = ExperimentConfig

    config: ExperimentConfig
    attacks: dict[str, AttackResult]
    comparison: tuple[DetectionRow, ...]
    cross_attack: GeneralizationMatrix
    cross_eps: dict[str, GeneralizationMatrix] = field(default_factory=dict)
    roc: dict[str, dict[str, RocCurve]] = field(default_factory=dict)
    adaptive: AdaptiveResult | None = None
    security: dict[str, SecuritySection] | None = None

    @property
    def table1(self) -> tuple[DetectionRow, ...]:
        """The saliency detector's rows (one per attack and recipe): the paper's Table 1."""
        return tuple(row for row in self.comparison if row.detector.startswith("saliency"))

    def row(self, attack: str, detector: str = "saliency") -> DetectionRow:
        """The comparison's row for `attack` and `detector`.

        Raises:
            KeyError: if there is none (the message lists what there is).
        """
        for row in self.comparison:
            if (row.attack, row.detector) == (attack, detector):
                return row
        there = sorted({(row.attack, row.detector) for row in self.comparison})
        raise KeyError(f"No row for attack {attack!r} and detector {detector!r}. Rows: {there}")

    def to_dict(self) -> dict[str, Any]:
        """The JSON of `results.json`."""
        return self._json(
            attacks={label: a.to_dict() for label, a in self.attacks.items()},
            table1=[row.to_dict() for row in self.table1],
            comparison=[row.to_dict() for row in self.comparison],
            matrices={
                "cross_attack": self.cross_attack.to_dict(),
                "cross_eps": {label: m.to_dict() for label, m in self.cross_eps.items()},
            },
            roc={
                label: {kind: c.to_dict() for kind, c in curves.items()} for label, curves in self.roc.items()
            },
            adaptive=None if self.adaptive is None else self.adaptive.to_dict(),
            security=None if self.security is None else {k: v.to_dict() for k, v in self.security.items()},
        )

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> DetectionResults:
        """Read `to_dict()`'s JSON back (a `results.json` of `run_experiment`)."""
        shared = cls._shared(values)  # first: it says when the file is another experiment's
        matrices = values["matrices"]
        return cls(
            **shared,
            attacks={label: AttackResult.from_dict(a) for label, a in values["attacks"].items()},
            comparison=tuple(DetectionRow.from_dict(row) for row in values["comparison"]),
            cross_attack=GeneralizationMatrix.from_dict(matrices["cross_attack"]),
            cross_eps={
                label: GeneralizationMatrix.from_dict(m) for label, m in matrices.get("cross_eps", {}).items()
            },
            roc={
                label: {kind: RocCurve.from_dict(c) for kind, c in curves.items()}
                for label, curves in values.get("roc", {}).items()
            },
            adaptive=None if not values.get("adaptive") else AdaptiveResult.from_dict(values["adaptive"]),
            security=None
            if not values.get("security")
            else {label: SecuritySection.from_dict(s) for label, s in values["security"].items()},
        )


@dataclass(frozen=True)
class Interval:
    """A mean with its 95% confidence interval over `n` images.

    All None when `n` is 0; `low` and `high` are None when `n` is 1 (one value has no spread).
    """

    mean: float | None
    low: float | None
    high: float | None
    n: int

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> Interval:
        return cls(values["mean"], values["low"], values["high"], int(values["n"]))


@dataclass(frozen=True)
class Measured:
    """One measure on the adversarial images and on the control (the perturbation moved).

    Attributes:
        attack: the measure, adversarial against clean.
        control: the same measure, control against clean.
        not_applicable: why the measure does not apply to this attack, or None.
    """

    attack: Interval
    control: Interval
    not_applicable: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"attack": self.attack.to_dict(), "control": self.control.to_dict()}
        if self.not_applicable is not None:
            out["not_applicable"] = self.not_applicable
        return out

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> Measured:
        return cls(
            Interval.from_dict(values["attack"]),
            Interval.from_dict(values["control"]),
            values.get("not_applicable"),
        )


@dataclass(frozen=True)
class LayerRow:
    """One convolution layer of the per-layer analysis.

    Attributes:
        layer: the layer's name.
        depth: its position among the convolutions, from the input (1 first).
        feature_change: the relative change of its activations.
        predicted: each of `LAYER_MEASURES` of revised Grad-CAM for each image's predicted class.
        true: the same for the true class.
    """

    layer: str
    depth: int
    feature_change: Measured
    predicted: dict[str, Measured]
    true: dict[str, Measured]

    def to_dict(self) -> dict[str, Any]:
        return {
            "layer": self.layer,
            "depth": self.depth,
            "feature_change": self.feature_change.to_dict(),
            "predicted": {name: m.to_dict() for name, m in self.predicted.items()},
            "true": {name: m.to_dict() for name, m in self.true.items()},
        }

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> LayerRow:
        return cls(
            str(values["layer"]),
            int(values["depth"]),
            Measured.from_dict(values["feature_change"]),
            {name: Measured.from_dict(m) for name, m in values["predicted"].items()},
            {name: Measured.from_dict(m) for name, m in values["true"].items()},
        )


@dataclass(frozen=True)
class AttentionAttack:
    """One attack of the attention analysis.

    Attributes:
        spec: the attack as configured.
        n_attacked: the test images attacked.
        n_analysed: those f classified correctly and the attack fooled (the ones measured).
        success_rate: the share of attacked images it fooled f on.
        mean_l0: the mean number of pixel values it changed.
        mean_linf: the mean L∞ size of its perturbations.
        measures: each of `MEASURES`, attack and control (empty when no image was analysed).
        control_fooled_rate: the share of controls that fooled f (None when none analysed).
        layers: the per-layer analysis, input to output (None when not run).
    """

    spec: AttackSpec
    n_attacked: int
    n_analysed: int
    success_rate: float
    mean_l0: float
    mean_linf: float
    measures: dict[str, Measured] = field(default_factory=dict)
    control_fooled_rate: float | None = None
    layers: tuple[LayerRow, ...] | None = None

    def to_dict(self) -> dict[str, Any]:
        out = {
            **self.spec.to_dict(),
            "n_attacked": self.n_attacked,
            "n_analysed": self.n_analysed,
            "success_rate": self.success_rate,
            "mean_l0": self.mean_l0,
            "mean_linf": self.mean_linf,
            "measures": {name: m.to_dict() for name, m in self.measures.items()},
        }
        if self.control_fooled_rate is not None:
            out["control_fooled_rate"] = self.control_fooled_rate
        if self.layers is not None:
            out["layers"] = [row.to_dict() for row in self.layers]
        return out

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> AttentionAttack:
        layers = values.get("layers")
        return cls(
            spec=_spec(values),
            n_attacked=int(values["n_attacked"]),
            n_analysed=int(values["n_analysed"]),
            success_rate=float(values["success_rate"]),
            mean_l0=float(values["mean_l0"]),
            mean_linf=float(values["mean_linf"]),
            measures={name: Measured.from_dict(m) for name, m in values["measures"].items()},
            control_fooled_rate=values.get("control_fooled_rate"),
            layers=None if layers is None else tuple(LayerRow.from_dict(row) for row in layers),
        )


@dataclass(frozen=True, kw_only=True)
class AttentionResults(_Results):
    """What `run_explain` returns and writes to `results.json`.

    Attributes:
        config: the run's settings.
        versions: the library versions it ran with.
        classifier: the classifier f.
        attacks: an `AttentionAttack` per attack label, in the config's order.
        timings: seconds per step in this invocation (`"total"` included).
        timings_all_invocations: seconds per step over every invocation of the run.
        files: the files written, by name.

    The descriptions of the measures (`MEASURES`, `LAYER_MEASURES`) and the classes of
    layers analysed are written into `results.json` beside these, for a reader of the
    file alone.
    """

    experiment: ClassVar[str] = "attention"
    _config_type: ClassVar[type] = ExplainConfig

    config: ExplainConfig
    attacks: dict[str, AttentionAttack]

    def to_dict(self) -> dict[str, Any]:
        """The JSON of `results.json`."""
        return self._json(
            measures={name: {"compares": text, "claim": claim} for name, (text, claim) in MEASURES.items()},
            layer_measures=dict(LAYER_MEASURES),
            layer_classes=list(LAYER_CLASSES),
            attacks={label: a.to_dict() for label, a in self.attacks.items()},
        )

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> AttentionResults:
        """Read `to_dict()`'s JSON back (a `results.json` of `run_explain`)."""
        shared = cls._shared(values)  # first: it says when the file is another experiment's
        attacks = {label: AttentionAttack.from_dict(a) for label, a in values["attacks"].items()}
        return cls(**shared, attacks=attacks)


#: Either experiment's results, for a function that returns the kind it was given.
Results = TypeVar("Results", "DetectionResults", "AttentionResults")


def _check_experiment(values: Mapping[str, Any], expected: str) -> None:
    if not isinstance(values, Mapping) or values.get("experiment") != expected:
        found = values.get("experiment") if isinstance(values, Mapping) else type(values).__name__
        raise ValueError(
            f"Expected the results of the {expected!r} experiment (a mapping with "
            f'"experiment": {expected!r}). Received: {found!r}'
        )


def load_results(path: str | os.PathLike[str]) -> DetectionResults | AttentionResults:
    """Read a `results.json` written by `run_experiment` or `run_explain`.

    Args:
        path: the file, or the run's folder holding it.

    Returns:
        A `DetectionResults` or an `AttentionResults`, as its `"experiment"` key says.

    Raises:
        FileNotFoundError: if there is no such file.
        ValueError: if it is not JSON, or not the results of either experiment (the
            message names the file and what is wrong).

    Examples:
        >>> import tempfile
        >>> from saliency_detect.experiments import demo_config, load_results, run_experiment
        >>> config = demo_config().replace(
        ...     train_size=300, test_size=40, epochs=1, detector_train_size=60, detector_epochs=1,
        ...     attacks=[{"name": "fgsm", "eps": 0.3}], baselines=[], adaptive_sigmas=[],
        ...     security_eps_factors=[])
        >>> out = tempfile.mkdtemp()
        >>> results = run_experiment(config, out, verbose=0)
        >>> load_results(out).to_dict() == results.to_dict()
        True
    """
    path = Path(path)
    if path.is_dir():
        path = path / "results.json"
    try:
        values = json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"No results file at '{path}' (expected a run's results.json).") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"'{path}' is not a results.json file (it is not JSON: {error}).") from None
    kind = values.get("experiment") if isinstance(values, Mapping) else None
    types = {DetectionResults.experiment: DetectionResults, AttentionResults.experiment: AttentionResults}
    if kind not in types:
        raise ValueError(
            f"'{path}' is not the results of an experiment: its \"experiment\" key must be one of "
            f"{sorted(types)}. Received: {kind!r}"
        )
    try:
        return types[kind].from_dict(values)
    except (KeyError, TypeError, ValueError) as error:
        raise ValueError(f"'{path}' is not a readable {kind} results file: {error!r}") from None
