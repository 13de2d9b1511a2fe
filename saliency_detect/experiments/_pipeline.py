"""`run_experiment`: the detection paper's experiment, end to end, every step cached.

Steps, each skipped when its result is already in `OUT/cache/` (so an interrupted run
resumes): train or load the classifier f; the minimal ε of each attack; the adversarial
training and test sets (resumable HDF5 files); a saliency detector per attack (and per ε
for the cross-ε matrix) and the baselines; then the reports (`_outputs.write_outputs`).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import platform
import shutil
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from saliency_detect._files import atomic_write_text
from saliency_detect._version import __version__
from saliency_detect.experiments._config import AttackSpec, ExperimentConfig
from saliency_detect.experiments._outputs import _figures, _safe, saliency_grid_png

if TYPE_CHECKING:
    import tensorflow as tf

#: Attacks whose ε is an L-infinity bound; the adaptive attack runs against the first.
_LINF_ATTACKS = ("fgsm", "bim", "pgd")
#: Test images per attack in the report's Figure 1 grid.
_GRID_IMAGES = 4


def _digest(*parts: Any) -> str:
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:10]


class _Run:
    """State shared by the steps of one experiment: paths, logging, timings.

    Creating it makes the output folder and writes `config.json`; `load_data` and
    `finish` are the first and last steps every experiment shares.
    """

    def __init__(self, config, out_dir, verbose: int):
        self.config = config
        self.out = Path(out_dir)
        self.cache = self.out / "cache"
        self.verbose = verbose
        self.timings: dict[str, float] = {}
        self.all_timings = _read_timings(self.cache / "timings.json")  # every invocation's, summed
        self.started = time.perf_counter()
        self.out.mkdir(parents=True, exist_ok=True)
        config.save(self.out / "config.json")

    def load_data(self):
        """Load the config's data set and seed Keras, NumPy and Python from `config.seed`."""
        import keras

        from saliency_detect.data import load_dataset

        config = self.config
        dataset = self.timed(
            "load_data",
            lambda: load_dataset(
                config.dataset,
                data_dir=config.data_dir,
                train_size=config.train_size,
                test_size=config.test_size,
            ),
        )
        self.log(f"[data] {dataset!r}")
        keras.utils.set_random_seed(config.seed)
        return dataset

    def finish(self, results: dict[str, Any], figures: dict[str, bytes] | None = None) -> dict[str, Any]:
        """Record the timings in `results` and write the report."""
        from saliency_detect.experiments._outputs import write_outputs

        self.timings["total"] = time.perf_counter() - self.started
        results["timings"] = {key: round(value, 3) for key, value in self.timings.items()}
        results["timings_all_invocations"] = {key: round(value, 3) for key, value in self.all_timings.items()}
        write_outputs(results, self.out, figures)
        self.log(f"[done] report written to {self.out / 'report.html'} ({self.timings['total']:.0f} s)")
        return results

    def log(self, message: str) -> None:
        if self.verbose:
            print(message, flush=True)

    def timed(self, key: str, fn: Callable[[], Any]) -> Any:
        """Run `fn`, adding its wall-clock to this invocation's timings and to the cache's record.

        `cache/timings.json` sums every invocation's time per step, so a run resumed
        across interruptions still reports what each step cost in all.
        """
        start = time.perf_counter()
        value = fn()
        seconds = time.perf_counter() - start
        self.timings[key] = self.timings.get(key, 0.0) + seconds
        self.all_timings[key] = self.all_timings.get(key, 0.0) + seconds
        atomic_write_text(self.cache / "timings.json", json.dumps(self.all_timings, indent=1))
        return value


def _cached_json(path: Path, check: Callable[[Any], Any] = lambda value: value) -> Any:
    """A cached JSON file's content passed through `check`, or None when absent or damaged.

    A damaged cache (unreadable, not JSON, missing a field `check` reads) is not an
    error: it is recomputed, with a warning naming the file.
    """
    if not path.exists():
        return None
    try:
        return check(json.loads(path.read_text()))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        warnings.warn(
            f"The cached file '{path}' is damaged ({type(e).__name__}: {e}); recomputing it.", stacklevel=2
        )
        return None


def _read_timings(path: Path) -> dict[str, float]:
    """The per-step seconds recorded by earlier invocations of a run, or {} for a new one."""
    try:
        return {str(k): float(v) for k, v in json.loads(path.read_text()).items()}
    except (OSError, ValueError, AttributeError):
        return {}


