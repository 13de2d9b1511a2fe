"""`run_experiment`: the detection paper's experiment, end to end, every step cached.

Steps, each skipped when its result is already in `OUT/cache/` (so an interrupted run
resumes): train or load the classifier f; the minimal ε of each attack; the adversarial
training and test sets (resumable HDF5 files); a saliency detector per attack (and per ε
for the cross-ε matrix) and the baselines; then the reports (`_outputs.write_outputs`).
"""

from __future__ import annotations

import copy
import functools
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from saliency_detect._validation import validates_once
from saliency_detect.evaluation import DetectionReport
from saliency_detect.experiments._config import AttackSpec, ExperimentConfig
from saliency_detect.experiments._outputs import _figures, _safe, saliency_grid_png
from saliency_detect.experiments._results import (
    AdaptiveResult,
    AttackResult,
    DetectionResults,
    DetectionRow,
    RocCurve,
    SecurityRow,
    SecuritySection,
)
from saliency_detect.experiments._steps import (
    Run,
    adversarial_set,
    attack_params,
    cached_step,
    classifier,
    digest,
    read_json,
    versions,
    write_json,
)

if TYPE_CHECKING:
    import tensorflow as tf

#: Test images per attack in the report's Figure 1 grid.
_GRID_IMAGES = 4


