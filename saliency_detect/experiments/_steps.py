"""What both experiments share: the run's state, the one caching mechanism, the common steps.

`reproduce` (`_pipeline.py`) and `explain` (`_explain.py`) import these openly. Every
expensive step caches through `cached_step`: its result lives in a file or folder under
`OUT/cache/` named by a digest of everything the result depends on; a result that loads
is reused, one that does not (damaged, truncated, written by another version) is
recomputed with a warning naming it, and a missing one is computed and saved atomically.
So an interrupted run resumes where it stopped, and a changed setting recomputes only
the steps whose digest it enters.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import platform
import shutil
import time
import warnings
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

from saliency_detect._files import atomic_write_text
from saliency_detect._version import __version__
from saliency_detect.experiments._results import ClassifierResult, Results

#: What loading a damaged cache raises: it is recomputed, not an error.
_DAMAGED = (OSError, ValueError, KeyError, TypeError, AttributeError)


class Stale(Exception):
    """Raised by a step's `load` for a cache made with other settings: recomputed silently."""


def digest(*parts: Any) -> str:
    """Ten hex digits of the SHA-256 of `parts` as sorted JSON: a cache name's key."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def versions() -> dict[str, str]:
    """The versions of the library, Python and the numerical stack, for `results.json`."""
    import keras
    import numpy as np
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


class Run:
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
        self._fingerprints: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self.out.mkdir(parents=True, exist_ok=True)
        config.save(self.out / "config.json")

    def fingerprint(self, model) -> str:
        """`models.model_fingerprint(model)`, computed once per run (the run's f is fixed).

        Every cache key holds the classifier's fingerprint; hashing every weight again for
        each step costs seconds on VGG16.
        """
        from saliency_detect.models import model_fingerprint

        if model not in self._fingerprints:
            self._fingerprints[model] = model_fingerprint(model)
        return self._fingerprints[model]

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

    def finish(self, results: Results, figures: dict[str, bytes] | None = None) -> Results:
        """Write the report of `results`; returns them with the timings and the files written."""
        from saliency_detect.experiments._outputs import write_outputs

        self.timings["total"] = time.perf_counter() - self.started
        results = dataclasses.replace(
            results,
            timings={key: round(value, 3) for key, value in self.timings.items()},
            timings_all_invocations={key: round(value, 3) for key, value in self.all_timings.items()},
        )
        results = write_outputs(results, self.out, figures)
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


def cached_step(
    run: Run,
    path: Path,
    *,
    what: str,
    compute: Callable[[], Any],
    load: Callable[[Path], Any],
    save: Callable[[Any, Path], None] | None,
    timing: str | None = None,
    discard_damaged: bool = True,
) -> Any:
    """A step's result: loaded from `path` when it is there and loads, else computed and saved.

    Args:
        run: the experiment's `Run` (its log and timings).
        path: the cache file or folder; its name carries the `digest` of everything the
            result depends on, so other settings never find it.
        what: the step's result in the log and warnings ("[fgsm] detector").
        compute: `() -> result`.
        load: `path -> result`; raises `Stale` for a cache of other settings (recomputed
            silently) or any of OSError, ValueError, KeyError, TypeError, AttributeError
            for a damaged one (recomputed with a warning naming it).
        save: `(result, path) -> None`, writing atomically (a temporary file renamed into
            place); None when `compute` writes `path` itself.
        timing: the key `compute`'s wall-clock is recorded under, or None.
        discard_damaged: delete a damaged cache before computing; False when `compute`
            repairs and resumes it (the resumable HDF5 adversarial sets).
    """
    if path.exists():
        try:
            result = load(path)
        except Stale:
            pass
        except _DAMAGED as e:
            warnings.warn(
                f"The cached {what} '{path}' is damaged ({type(e).__name__}: {e}); recomputing it.",
                stacklevel=2,
            )
            if discard_damaged:
                shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
        else:
            run.log(f"{what}: reusing {path.name}")
            return result
    result = run.timed(timing, compute) if timing else compute()
    if save is not None:
        save(result, path)
    return result


def read_json(path: Path) -> Any:
    """A cache file's JSON (for `cached_step`'s `load`)."""
    return json.loads(path.read_text())


def write_json(value: Any, path: Path) -> None:
    """Write `value` as JSON to `path` atomically (for `cached_step`'s `save`)."""
    atomic_write_text(path, json.dumps(value, indent=1))


def _read_timings(path: Path) -> dict[str, float]:
    """The per-step seconds recorded by earlier invocations of a run, or {} for a new one."""
    try:
        return {str(k): float(v) for k, v in json.loads(path.read_text()).items()}
    except (OSError, ValueError, AttributeError):
        return {}


def classifier(run: Run, dataset) -> tuple[Any, ClassifierResult]:
    """The classifier f: the config's file, the shipped pretrained one, or one trained and cached.

    A trained f is `OUT/classifier.keras`, with `cache/classifier.json` recording its
    training settings and fingerprint: other settings retrain it; a file whose
    fingerprint is not the recorded one (replaced or damaged) is retrained with a warning.
    Returns `(f, ClassifierResult)`.
    """
    from saliency_detect._progress import EpochProgress
    from saliency_detect.models import (
        classifier_accuracy,
        get_model_builder,
        load_model,
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

        def load(path):
            recorded = read_json(stamp) if stamp.exists() else None
            if recorded is None or recorded["settings"] != settings:
                raise Stale
            model = load_model(path, compile=False)
            if run.fingerprint(model) != str(recorded["fingerprint"]):
                raise ValueError(
                    f"'{path}' is not the classifier this run trained (its fingerprint differs from the "
                    f"one recorded in '{stamp}'): it was replaced or damaged"
                )
            return model

        def train():
            run.log(f"[classifier] training {name} for {settings['epochs']} epochs")
            model = get_model_builder(name)(input_shape=dataset.input_shape, num_classes=dataset.num_classes)
            train_classifier(
                model,
                dataset,
                epochs=settings["epochs"],
                learning_rate=settings["learning_rate"],
                augment=config.augment,
                save_path=path,
                backup_dir=run.cache / f"classifier-backup-{digest(settings)}",
                random_state=config.seed,
                callbacks=[EpochProgress(settings["epochs"])] if run.verbose == 1 else None,
                verbose=2 if run.verbose >= 2 else 0,
            )
            return model

        def save(model, path):  # train_classifier saved the model; record what it is
            write_json({"settings": settings, "fingerprint": run.fingerprint(model)}, stamp)

        f = cached_step(
            run, path, what="[classifier] trained f", compute=train, load=load, save=save,
            timing="train_classifier",
        )  # fmt: skip
        source = str(path)
    accuracy = classifier_accuracy(f, dataset.x_test, dataset.y_test)
    run.log(f"[classifier] test accuracy {accuracy:.4f}")
    return f, ClassifierResult(source, run.fingerprint(f), float(accuracy))


def attack_params(run: Run, spec, eps: float | None) -> dict[str, Any]:
    """Every parameter an attack runs with (defaults included, `eps` and the run's seed added)."""
    from saliency_detect.attacks import available_attacks, get_attack
    from saliency_detect.attacks._registry import effective_params

    params = dict(spec.params)
    if eps is not None:
        params["eps"] = float(eps)
    if "random_state" in available_attacks()[spec.name]:
        params.setdefault("random_state", run.config.seed)
    return effective_params(get_attack(spec.name), params)


def adversarial_set(run: Run, f, spec, eps, x, y, split: str):
    """The attack's adversarial versions of `x`: a resumable HDF5 set under `cache/adversarial/`.

    `generate_adversarial_set` writes it chunk by chunk, so an interrupted attack resumes
    and a damaged chunk is recomputed: a set that does not load is handed back to it, not
    deleted.
    """
    from saliency_detect.attacks import generate_adversarial_set, load_adversarial_set

    params = attack_params(run, spec, eps)
    key = digest(spec.name, params, run.fingerprint(f), len(x))
    path = run.cache / "adversarial" / f"{spec.name}-{split}-{key}.h5"

    def craft():
        run.log(f"[{spec.display}] crafting the {split} set ({len(x)} images) -> {path.name}")
        generate_adversarial_set(f, x, y, spec.name, params, path, verbose=bool(run.verbose))
        return load_adversarial_set(path)

    return cached_step(
        run, path, what=f"[{spec.display}] {split} set", compute=craft, load=load_adversarial_set, save=None,
        timing=f"attack/{spec.display}", discard_damaged=False,
    )  # fmt: skip