def run_experiment(
    config: ExperimentConfig,
    out_dir: str | os.PathLike[str],
    *,
    verbose: int = 1,
    strategy: tf.distribute.Strategy | None = None,
) -> dict[str, Any]:
    """Run the detection paper's experiment and write its report to `out_dir`.

    Trains (or loads) the classifier f, finds each attack's minimal ε (unless given),
    crafts the adversarial training and test sets, fits a `SaliencyDetector` per attack
    (and per ε when `config.eps_factors` is set) and the configured baselines, measures
    them (Table 1, the cross-attack and cross-ε generalization matrices, ROC curves, the
    detector-aware attack for each σ) and writes `results.json`, `tables.md`, PNG figures
    and a self-contained `report.html` to `out_dir`.

    Every expensive step is cached under `out_dir/cache/` under a name derived from
    everything it depends on: rerunning an interrupted run resumes it, and a changed
    setting recomputes only what depends on it. The classifier trained here is
    `out_dir/classifier.keras`.

    Args:
        config: the experiment's settings.
        out_dir: the folder for the report and the cache (created if needed).
        verbose: 0 is silent; 1 prints each step with one progress bar (a training run's
            bar counts epochs); 2 adds Keras's line per epoch.
        strategy: the `tf.distribute.Strategy` every step runs under (training, attacks,
            saliency, scoring); None takes the current one.

    Returns:
        The contents of `results.json`: the config, library versions, the classifier's
        accuracy, each attack's ε and success, every detection report, the matrices,
        the adaptive-attack results, the timings and the files written.

    Raises:
        TypeError: if `config` is not an `ExperimentConfig`.
        ValueError: if the data set, model or a cached file does not fit the config.

    Examples:
        >>> import tempfile
        >>> from saliency_detect.experiments import AttackSpec, demo_config, run_experiment
        >>> config = demo_config().replace(
        ...     train_size=300, test_size=40, epochs=1, detector_train_size=60, detector_epochs=1,
        ...     attacks=[{"name": "fgsm", "eps": 0.3}])
        >>> results = run_experiment(config, tempfile.mkdtemp(), verbose=0)
        >>> sorted(results["attacks"])
        ['fgsm']
    """
    from saliency_detect._distribute import resolve_strategy

    if not isinstance(config, ExperimentConfig):
        raise TypeError(f"`config` must be an ExperimentConfig. Received: {type(config).__name__}")
    with resolve_strategy(strategy).scope():
        return _experiment(_Run(config, out_dir, verbose))