@validates_once
def run_experiment(
    config: ExperimentConfig,
    out_dir: str | os.PathLike[str],
    *,
    verbose: int = 1,
    strategy: tf.distribute.Strategy | None = None,
) -> DetectionResults:
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
        A `DetectionResults`: the config, library versions, the classifier's accuracy,
        each attack's ε and success, every detection report, the matrices, the ROC
        curves, the adaptive-attack and security results, the timings and the files
        written. Its `to_dict()` is `results.json`'s contents (`load_results` reads it
        back).

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
        >>> sorted(results.attacks)
        ['fgsm']
        >>> results.row("fgsm").report.d_accuracy_clean >= 0
        True
    """
    from saliency_detect._distribute import resolve_strategy

    if not isinstance(config, ExperimentConfig):
        raise TypeError(f"`config` must be an ExperimentConfig. Received: {type(config).__name__}")
    with resolve_strategy(strategy).scope():
        return _experiment(Run(config, out_dir, verbose))


def _experiment(run) -> DetectionResults:
    from saliency_detect.evaluation import changed_images

    config = run.config
    dataset = run.load_data()
    f, classifier_info = classifier(run, dataset)
    x_test, y_test = dataset.x_test, dataset.y_test

    attacks: dict[str, AttackResult] = {}
    detectors: dict[str, Any] = {}
    comparison: list[DetectionRow] = []
    roc: dict[str, dict[str, RocCurve]] = {}
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
        adv_train = adversarial_set(run, f, spec, eps, x_train, y_train, "train")
        adv_test = adversarial_set(run, f, spec, eps, x_test, y_test, "test")
        # Pairs the attack left unchanged are not adversarial examples: D never learns them
        # as such, and the report leaves them out of D's adversarial columns.
        kept = changed_images(x_train, adv_train.x_adv)
        d_clean, d_adv = x_train[kept], adv_train.x_adv[kept]
        attacks[label] = AttackResult(
            spec=spec,
            **eps_info,
            matrix_eps=matrix_eps,
            matrix_eps_search_accuracy=matrix_info.get("eps_search_accuracy"),
            detector_train_size=int(kept.sum()),
            unchanged_train=int(len(kept) - kept.sum()),
            unchanged_test=int(np.count_nonzero(~changed_images(x_test, adv_test.x_adv))),
            success_rate_test=float(np.mean(adv_test.success)),
            mean_l0_test=float(np.mean(adv_test.l0)),
            mean_l2_test=float(np.mean(adv_test.l2)),
            mean_linf_test=float(np.mean(adv_test.linf)),
        )
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
            comparison.append(DetectionRow(label, kind, report))
            roc[label][kind] = curve
            run.log(
                f"[{label}] {kind}: D accuracy clean {report.d_accuracy_clean:.3f}, "
                f"adversarial {report.d_accuracy_adversarial:.3f}, ROC AUC {report.roc_auc:.3f}"
            )
        if config.security_eps_factors:
            norm = _attack_norm(spec.name, spec.params) if eps is not None else None
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

    cross_attack = _cross_attack(run, matrix_detectors, x_test, matrix_test)
    cross_eps = {}
    if config.eps_factors:
        for spec in config.attacks:
            eps = attacks[spec.display].matrix_eps
            if eps is not None:
                cross_eps[spec.display] = _cross_eps(run, f, spec, eps, dataset)
    results = DetectionResults(
        config=config,
        versions=versions(),
        classifier=classifier_info,
        attacks=attacks,
        comparison=tuple(comparison),
        cross_attack=cross_attack,
        cross_eps=cross_eps,
        roc=roc,
        adaptive=_adaptive(run, f, detectors, attacks, x_test, y_test),
        security=_security(run, f, security_jobs, x_test, y_test),
    )
    return run.finish(results, {**_figures(results), **grids})


def _detector_at(run: Run, f, spec: AttackSpec, eps, train, test) -> tuple[Any, np.ndarray]:
    """The main recipe's saliency detector for `spec` at `eps`, and its changed test images.

    What both generalization matrices need of one ε: the training and test sets crafted
    (cached), the pairs the attack left unchanged dropped, the detector fitted (cached).
    """
    from saliency_detect.evaluation import changed_images

    (x_train, y_train), (x_test, y_test) = train, test
    adv_train = adversarial_set(run, f, spec, eps, x_train, y_train, "train")
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
    return detector, _changed(x_test, adversarial_set(run, f, spec, eps, x_test, y_test, "test"))


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


def _takes_eps(name: str) -> bool:
    from saliency_detect.attacks import available_attacks

    return "eps" in available_attacks()[name]


def _kind(detector: str, recipe: str, main_recipe: str) -> str:
    """A detector's name in the tables: the main recipe's keeps the plain name."""
    return detector if recipe == main_recipe else f"{detector} ({recipe} recipe)"


def _epsilon(run: Run, f, spec: AttackSpec, x_test, y_test, target: float) -> dict[str, Any]:
    from saliency_detect.attacks import get_attack, minimal_epsilon
    from saliency_detect.attacks._registry import effective_params

    if not _takes_eps(spec.name):
        return {"eps": None, "eps_searched": False}
    if spec.eps is not None:
        return {"eps": float(spec.eps), "eps_searched": False}
    config = run.config
    n = min(config.search_size, len(x_test))
    params = effective_params(get_attack(spec.name), dict(spec.params))
    key = digest(spec.name, params, run.fingerprint(f), n, target)

    def search():
        run.log(f"[{spec.display}] searching the minimal ε for accuracy < {target:.0%} on {n} images")
        found = minimal_epsilon(
            f, x_test[:n], y_test[:n], spec.name, target_accuracy=target, **dict(spec.params)
        )
        return {"eps": found.eps, "accuracy": found.accuracy, "history": [list(h) for h in found.history]}

    def load(path):
        entry = read_json(path)
        return {"eps": float(entry["eps"]), "accuracy": float(entry["accuracy"]), "history": entry["history"]}

    entry = cached_step(
        run, run.cache / "epsilon" / f"{_safe(spec.display)}-{key}.json", what=f"[{spec.display}] ε",
        compute=search, load=load, save=write_json, timing=f"epsilon/{spec.display}",
    )  # fmt: skip
    run.log(f"[{spec.display}] ε = {entry['eps']:.4g} (accuracy {entry['accuracy']:.3f} on {n} images)")
    return {
        "eps": entry["eps"],
        "eps_searched": True,
        "eps_target_accuracy": float(target),
        "eps_search_accuracy": entry["accuracy"],
        "eps_search_history": tuple(tuple(h) for h in entry["history"]),
    }


def _detector_settings(run: Run, input_mode: str, recipe: str) -> dict[str, Any]:
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


def _saliency_detector(run: Run, f, x_clean, x_adv, input_mode: str, spec: AttackSpec, eps, recipe: str):
    from saliency_detect._progress import EpochProgress
    from saliency_detect.detector import SaliencyDetector

    settings = _detector_settings(run, input_mode, recipe)
    # Every parameter, defaults included, so a changed default refits instead of reusing.
    effective = _identity_params(SaliencyDetector(f, **settings))
    key = digest(effective, spec.name, attack_params(run, spec, eps), run.fingerprint(f), len(x_clean))
    path = run.cache / "detectors" / f"{spec.display}-{input_mode.replace('+', '_')}-{recipe}-{key}"

    def fit():
        run.log(
            f"[{spec.display}] fitting the {input_mode} detector ({recipe} recipe) on "
            f"{len(x_clean)} + {len(x_adv)} images"
        )
        detector = SaliencyDetector(f, cache_saliency=True, verbose=2 if run.verbose >= 2 else 0, **settings)
        callbacks = [EpochProgress(detector._recipe_value("epochs"))] if run.verbose == 1 else []
        return detector.fit(x_clean, x_adv, callbacks=callbacks)

    return cached_step(
        run, path, what=f"[{spec.display}] detector", compute=fit,
        load=lambda path: SaliencyDetector.load(path, classifier=f),
        save=lambda detector, path: detector.save(path, include_classifier=False),
        timing=f"detector/{spec.display}/{input_mode}/{recipe}",
    )  # fmt: skip


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


def _feature_baseline(run: Run, f, kind: str, x_clean, x_adv, spec: AttackSpec, eps, test) -> tuple:
    """Fit a feature-space baseline (KD+BU, LID, Mahalanobis, feature squeezing) and score the test pairs.

    These detectors are scikit-learn pipelines over f's features, not Keras models, so
    what is cached is their report and ROC curve: a resumed run does not refit them.
    Returns `(report, roc_curve, detector)`, the detector None when the scores came
    from the cache.
    """
    x_test, y_test, x_test_adv = test
    detector = _baseline(f, kind, run.config.seed)
    params = {k: v for k, v in detector.get_params().items() if k != "classifier"}
    key = digest(
        kind,
        params,
        spec.name,
        attack_params(run, spec, eps),
        run.fingerprint(f),
        len(x_clean),
        len(x_test),
    )
    path = run.cache / "baselines" / f"{spec.display}-{kind}-{key}.json"
    fitted = []

    def fit_and_score():
        run.log(f"[{spec.display}] fitting the {kind} baseline on {len(x_clean)} + {len(x_adv)} images")
        run.timed(f"detector/{spec.display}/{kind}", lambda: detector.fit(x_clean, x_adv))
        fitted.append(detector)
        return _evaluate(run, f, detector, x_test, y_test, x_test_adv, spec.display)

    def load(path):
        values = read_json(path)
        return DetectionReport.from_dict(values["report"]), RocCurve.from_dict(values["roc"])

    def save(scores, path):
        write_json({"report": scores[0].to_dict(), "roc": scores[1].to_dict()}, path)

    what = f"[{spec.display}] {kind} baseline's scores"
    report, curve = cached_step(run, path, what=what, compute=fit_and_score, load=load, save=save)
    return report, curve, (fitted[0] if fitted else None)


def _evaluate(run: Run, f, detector, x_test, y_test, x_adv, label: str) -> tuple[DetectionReport, RocCurve]:
    from saliency_detect.evaluation._report import detection_report_and_roc

    report, (fpr, tpr) = detection_report_and_roc(f, detector, x_test, y_test, x_adv, name=label)
    return report, RocCurve(tuple(round(float(v), 5) for v in fpr), tuple(round(float(v), 5) for v in tpr))


def _cross_attack(run: Run, detectors, x_test, adversarial_test):
    from saliency_detect.evaluation import generalization_matrix

    run.log("[matrix] cross-attack generalization")
    return run.timed("matrices", lambda: generalization_matrix(detectors, x_test, adversarial_test))


def _cross_eps(run: Run, f, spec: AttackSpec, eps: float, dataset):
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


def _adaptive(
    run: Run, f, detectors, attacks: dict[str, AttackResult], x_test, y_test
) -> AdaptiveResult | None:
    from saliency_detect.attacks import detector_aware
    from saliency_detect.models import predict_labels

    sigmas = run.config.adaptive_sigmas
    eligible = [
        label
        for label, a in attacks.items()
        if a.eps is not None and _attack_norm(a.spec.name, a.spec.params) == np.inf
    ]
    target = eligible[0] if eligible else None
    if not sigmas or target is None:
        return None
    detector = detectors[target]
    eps = attacks[target].eps
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
    return AdaptiveResult(target, eps, n, tuple(rows))


#: The clean false-positive rate every detector is calibrated to in the security section.
_SECURITY_FPR = 0.05


def _attack_norm(name: str, params: Mapping[str, Any]) -> float | None:
    """The norm of an attack's ε (np.inf or 2) as the attack declares it; None without an Lp ball."""
    from saliency_detect.attacks._registry import attack_norm, get_attack

    return attack_norm(get_attack(name), dict(params))


def _security(
    run: Run, f, jobs: dict[str, dict[str, Any]], x_test, y_test
) -> dict[str, SecuritySection] | None:
    """The security section: each detector of each attack against PGD on f and the joint attack.

    Attacks with an L∞ or L2 ε are attacked at multiples of it, the others at the first
    L∞ attack's (else the first L2 one's). The first `security_size` test images (at
    most half) are attacked; the rest calibrate every detector (a copy: the fitted
    detectors keep their thresholds) to flag `_SECURITY_FPR` of them. Each (attack,
    detector) result is cached on its own, so an interrupted section resumes per detector.
    """
    from saliency_detect.evaluation import SecurityEvaluation

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
        "classifier": run.fingerprint(f),  # once for the section, not per detector
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
            key = digest(
                settings,
                kind,
                params,
                spec.name,
                attack_params(run, spec, job["attack_eps"]),
                eps_values,
                str(norm),
                len(d_clean),
            )
            path = run.cache / "security" / f"{_safe(label)}-{_safe(kind)}-{key}.json"

            attack = functools.partial(
                _attack_detector, run, f, label, kind, detector, (d_clean, d_adv), (x, y), x_calibration,
                eps_values, norm,
            )  # fmt: skip
            cached = cached_step(
                run, path, what=f"[security] {label} / {kind}", compute=attack,
                load=lambda path: SecurityEvaluation.from_dict(read_json(path)),
                save=lambda evaluation, path: write_json(evaluation.to_dict(), path),
                timing=f"security/{label}/{kind}",
            )  # fmt: skip
            for check in cached.checks:
                state = "passed" if check.passed else "FAILED"
                run.log(
                    f"[security] {label} / {kind}: sanity check {check.name} {state}: {check.value:.3f} "
                    f"against {check.reference:.3f}, p = {check.p_value:.3g} ({check.description})"
                )
            report = job["reports"][kind]
            rows[kind] = SecurityRow(report.roc_auc, report.tpr_at_1_fpr, report.tpr_at_5_fpr, cached)
        section[label] = SecuritySection(
            eps=tuple(eps_values),
            eps_from=job.get("eps_from", label),
            norm="inf" if norm == np.inf else int(norm),
            n_images=n,
            n_calibration=len(x_calibration),
            fpr=_SECURITY_FPR,
            nb_iter=config.security_nb_iter,
            restarts=config.security_restarts,
            detectors=rows,
        )
    return section


def _attack_detector(run: Run, f, label, kind, detector, pairs, attacked, x_calibration, eps_values, norm):
    """One detector of the security section, calibrated (and its surrogate fitted), under attack."""
    from sklearn.base import clone

    from saliency_detect.evaluation import security_evaluation

    config = run.config
    (d_clean, d_adv), (x, y) = pairs, attacked
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
        run.log(f"[security] {label}: fitting the {kind} surrogate on {len(d_clean) - half} pairs")
        surrogate.fit(d_clean[half:], d_adv[half:])
        surrogates[kind] = surrogate.calibrate(x_calibration, fpr=_SECURITY_FPR)
    run.log(f"[security] {label}: attacking f and the {kind} detector at ε {eps_values}")
    return security_evaluation(
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
    )[kind]