def _experiment(run) -> dict[str, Any]:
    from saliency_detect.evaluation import changed_images

    config = run.config
    dataset = run.load_data()
    f, classifier_info = _classifier(run, dataset)
    x_test, y_test = dataset.x_test, dataset.y_test

    attacks: dict[str, dict[str, Any]] = {}
    detectors: dict[str, Any] = {}
    comparison: list[dict[str, Any]] = []
    roc: dict[str, dict[str, dict[str, list[float]]]] = {}
    matrix_detectors: dict[str, Any] = {}
    grids: dict[str, bytes] = {}
    matrix_test: dict[str, np.ndarray] = {}
    security_jobs: dict[str, dict[str, Any]] = {}
    main_recipe = config.detector_recipes[0]
    for spec in config.attacks:
        label = spec.display
        n_train = spec.train_size or config.detector_train_size or len(dataset.x_train)
        x_train = dataset.x_train[:n_train]
        y_train = dataset.y_train[:n_train]
        # Table 1 at the attack's own accuracy level; the matrices at the config's (< 30 %).
        eps_info = _epsilon(run, f, spec, x_test, y_test, spec.target_accuracy or config.target_accuracy)
        matrix_info = (
            eps_info
            if spec.target_accuracy is None
            else _epsilon(run, f, spec, x_test, y_test, config.target_accuracy)
        )
        eps, matrix_eps = eps_info["eps"], matrix_info["eps"]
        adv_train = _adversarial(run, f, spec, eps, x_train, y_train, "train")
        adv_test = _adversarial(run, f, spec, eps, x_test, y_test, "test")
        # Pairs the attack left unchanged are not adversarial examples: D never learns them
        # as such, and the report leaves them out of D's adversarial columns.
        kept = changed_images(x_train, adv_train.x_adv)
        d_clean, d_adv = x_train[kept], adv_train.x_adv[kept]
        attacks[label] = {
            **spec.to_dict(),
            **eps_info,
            "matrix_eps": matrix_eps,
            "matrix_eps_search_accuracy": matrix_info.get("eps_search_accuracy"),
            "detector_train_size": int(kept.sum()),
            "unchanged_train": int(len(kept) - kept.sum()),
            "unchanged_test": int(np.count_nonzero(~changed_images(x_test, adv_test.x_adv))),
            "success_rate_test": float(np.mean(adv_test.success)),
            "mean_l0_test": float(np.mean(adv_test.l0)),
            "mean_l2_test": float(np.mean(adv_test.l2)),
            "mean_linf_test": float(np.mean(adv_test.linf)),
        }
        fitted = {}
        for recipe in config.detector_recipes:
            kind = _kind("saliency", recipe, main_recipe)
            fitted[kind] = _saliency_detector(run, f, d_clean, d_adv, "image+saliency", spec, eps, recipe)
        scored, baseline_detectors = {}, {}
        for baseline in config.baselines:
            if baseline != "image":  # feature-space baselines: fitted, scored and cached as scores
                *scored[baseline], baseline_detectors[baseline] = _feature_baseline(
                    run, f, baseline, d_clean, d_adv, spec, eps, (x_test, y_test, adv_test.x_adv)
                )
                continue
            for recipe in config.detector_recipes:
                kind = _kind(baseline, recipe, main_recipe)
                fitted[kind] = _saliency_detector(run, f, d_clean, d_adv, "image", spec, eps, recipe)
        detectors[label] = fitted["saliency"]
        grids[f"saliency_{_safe(label)}.png"] = _saliency_grid(
            label, fitted["saliency"], x_test[:_GRID_IMAGES], adv_test.x_adv[:_GRID_IMAGES]
        )
        if matrix_eps == eps:
            matrix_detectors[label], matrix_test[label] = fitted["saliency"], _changed(x_test, adv_test)
        else:
            matrix_detectors[label], matrix_test[label] = _detector_at(
                run, f, spec, matrix_eps, (x_train, y_train), (x_test, y_test)
            )
        roc[label] = {}
        evaluated = {
            kind: _evaluate(run, f, detector, x_test, y_test, adv_test.x_adv, label)
            for kind, detector in fitted.items()
        }
        for kind, (report, curve) in {**evaluated, **scored}.items():
            comparison.append({"attack": label, "detector": kind, **report})
            roc[label][kind] = curve
            run.log(
                f"[{label}] {kind}: D accuracy clean {report['d_accuracy_clean']:.3f}, "
                f"adversarial {report['d_accuracy_adversarial']:.3f}, ROC AUC {report['roc_auc']:.3f}"
            )
        if config.security_eps_factors:
            norm = _attack_norm(spec) if eps is not None else None
            security_jobs[label] = {
                "spec": spec,
                "attack_eps": eps,
                "eps": eps if norm is not None else None,
                "norm": norm,
                "pairs": (d_clean, d_adv),
                "detectors": {kind: fitted[kind] for kind in ("saliency", "image") if kind in fitted},
                "baselines": baseline_detectors,
                "reports": {kind: report for kind, (report, _) in {**evaluated, **scored}.items()},
            }

    matrices = {"cross_attack": _cross_attack(run, matrix_detectors, x_test, matrix_test).to_dict()}
    cross_eps = {}
    if config.eps_factors:
        for spec in config.attacks:
            eps = attacks[spec.display]["matrix_eps"]
            if eps is not None:
                cross_eps[spec.display] = _cross_eps(run, f, spec, eps, dataset).to_dict()
    matrices["cross_eps"] = cross_eps
    adaptive = _adaptive(run, f, detectors, attacks, x_test, y_test)
    security = _security(run, f, security_jobs, x_test, y_test)

    results = {
        "experiment": "detection",
        "config": config.to_dict(),
        "versions": _versions(),
        "classifier": classifier_info,
        "attacks": attacks,
        "table1": [row for row in comparison if row["detector"].startswith("saliency")],
        "comparison": comparison,
        "matrices": matrices,
        "roc": roc,
        "adaptive": adaptive,
        "security": security,
        "timings": {},
        "files": {},
    }
    return run.finish(results, {**_figures(results), **grids})


def _detector_at(run: _Run, f, spec: AttackSpec, eps, train, test) -> tuple[Any, np.ndarray]:
    """The main recipe's saliency detector for `spec` at `eps`, and its changed test images.

    What both generalization matrices need of one ε: the training and test sets crafted
    (cached), the pairs the attack left unchanged dropped, the detector fitted (cached).
    """
    from saliency_detect.evaluation import changed_images

    (x_train, y_train), (x_test, y_test) = train, test
    adv_train = _adversarial(run, f, spec, eps, x_train, y_train, "train")
    kept = changed_images(x_train, adv_train.x_adv)
    detector = _saliency_detector(
        run,
        f,
        x_train[kept],
        adv_train.x_adv[kept],
        "image+saliency",
        spec,
        eps,
        run.config.detector_recipes[0],
    )
    return detector, _changed(x_test, _adversarial(run, f, spec, eps, x_test, y_test, "test"))


def _changed(x, adversarial_set) -> np.ndarray:
    """The adversarial images of a set that differ from their clean image."""
    from saliency_detect.evaluation import changed_images

    return adversarial_set.x_adv[changed_images(x, adversarial_set.x_adv)]


def _saliency_grid(label: str, detector, x, x_adv) -> bytes:
    """Figure 1 of the paper for one attack, drawn from the fitted detector's own saliency channel."""
    from saliency_detect.detector import SaliencyFeatures

    features = SaliencyFeatures(
        detector.classifier,
        saliency=detector.saliency,
        input_mode="saliency",
        scale=detector.saliency_scale_,
        normalization=detector.normalization_,
    )
    saliency, saliency_adv = (np.asarray(features(np.asarray(images, np.float32))) for images in (x, x_adv))
    return saliency_grid_png(label, x, saliency, x_adv, saliency_adv)


def _versions() -> dict[str, str]:
    import keras
    import sklearn
    import tensorflow as tf

    return {
        "saliency_detect": __version__,
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": np.__version__,
        "scikit-learn": sklearn.__version__,
        "platform": platform.platform(),
    }


def _classifier(run: _Run, dataset) -> tuple[Any, dict[str, Any]]:
    from saliency_detect._progress import EpochProgress
    from saliency_detect.models import (
        classifier_accuracy,
        get_model_builder,
        load_model,
        model_fingerprint,
        paper_classifier,
        paper_defaults,
        pretrained,
        pretrained_for,
        pretrained_info,
        train_classifier,
    )

    config = run.config
    shipped = pretrained_for(config.dataset, config.architecture) if config.use_pretrained else None
    if config.model is not None:
        f = load_model(config.model, compile=False)
        source = str(config.model)
        run.log(f"[classifier] loaded {source}")
    elif shipped is not None:
        f = pretrained(shipped)
        source = f"pretrained:{shipped}"
        run.log(f"[classifier] pretrained {shipped} ({pretrained_info(shipped)['command']})")
    else:
        name = config.architecture or paper_classifier(config.dataset)
        defaults = paper_defaults(config.dataset)
        settings = {
            "architecture": name,
            "dataset": config.dataset,
            "train_size": len(dataset.x_train),
            "epochs": config.epochs or defaults["epochs"],
            "learning_rate": config.learning_rate or defaults["learning_rate"],
            "augment": config.augment,
            "seed": config.seed,
        }
        path = run.out / "classifier.keras"
        stamp = run.cache / "classifier.json"
        recorded = _cached_json(stamp, lambda c: (c["settings"], str(c["fingerprint"])))
        f = None
        if path.exists() and recorded is not None and recorded[0] == settings:
            try:
                f = load_model(path, compile=False)
            except ValueError as e:
                warnings.warn(f"{e} Retraining the classifier.", stacklevel=2)
            if f is not None and model_fingerprint(f) != recorded[1]:
                warnings.warn(
                    f"'{path}' is not the classifier this run trained (its fingerprint differs from the one "
                    f"recorded in '{stamp}'): it was replaced or damaged. Retraining it.",
                    stacklevel=2,
                )
                f = None
            if f is not None:
                run.log(f"[classifier] reusing {path}")
        if f is None:
            run.log(f"[classifier] training {name} for {settings['epochs']} epochs")
            f = get_model_builder(name)(input_shape=dataset.input_shape, num_classes=dataset.num_classes)
            run.timed(
                "train_classifier",
                lambda: train_classifier(
                    f,
                    dataset,
                    epochs=settings["epochs"],
                    learning_rate=settings["learning_rate"],
                    augment=config.augment,
                    save_path=path,
                    backup_dir=run.cache / f"classifier-backup-{_digest(settings)}",
                    random_state=config.seed,
                    callbacks=[EpochProgress(settings["epochs"])] if run.verbose == 1 else None,
                    verbose=2 if run.verbose >= 2 else 0,
                ),
            )
            atomic_write_text(
                stamp, json.dumps({"settings": settings, "fingerprint": model_fingerprint(f)}, indent=2)
            )
        source = str(path)
    accuracy = classifier_accuracy(f, dataset.x_test, dataset.y_test)
    run.log(f"[classifier] test accuracy {accuracy:.4f}")
    return f, {"source": source, "fingerprint": model_fingerprint(f), "test_accuracy": float(accuracy)}


def _takes_eps(name: str) -> bool:
    from saliency_detect.attacks import available_attacks

    return "eps" in available_attacks()[name]


def _kind(detector: str, recipe: str, main_recipe: str) -> str:
    """A detector's name in the tables: the main recipe's keeps the plain name."""
    return detector if recipe == main_recipe else f"{detector} ({recipe} recipe)"


def _epsilon(run: _Run, f, spec: AttackSpec, x_test, y_test, target: float) -> dict[str, Any]:
    from saliency_detect.attacks import get_attack, minimal_epsilon
    from saliency_detect.attacks._registry import effective_params
    from saliency_detect.models import model_fingerprint

    if not _takes_eps(spec.name):
        return {"eps": None, "eps_searched": False}
    if spec.eps is not None:
        return {"eps": float(spec.eps), "eps_searched": False}
    config = run.config
    n = min(config.search_size, len(x_test))
    params = effective_params(get_attack(spec.name), dict(spec.params))
    key = _digest(spec.name, params, model_fingerprint(f), n, target)
    cache_file = run.cache / "epsilon.json"
    cached = (
        _cached_json(cache_file, lambda c: {k: {"eps": float(v["eps"]), **v} for k, v in c.items()}) or {}
    )
    if key not in cached:
        run.log(f"[{spec.display}] searching the minimal ε for accuracy < {target:.0%} on {n} images")
        found = run.timed(
            f"epsilon/{spec.display}",
            lambda: minimal_epsilon(
                f, x_test[:n], y_test[:n], spec.name, target_accuracy=target, **dict(spec.params)
            ),
        )
        history = [list(h) for h in found.history]
        cached[key] = {"eps": found.eps, "accuracy": found.accuracy, "history": history}
        atomic_write_text(cache_file, json.dumps(cached, indent=2))
    entry = cached[key]
    run.log(f"[{spec.display}] ε = {entry['eps']:.4g} (accuracy {entry['accuracy']:.3f} on {n} images)")
    return {
        "eps": entry["eps"],
        "eps_searched": True,
        "eps_target_accuracy": float(target),
        "eps_search_accuracy": entry["accuracy"],
        "eps_search_history": entry["history"],
    }


def _attack_params(run: _Run, spec: AttackSpec, eps: float | None) -> dict[str, Any]:
    from saliency_detect.attacks import available_attacks, get_attack
    from saliency_detect.attacks._registry import effective_params

    params = dict(spec.params)
    if eps is not None:
        params["eps"] = float(eps)
    if "random_state" in available_attacks()[spec.name]:
        params.setdefault("random_state", run.config.seed)
    return effective_params(get_attack(spec.name), params)


def _adversarial(run: _Run, f, spec: AttackSpec, eps, x, y, split: str):
    from saliency_detect.attacks import generate_adversarial_set, load_adversarial_set
    from saliency_detect.models import model_fingerprint

    params = _attack_params(run, spec, eps)
    key = _digest(spec.name, params, model_fingerprint(f), len(x))
    path = run.cache / "adversarial" / f"{spec.name}-{split}-{key}.h5"
    if not path.exists():
        run.log(f"[{spec.display}] crafting the {split} set ({len(x)} images) -> {path.name}")
    run.timed(
        f"attack/{spec.display}",
        lambda: generate_adversarial_set(f, x, y, spec.name, params, path, verbose=bool(run.verbose)),
    )
    return load_adversarial_set(path)


def _detector_settings(run: _Run, input_mode: str, recipe: str) -> dict[str, Any]:
    config = run.config
    epochs = config.detector_epochs
    if epochs is None and recipe == "paper" and config.dataset.startswith("cifar10"):
        epochs = 5  # the paper trained CIFAR10-NET-D for 5 epochs
    return {
        "saliency": config.saliency,
        "input_mode": input_mode,
        "recipe": recipe,
        "epochs": epochs,
        "learning_rate": config.detector_learning_rate,
        "batch_size": config.detector_batch_size,
        "random_state": config.seed,
    }


def _saliency_detector(run: _Run, f, x_clean, x_adv, input_mode: str, spec: AttackSpec, eps, recipe: str):
    from saliency_detect._progress import EpochProgress
    from saliency_detect.detector import SaliencyDetector
    from saliency_detect.models import model_fingerprint

    settings = _detector_settings(run, input_mode, recipe)
    # Every parameter, defaults included, so a changed default refits instead of reusing.
    effective = _identity_params(SaliencyDetector(f, **settings))
    key = _digest(effective, spec.name, _attack_params(run, spec, eps), model_fingerprint(f), len(x_clean))
    path = run.cache / "detectors" / f"{spec.display}-{input_mode.replace('+', '_')}-{recipe}-{key}"
    if path.exists():
        try:
            detector = SaliencyDetector.load(path, classifier=f)
            run.log(f"[{spec.display}] reusing detector {path.name}")
            return detector
        except (ValueError, OSError) as e:  # damaged, or saved by an older version
            warnings.warn(f"The cached detector is not reused ({e}); fitting it again.", stacklevel=2)
            shutil.rmtree(path, ignore_errors=True)
    run.log(
        f"[{spec.display}] fitting the {input_mode} detector ({recipe} recipe) on "
        f"{len(x_clean)} + {len(x_adv)} images"
    )
    detector = SaliencyDetector(f, cache_saliency=True, verbose=2 if run.verbose >= 2 else 0, **settings)
    callbacks = [EpochProgress(detector._recipe_value("epochs"))] if run.verbose == 1 else []
    run.timed(
        f"detector/{spec.display}/{input_mode}/{recipe}",
        lambda: detector.fit(x_clean, x_adv, callbacks=callbacks),
    )
    detector.save(path, include_classifier=False)
    return detector


def _baseline(f, kind: str, seed: int):
    """An unfitted feature-space baseline of the config's `baselines` (all but `"image"`)."""
    from saliency_detect import detector as detectors

    if kind == "feature_squeezing":  # thresholded on clean images at 5% FPR, as its paper
        return detectors.FeatureSqueezingDetector(f)
    classes = {
        "kernel_density": detectors.KernelDensityDetector,
        "lid": detectors.LIDDetector,
        "mahalanobis": detectors.MahalanobisDetector,
    }
    return classes[kind](f, random_state=seed)


def _identity_params(detector) -> dict[str, Any]:
    """A detector's parameters, defaults included, without the objects and run-time settings.

    What a cache key needs to tell one detector from another: a changed default gives
    a new key, so the step is recomputed instead of reused.
    """
    skipped = ("classifier", "detector", "strategy", "verbose")
    return {k: v for k, v in detector.get_params().items() if k not in skipped}


def _feature_baseline(run: _Run, f, kind: str, x_clean, x_adv, spec: AttackSpec, eps, test) -> tuple:
    """Fit a feature-space baseline (KD+BU, LID, Mahalanobis, feature squeezing) and score the test pairs.

    These detectors are scikit-learn pipelines over f's features, not Keras models, so
    what is cached is their report and ROC curve: a resumed run does not refit them.
    Returns `(report, roc_curve, detector)`, the detector None when the scores came
    from the cache.
    """
    from saliency_detect.models import model_fingerprint

    x_test, y_test, x_test_adv = test
    detector = _baseline(f, kind, run.config.seed)
    params = {k: v for k, v in detector.get_params().items() if k != "classifier"}
    key = _digest(
        kind,
        params,
        spec.name,
        _attack_params(run, spec, eps),
        model_fingerprint(f),
        len(x_clean),
        len(x_test),
    )
    path = run.cache / "baselines" / f"{spec.display}-{kind}-{key}.json"
    cached = _cached_json(path, lambda c: (dict(c["report"]), c["roc"]))
    if cached is not None:
        run.log(f"[{spec.display}] reusing the {kind} baseline's scores {path.name}")
        return (*cached, None)
    run.log(f"[{spec.display}] fitting the {kind} baseline on {len(x_clean)} + {len(x_adv)} images")
    run.timed(f"detector/{spec.display}/{kind}", lambda: detector.fit(x_clean, x_adv))
    report, curve = _evaluate(run, f, detector, x_test, y_test, x_test_adv, spec.display)
    atomic_write_text(path, json.dumps({"report": report, "roc": curve}, indent=1))
    return report, curve, detector


def _evaluate(run: _Run, f, detector, x_test, y_test, x_adv, label: str):
    from saliency_detect.evaluation._report import detection_report_and_roc

    report, (fpr, tpr) = detection_report_and_roc(f, detector, x_test, y_test, x_adv, name=label)
    return report.to_dict(), {
        "fpr": [round(float(v), 5) for v in fpr],
        "tpr": [round(float(v), 5) for v in tpr],
    }


def _cross_attack(run: _Run, detectors, x_test, adversarial_test):
    from saliency_detect.evaluation import generalization_matrix

    run.log("[matrix] cross-attack generalization")
    return run.timed("matrices", lambda: generalization_matrix(detectors, x_test, adversarial_test))


def _cross_eps(run: _Run, f, spec: AttackSpec, eps: float, dataset):
    from saliency_detect.evaluation import generalization_matrix

    config = run.config
    values = sorted({float(eps)} | {float(eps) * factor for factor in config.eps_factors})
    n_train = spec.train_size or config.detector_train_size or len(dataset.x_train)
    x_train, y_train = dataset.x_train[:n_train], dataset.y_train[:n_train]
    detectors, test_sets = {}, {}
    for value in values:
        label = f"ε={value:.3g}"
        detectors[label], test_sets[label] = _detector_at(
            run, f, spec, value, (x_train, y_train), (dataset.x_test, dataset.y_test)
        )
    run.log(f"[matrix] cross-ε generalization for {spec.display}")
    return run.timed("matrices", lambda: generalization_matrix(detectors, dataset.x_test, test_sets))


def _adaptive(run: _Run, f, detectors, attacks, x_test, y_test) -> dict[str, Any] | None:
    from saliency_detect.attacks import detector_aware
    from saliency_detect.models import predict_labels

    sigmas = run.config.adaptive_sigmas
    eligible = [label for label, a in attacks.items() if a["name"] in _LINF_ATTACKS and a["eps"] is not None]
    target = eligible[0] if eligible else None
    if not sigmas or target is None:
        return None
    detector = detectors[target]
    eps = attacks[target]["eps"]
    n = min(run.config.adaptive_size, len(x_test))
    x, y = x_test[:n], y_test[:n]
    rows = []
    for sigma in sigmas:
        run.log(f"[adaptive] detector-aware attack on the {target} detector, σ = {sigma}")
        x_adv = run.timed(
            "adaptive", lambda s=sigma: detector_aware(f, x, y, eps=eps, detector=detector, sigma=float(s))
        )
        rows.append(
            {
                "sigma": float(sigma),
                "detection_rate": float(np.mean(detector.predict(x_adv))),
                "f_accuracy": float(np.mean(predict_labels(f, x_adv) == y)),
            }
        )
    return {"attack": target, "eps": eps, "n_images": n, "rows": rows}


#: The clean false-positive rate every detector is calibrated to in the security section.
_SECURITY_FPR = 0.05


def _attack_norm(spec: AttackSpec) -> float | None:
    """The norm of an attack's ε (np.inf or 2), or None for attacks without an Lp ball."""
    from saliency_detect.attacks._common import check_norm

    if spec.name in _LINF_ATTACKS:
        return check_norm(spec.params.get("norm", np.inf))
    return 2.0 if spec.name == "iterative_l2" else None


def _security(run: _Run, f, jobs: dict[str, dict[str, Any]], x_test, y_test) -> dict[str, Any] | None:
    """The security section: each detector of each attack against PGD on f and the joint attack.

    Attacks with an L∞ or L2 ε are attacked at multiples of it, the others at the first
    L∞ attack's (else the first L2 one's). The first `security_size` test images (at
    most half) are attacked; the rest calibrate every detector (a copy: the fitted
    detectors keep their thresholds) to flag `_SECURITY_FPR` of them. Each (attack,
    detector) result is cached on its own, so an interrupted section resumes per detector.
    """
    import copy

    from sklearn.base import clone

    from saliency_detect.evaluation import SecurityEvaluation, security_evaluation
    from saliency_detect.models import model_fingerprint

    config = run.config
    # Attacks without an Lp ball (JSMA, C&W, Pixel Attack): their detectors face the joint
    # attack at the budgets of the first L-inf attack (else the first L2 one).
    with_ball = [label for label, job in jobs.items() if job["norm"] is not None]
    reference = next((label for label in with_ball if jobs[label]["norm"] == np.inf), None)
    reference = reference or next(iter(with_ball), None)
    for label, job in list(jobs.items()):
        if job["norm"] is None:
            if reference is None:
                run.log(f"[security] {label}: skipped (no attack of the config has an L∞ or L2 ε to borrow)")
                del jobs[label]
            else:
                job.update(eps=jobs[reference]["eps"], norm=jobs[reference]["norm"], eps_from=reference)
    if not jobs:
        return None
    n = min(config.security_size, len(x_test) // 2)
    x, y, x_calibration = x_test[:n], y_test[:n], x_test[n:]
    if len(x_calibration) < round(1 / _SECURITY_FPR):
        run.log(f"[security] skipped: {len(x_test)} test images leave too few to calibrate at 5% FPR")
        return None
    settings = {
        "factors": list(config.security_eps_factors),
        "n": n,
        "nb_iter": config.security_nb_iter,
        "restarts": config.security_restarts,
        "transfer": config.security_transfer,
        "seed": config.seed,
        "fpr": _SECURITY_FPR,
        "test_size": len(x_test),
        "classifier": model_fingerprint(f),  # once for the section, not per detector
    }
    section = {}
    for label, job in jobs.items():
        spec, eps, norm = job["spec"], job["eps"], job["norm"]
        d_clean, d_adv = job["pairs"]
        eps_values = [float(eps) * factor for factor in config.security_eps_factors]
        rows = {}
        kinds = {**job["detectors"], **job["baselines"]}
        for kind, detector in kinds.items():
            # The detector's parameters, defaults included: a changed detector is attacked again.
            params = _identity_params(detector or _baseline(f, kind, config.seed))
            key = _digest(
                settings,
                kind,
                params,
                spec.name,
                _attack_params(run, spec, job["attack_eps"]),
                eps_values,
                str(norm),
                len(d_clean),
            )
            path = run.cache / "security" / f"{_safe(label)}-{_safe(kind)}-{key}.json"
            cached = _cached_json(path, SecurityEvaluation.from_dict)
            if cached is None:
                if detector is None:  # a baseline whose scores came from the cache: fit it again
                    run.log(f"[security] {label}: fitting the {kind} baseline again")
                    detector = _baseline(f, kind, config.seed).fit(d_clean, d_adv)
                detector = copy.copy(detector).calibrate(x_calibration, fpr=_SECURITY_FPR)
                surrogates = {}
                if config.security_transfer:
                    surrogate = clone(detector)
                    if "random_state" in surrogate.get_params():
                        surrogate.set_params(random_state=config.seed + 1)
                    half = len(d_clean) // 2
                    run.log(
                        f"[security] {label}: fitting the {kind} surrogate on {len(d_clean) - half} pairs"
                    )
                    surrogates[kind] = surrogate.fit(d_clean[half:], d_adv[half:]).calibrate(
                        x_calibration, fpr=_SECURITY_FPR
                    )
                run.log(f"[security] {label}: attacking f and the {kind} detector at ε {eps_values}")
                evaluate = functools.partial(
                    security_evaluation,
                    f,
                    {kind: detector},
                    x,
                    y,
                    eps=eps_values,
                    norm=norm,
                    random_state=config.seed,
                    nb_iter=config.security_nb_iter,
                    restarts=config.security_restarts,
                    surrogates=surrogates,
                    verbose=int(run.verbose == 1),
                )
                cached = run.timed(f"security/{label}/{kind}", evaluate)[kind]
                atomic_write_text(path, json.dumps(cached.to_dict(), indent=1))
            for check in cached.checks:
                state = "passed" if check.passed else "FAILED"
                run.log(
                    f"[security] {label} / {kind}: sanity check {check.name} {state}: {check.value:.3f} "
                    f"against {check.reference:.3f}, p = {check.p_value:.3g} ({check.description})"
                )
            report = job["reports"][kind]
            rows[kind] = {
                **{k: report.get(k) for k in ("roc_auc", "tpr_at_1_fpr", "tpr_at_5_fpr")},
                **cached.to_dict(),
            }
        section[label] = {
            "eps": eps_values,
            "eps_from": job.get("eps_from", label),
            "norm": "inf" if norm == np.inf else int(norm),
            "n_images": n,
            "n_calibration": len(x_calibration),
            "fpr": _SECURITY_FPR,
            "nb_iter": config.security_nb_iter,
            "restarts": config.security_restarts,
            "detectors": rows,
        }
    return section
