"""The experiment pipeline: config round-trip, outputs, resume, the demo / reproduce / detect commands."""

import base64
import csv
import dataclasses
import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from saliency_detect.experiments import AttackSpec, ExperimentConfig, demo_config, load_config, run_experiment


def tiny_config(**changes):
    """A run of a few seconds: 1 epoch of f on 300 images, detectors on 60 + 60 images."""
    values = {
        "dataset": "mnist-sample",
        "train_size": 300,
        "test_size": 40,
        "epochs": 1,
        "learning_rate": 1e-3,
        "search_size": 40,
        "detector_train_size": 60,
        "detector_epochs": 1,
        "detector_learning_rate": 1e-3,
        "attacks": [{"name": "fgsm", "eps": 0.3}, {"name": "bim", "eps": 0.2, "params": {"nb_iter": 3}}],
        "baselines": [],
        "adaptive_sigmas": [],
        "security_eps_factors": [],
        "use_pretrained": False,
    }
    values.update(changes)
    return ExperimentConfig.from_dict(values)


# --- config ---------------------------------------------------------------------------------


def test_config_round_trips_through_dict_json_and_toml(tmp_path):
    config = tiny_config(eps_factors=[0.5, 2.0], adaptive_sigmas=[0.0, 1.0], baselines=["image", "lid"])
    assert ExperimentConfig.from_dict(config.to_dict()) == config
    assert load_config(config.save(tmp_path / "c.json")) == config
    toml = tmp_path / "c.toml"
    toml.write_text(
        'dataset = "mnist-sample"\nuse_pretrained = false\ntrain_size = 300\ntest_size = 40\nepochs = 1\n'
        "learning_rate = 1e-3\n"
        "search_size = 40\ndetector_train_size = 60\ndetector_epochs = 1\ndetector_learning_rate = 1e-3\n"
        'baselines = ["image", "lid"]\neps_factors = [0.5, 2.0]\nadaptive_sigmas = [0.0, 1.0]\n'
        "security_eps_factors = []\n"
        '[[attacks]]\nname = "fgsm"\neps = 0.3\n'
        '[[attacks]]\nname = "bim"\neps = 0.2\nparams = { nb_iter = 3 }\n'
    )
    assert load_config(toml) == config
    # A finished run's results.json is a config too: the run can be repeated exactly.
    (tmp_path / "results.json").write_text(json.dumps({"config": config.to_dict(), "versions": {}}))
    assert load_config(tmp_path / "results.json") == config


def test_config_replace_keeps_everything_else():
    config = tiny_config()
    changed = config.replace(seed=7, attacks=["jsma"])
    assert changed.seed == 7 and changed.attacks == (AttackSpec("jsma"),)
    assert changed.replace(seed=config.seed, attacks=config.to_dict()["attacks"]) == config


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"colour": "red"}, r"Unknown config key\(s\) \['colour'\]. Valid keys"),
        ({"attacks": ["fgsmm"]}, r"Unknown attack 'fgsmm'.*Valid attacks: \['bim'"),
        ({"attacks": [{"name": "fgsm", "params": {"nb_iter": 3}}]}, r"takes the options .*nb_iter"),
        ({"attacks": [{"name": "fgsm", "params": {"eps": 0.1}}]}, r"other than 'eps'"),
        (
            {"attacks": [{"name": "fgsm", "eps": -1}]},
            r"'fgsm': `eps` must be a positive number. Received: -1",
        ),
        ({"attacks": [{"name": "fgsm", "colour": 1}]}, r"An attack must be a name or a table with keys"),
        ({"attacks": ["fgsm", "fgsm"]}, r"labels must be unique"),
        ({"attacks": []}, r"at least one attack"),
        ({"attacks": "fgsm"}, r"`attacks` must be a list"),
        ({"baselines": ["lid", "magnet"]}, r"Unknown baseline\(s\) \['magnet'\]"),
        ({"test_size": 0}, r"`test_size` must be a positive integer or None. Received: 0"),
        ({"detector_epochs": 1.5}, r"`detector_epochs` must be a positive integer"),
        ({"detector_learning_rate": float("nan")}, r"`detector_learning_rate` must be a positive number"),
        ({"target_accuracy": 1.5}, r"`target_accuracy` must be in \(0, 1\)"),
        ({"eps_factors": [0.0]}, r"`eps_factors` must be positive numbers"),
        ({"adaptive_sigmas": [-1]}, r"`adaptive_sigmas` must be non-negative"),
        ({"security_eps_factors": [0]}, r"`security_eps_factors` must be positive numbers"),
        ({"security_size": 0}, r"`security_size` must be a positive integer"),
        ({"security_nb_iter": 2.5}, r"`security_nb_iter` must be a positive integer"),
        ({"security_restarts": 0}, r"`security_restarts` must be a positive integer"),
        ({"security_transfer": "yes"}, r"`security_transfer` must be true or false"),
        ({"saliency": "lime"}, r"`saliency` must be one of \['gradient'"),
        ({"seed": -1}, r"`seed` must be a non-negative integer"),
        ({"attacks": [{"name": "fgsm", "target_accuracy": 1.2}]}, r"'fgsm': `target_accuracy` must be in"),
        (
            {"attacks": [{"name": "jsma", "target_accuracy": 0.1}]},
            r"'jsma': `target_accuracy` sets the searched",
        ),
        (
            {"attacks": [{"name": "fgsm", "eps": 0.3, "target_accuracy": 0.1}]},
            r"needs an attack with `eps` and no fixed `eps`",
        ),
        ({"detector_recipes": ["converge", "converge"]}, r"`detector_recipes` must list distinct recipes"),
        ({"detector_recipes": []}, r"`detector_recipes` must list distinct recipes"),
        ({"detector_recipes": ["fast"]}, r"recipes of \['converge', 'paper'\]"),
        ({"use_pretrained": "yes"}, r"`use_pretrained` must be true or false"),
    ],
)
def test_config_errors_name_the_setting(changes, message):
    with pytest.raises(ValueError, match=message):
        tiny_config(**changes)


def test_load_config_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="No config file"):
        load_config(tmp_path / "missing.toml")
    (tmp_path / "c.yaml").write_text("dataset: mnist")
    with pytest.raises(ValueError, match=r"must end in '.toml' or '.json'"):
        load_config(tmp_path / "c.yaml")
    (tmp_path / "c.toml").write_text("dataset = ")
    with pytest.raises(ValueError, match="is not valid TOML"):
        load_config(tmp_path / "c.toml")
    (tmp_path / "c.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="must be a mapping"):
        load_config(tmp_path / "c.json")


@pytest.mark.parametrize(
    ("name", "levels", "dataset"),
    [
        ("paper-mnist", [0.12, 0.05, 0.04, None], "mnist"),
        ("paper-cifar10", [0.13, 0.07, 0.07, None], "cifar10"),
    ],
)
def test_the_paper_configs_ship_by_name(name, levels, dataset):
    config = load_config(name)
    assert config.dataset == dataset and config.target_accuracy == 0.30  # the matrices' ε
    assert [a.name for a in config.attacks] == ["fgsm", "bim", "iterative_l2", "jsma"]
    assert [a.target_accuracy for a in config.attacks] == levels  # Table 1's, as the paper's f(x_adv)
    assert config.detector_recipes == ("converge", "paper")
    assert set(config.baselines) == {"image", "kernel_density", "lid", "mahalanobis", "feature_squeezing"}


def test_an_unknown_config_name_lists_the_shipped_ones():
    with pytest.raises(
        FileNotFoundError, match="shipped configs, usable by name: paper-cifar10, paper-mnist"
    ):
        load_config("paper-imagenet")


def test_demo_config_is_the_documented_one():
    config = demo_config()
    assert config.dataset == "mnist-sample"
    assert [a.name for a in config.attacks] == ["fgsm", "bim", "iterative_l2", "jsma"]
    assert all(a.eps is None for a in config.attacks)  # every ε searched (Metzen protocol)
    assert all(a.train_size is None for a in config.attacks)  # 3,000 images each, JSMA included
    assert config.detector_train_size == 3000 and config.test_size == 1000
    assert config.use_pretrained and config.model is None  # the shipped MNIST-NET-f
    assert config.baselines == ("image",)  # the image-only detector beside D, on the first screen
    assert config.detector_recipes == ("converge",) and config.detector_epochs is None


# --- the pipeline ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("experiment")
    config = tiny_config(
        attacks=[
            {"name": "fgsm", "target_accuracy": 0.12},
            {"name": "bim", "eps": 0.2, "params": {"nb_iter": 3}},
        ],
        baselines=["image"],
        detector_recipes=["converge", "paper"],
        eps_factors=[2.0],
        adaptive_sigmas=[0.0, 1.0],
        adaptive_size=20,
        # The security section: 8 test images attacked (the other 32 calibrate D), 2 steps.
        security_eps_factors=[1.0],
        security_size=8,
        security_nb_iter=2,
    )
    return config, out, run_experiment(config, out, verbose=0)


def test_run_writes_every_output(finished_run):
    config, out, results = finished_run
    assert json.loads((out / "results.json").read_text()) == results
    assert results["config"] == config.to_dict()
    assert {"tensorflow", "keras", "numpy", "saliency_detect", "python"} <= set(results["versions"])
    assert results["timings"]["total"] > 0 and "train_classifier" in results["timings"]
    # Each step's time is also summed over every invocation of the run, in the cache.
    assert results["timings_all_invocations"]["train_classifier"] == pytest.approx(
        results["timings"]["train_classifier"], abs=1e-3
    )
    # fgsm's ε was searched twice: Table 1's at its own level (f keeps < 12 %), the
    # matrices' at the config's (< 30 %), which needs a smaller ε.
    fgsm = results["attacks"]["fgsm"]
    assert fgsm["eps_searched"] and fgsm["eps_target_accuracy"] == 0.12 and fgsm["eps_search_accuracy"] < 0.12
    assert fgsm["matrix_eps_search_accuracy"] < config.target_accuracy and fgsm["matrix_eps"] < fgsm["eps"]
    bim = results["attacks"]["bim"]
    assert bim["eps"] == bim["matrix_eps"] == 0.2 and not bim["eps_searched"]
    assert [(r["attack"], r["detector"]) for r in results["table1"]] == [
        (a, d) for a in ("fgsm", "bim") for d in ("saliency", "saliency (paper recipe)")
    ]
    assert {(r["attack"], r["detector"]) for r in results["comparison"]} == {
        (a, d)
        for a in ("fgsm", "bim")
        for d in ("saliency", "saliency (paper recipe)", "image", "image (paper recipe)")
    }
    sources = {r["detector"]: r["threshold_source"] for r in results["comparison"]}
    assert sources["saliency"] == "validation balanced accuracy"
    assert sources["saliency (paper recipe)"] == "probability 0.5"
    assert all(0 <= r["tpr_at_1_fpr"] <= r["tpr_at_5_fpr"] <= 1 for r in results["comparison"])
    assert results["matrices"]["cross_attack"]["train_labels"] == ["fgsm", "bim"]
    eps = fgsm["matrix_eps"]
    assert results["matrices"]["cross_eps"]["fgsm"]["test_labels"] == [f"ε={eps:.3g}", f"ε={2 * eps:.3g}"]
    assert [row["sigma"] for row in results["adaptive"]["rows"]] == [0.0, 1.0]
    assert results["adaptive"]["attack"] == "fgsm"
    # The security section: both attacks have an L-inf ε; each has the main recipe's two detectors.
    security = results["security"]
    assert list(security) == ["fgsm", "bim"]
    for label, section in security.items():
        assert section["eps"] == [results["attacks"][label]["eps"]] and section["norm"] == "inf"
        assert section["n_images"] == 8 and section["n_calibration"] == 32 and section["fpr"] == 0.05
        assert list(section["detectors"]) == ["saliency", "image"]
        for kind, row in section["detectors"].items():
            compared = next(r for r in results["comparison"] if (r["attack"], r["detector"]) == (label, kind))
            assert row["roc_auc"] == compared["roc_auc"]
            assert all(r["n"] == 8 and r["low"] <= r["rate"] <= r["high"] for r in row["adaptive"])
            assert row["unaware"][0]["hits"] <= row["undefended"][0]["hits"]
            assert [c["name"] for c in row["checks"]] == ["unbounded", "stronger", "transfer"]
    security_tables = (out / "tables.md").read_text()
    assert (
        "## Security: fgsm (L∞, 8 images, 2 steps, 1 restart(s); detectors flag 5% of 32" in security_tables
    )
    assert (
        "## Security: sanity checks" in security_tables
        and "| fgsm | saliency | transfer |" in security_tables
    )
    tables = (out / "tables.md").read_text()
    assert "## Table 1: classifier and saliency detector" in tables and "| fgsm | " in tables
    assert "image-only ROC AUC" in tables and "TPR @ 1% / 5% FPR put the threshold" in tables
    for name in results["files"].values():
        assert (out / name).is_file(), name
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert pngs == sorted(n for n in results["files"].values() if n.endswith(".png"))
    assert {"cross_attack.png", "roc_fgsm.png", "roc_bim.png", "cross_eps_fgsm.png"} <= set(pngs)
    # The paper's Figure 1 per attack: clean and adversarial images beside D's saliency channel.
    assert {"saliency_fgsm.png", "saliency_bim.png", "security.png"} <= set(pngs)
    assert not list(out.glob(".*.tmp"))


def test_html_report_is_self_contained(finished_run):
    _, out, results = finished_run
    page = (out / "report.html").read_text()
    embedded = re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(embedded) == len(list(out.glob("*.png")))
    assert all(base64.b64decode(data).startswith(b"\x89PNG\r\n\x1a\n") for data in embedded)
    assert 'src="http' not in page and "<script" not in page
    assert f"{results['table1'][0]['d_accuracy_clean']:.3f}" in page


def test_rerun_reuses_every_cached_step(finished_run, monkeypatch):
    config, out, results = finished_run
    import saliency_detect.attacks as attacks
    import saliency_detect.detector as detector_module
    import saliency_detect.evaluation as evaluation_module
    import saliency_detect.models as models

    def forbidden(*args, **kwargs):
        raise AssertionError("a cached step was recomputed")

    monkeypatch.setattr(models, "train_classifier", forbidden)
    monkeypatch.setattr(attacks, "minimal_epsilon", forbidden)
    monkeypatch.setattr(detector_module.SaliencyDetector, "fit", forbidden)
    monkeypatch.setattr(evaluation_module, "security_evaluation", forbidden)
    again = run_experiment(config, out, verbose=0)
    assert again["table1"] == results["table1"]
    assert again["matrices"] == results["matrices"]
    assert again["security"] == results["security"]
    # The record of what each step cost survives the rerun (f was not trained again).
    assert "train_classifier" not in again["timings"]
    assert again["timings_all_invocations"]["train_classifier"] == pytest.approx(
        results["timings_all_invocations"]["train_classifier"], abs=1e-3
    )


def test_interrupted_run_resumes_where_it_stopped(tmp_path, monkeypatch):
    from saliency_detect.detector import SaliencyDetector

    config = tiny_config()
    fit = SaliencyDetector.fit
    calls = []

    def interrupted_fit(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return fit(self, *args, **kwargs)

    monkeypatch.setattr(SaliencyDetector, "fit", interrupted_fit)
    with pytest.raises(KeyboardInterrupt):
        run_experiment(config, tmp_path, verbose=0)
    assert not (tmp_path / "results.json").exists()
    cached = {p: p.stat().st_mtime_ns for p in (tmp_path / "cache").rglob("*") if p.is_file()}
    assert (tmp_path / "classifier.keras").is_file() and len(
        list((tmp_path / "cache").glob("detectors/*"))
    ) == 1
    assert len(list((tmp_path / "cache").glob("adversarial/*.h5"))) == 4  # fgsm and bim, train and test

    import saliency_detect.models as models

    monkeypatch.setattr(models, "train_classifier", lambda *a, **k: pytest.fail("f was retrained"))
    calls.clear()
    results = run_experiment(config, tmp_path, verbose=0)
    assert len(calls) == 1  # only bim's detector was left to fit
    for path, mtime in cached.items():
        if path.name not in ("epsilon.json", "timings.json"):  # records, not results
            assert path.stat().st_mtime_ns == mtime, f"{path} was rewritten"
    assert [r["attack"] for r in results["table1"]] == ["fgsm", "bim"]


def test_damaged_caches_are_recomputed_with_a_warning(finished_run, tmp_path, monkeypatch):
    config, out, results = finished_run
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    (copy / "cache" / "epsilon.json").write_text("{")  # truncated
    damaged = sorted((copy / "cache" / "detectors").iterdir())[0]
    data = bytearray((damaged / "detector.keras").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (damaged / "detector.keras").write_bytes(bytes(data))
    import saliency_detect.models as models

    monkeypatch.setattr(models, "train_classifier", lambda *a, **k: pytest.fail("f was retrained"))
    with pytest.warns(UserWarning) as caught:
        again = run_experiment(config, copy, verbose=0)
    messages = " | ".join(str(w.message) for w in caught)
    assert "epsilon.json' is damaged" in messages and "recomputing it" in messages
    assert "The cached detector is not reused" in messages and "SHA-256 mismatch" in messages
    assert [r["attack"] for r in again["table1"]] == [r["attack"] for r in results["table1"]]
    assert again["attacks"]["fgsm"]["eps"] == results["attacks"]["fgsm"]["eps"]  # searched again, same ε
    from saliency_detect.detector import SaliencyDetector

    SaliencyDetector.load(damaged, classifier=models.load_model(copy / "classifier.keras"))  # refitted, whole


def test_a_replaced_cached_classifier_is_not_reused(finished_run, tmp_path, monkeypatch):
    config, out, _ = finished_run
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    import saliency_detect.models as models

    models.save_model(models.mnist_net_f(), copy / "classifier.keras")  # another model, same settings

    class Retrained(Exception):
        pass

    def retrain(*args, **kwargs):
        raise Retrained

    monkeypatch.setattr(models, "train_classifier", retrain)
    with pytest.warns(UserWarning, match="is not the classifier this run trained"), pytest.raises(Retrained):
        run_experiment(config, copy, verbose=0)


def test_feature_baselines_are_not_refitted_on_a_rerun(tmp_path, monkeypatch):
    from saliency_detect import detector as detectors

    kinds = {
        "lid": detectors.LIDDetector,
        "mahalanobis": detectors.MahalanobisDetector,
        "feature_squeezing": detectors.FeatureSqueezingDetector,
    }
    config = tiny_config(attacks=[{"name": "fgsm", "eps": 0.3}], baselines=list(kinds))
    first = run_experiment(config, tmp_path, verbose=0)
    for kind, cls in kinds.items():
        assert len(list((tmp_path / "cache" / "baselines").glob(f"fgsm-{kind}-*.json"))) == 1, kind
        monkeypatch.setattr(cls, "fit", lambda *a, kind=kind, **k: pytest.fail(f"{kind} was refitted"))
    assert {r["detector"] for r in first["comparison"]} >= set(kinds)
    again = run_experiment(config, tmp_path, verbose=0)
    assert again["comparison"] == first["comparison"] and again["roc"] == first["roc"]


def test_changed_setting_recomputes_only_what_depends_on_it(finished_run, tmp_path):
    config, out, _ = finished_run
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    before = set((copy / "cache" / "detectors").iterdir())
    changed = config.replace(
        detector_epochs=2, eps_factors=[], adaptive_sigmas=[], baselines=[], security_eps_factors=[]
    )
    results = run_experiment(changed, copy, verbose=0)
    after = set((copy / "cache" / "detectors").iterdir())
    # New saliency detectors only: per attack and recipe (2 x 2), and fgsm's matrix detector at
    # its < 30 % ε (its Table 1 ε differs); f and the adversarial sets were reused.
    new = sorted(path.name.rsplit("-", 1)[0] for path in after - before)
    assert new == [
        "bim-image_saliency-converge",
        "bim-image_saliency-paper",
        "fgsm-image_saliency-converge",
        "fgsm-image_saliency-converge",
        "fgsm-image_saliency-paper",
    ]
    assert not list((copy / "cache" / "adversarial").glob("*.partial"))
    assert (
        results["classifier"]["fingerprint"]
        == json.loads((out / "results.json").read_text())["classifier"]["fingerprint"]
    )


def test_run_experiment_rejects_a_non_config(tmp_path):
    with pytest.raises(TypeError, match="must be an ExperimentConfig"):
        run_experiment({"dataset": "mnist"}, tmp_path)


# --- commands -------------------------------------------------------------------------------


def test_reproduce_flags_override_the_config_file(tmp_path):
    from saliency_detect.cli._experiment import config_from_args
    from saliency_detect.cli._main import build_parser

    path = tiny_config(seed=3).save(tmp_path / "exp.json")
    args = build_parser().parse_args(
        [
            "reproduce",
            "--config",
            str(path),
            "--attacks",
            "fgsm=0.1,jsma",
            "--baselines",
            "none",
            "--seed",
            "5",
        ]
    )
    config = config_from_args(args)
    assert config.attacks == (AttackSpec("fgsm", eps=0.1), AttackSpec("jsma"))
    assert config.seed == 5 and config.baselines == () and config.train_size == 300
    assert config_from_args(build_parser().parse_args(["reproduce"])) == ExperimentConfig()
    named = config_from_args(
        build_parser().parse_args(
            ["reproduce", "--config", "paper-mnist", "--retrain", "--detector-recipes", "paper"]
        )
    )
    assert named.use_pretrained is False and named.detector_recipes == ("paper",)
    security = ["reproduce", "--security-eps-factors", "none", "--security-size", "50"]
    quiet = config_from_args(build_parser().parse_args(security))
    assert quiet.security_eps_factors == () and quiet.security_size == 50
    assert config_from_args(build_parser().parse_args(["reproduce", "--security-eps-factors", "1,3"])) == (
        ExperimentConfig(security_eps_factors=(1.0, 3.0))
    )
    assert named.attacks == load_config("paper-mnist").attacks


def test_pretrained_classifier_is_used_unless_told_to_retrain(tmp_path):
    from saliency_detect.models import model_fingerprint, pretrained

    config = tiny_config(use_pretrained=True, attacks=[{"name": "fgsm", "eps": 0.3}])
    results = run_experiment(config, tmp_path / "a", verbose=0)
    assert results["classifier"]["source"] == "pretrained:mnist_net_f"
    assert results["classifier"]["fingerprint"] == model_fingerprint(pretrained("mnist_net_f"))
    assert "train_classifier" not in results["timings"]


def test_reproduce_command_writes_the_report(tmp_path, capsys):
    from saliency_detect.cli import main

    path = tiny_config(attacks=[{"name": "fgsm", "eps": 0.3}]).save(tmp_path / "exp.json")
    out = tmp_path / "report"
    assert main(["reproduce", "--config", str(path), "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "## Table 1: classifier and saliency detector" in printed and str(out / "report.html") in printed
    assert json.loads((out / "results.json").read_text())["config"]["attacks"][0]["eps"] == 0.3


def test_reproduce_command_reports_bad_settings(tmp_path, capsys):
    from saliency_detect.cli import main

    assert main(["reproduce", "--attacks", "fgsm,nope", "--out", str(tmp_path)]) == 2
    assert "Unknown attack 'nope'" in capsys.readouterr().err


def test_demo_command_runs_the_demo_config(tmp_path, capsys, monkeypatch):
    import saliency_detect.experiments as experiments
    from saliency_detect.cli import main

    monkeypatch.setattr(
        experiments, "demo_config", lambda: tiny_config(attacks=[{"name": "fgsm", "eps": 0.3}])
    )
    assert main(["demo", "--out", str(tmp_path / "demo"), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "## Cross-attack generalization" in printed and "report.html" in printed
    assert (tmp_path / "demo" / "report.html").is_file()


@pytest.fixture(scope="module")
def saved_detector(tmp_path_factory, mnist_sample):
    from saliency_detect.attacks import fgsm
    from saliency_detect.detector import SaliencyDetector
    from saliency_detect.models import mnist_net_f

    f = mnist_net_f()
    x = mnist_sample.x_test[:64]
    detector = SaliencyDetector(f, epochs=1, verbose=0, random_state=0).fit(x, fgsm(f, x, eps=0.3))
    path = tmp_path_factory.mktemp("det") / "det"
    detector.save(path)
    return detector, path


def test_detect_scores_files_folders_and_npz_and_skips_unreadable(
    saved_detector, tmp_path, mnist_sample, capsys
):
    import keras

    from saliency_detect.cli import main
    from saliency_detect.data import read_images

    detector, path = saved_detector
    images = tmp_path / "images"
    (images / "sub").mkdir(parents=True)
    pixels = (mnist_sample.x_test[:3] * 255).round().astype(np.uint8)
    for i, name in enumerate(["a.png", "b.png", "sub/c.png"]):
        keras.utils.save_img(images / name, pixels[i], scale=False)
    (images / "broken.png").write_bytes(b"\x89PNG not really")
    (images / "notes.txt").write_text("not an image, not looked at")
    out = tmp_path / "scores.csv"
    assert main(["detect", "--detector", str(path), "--images", str(images), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "skipped broken.png" in err and "Scored 3 image(s)" in err and "1 unreadable" in err
    rows = list(csv.DictReader(out.open()))
    assert [r["file"] for r in rows] == ["a.png", "b.png", "sub/c.png"]
    expected = detector.predict_proba(mnist_sample.x_test[:3])[:, 1]
    np.testing.assert_allclose([float(r["adversarial_score"]) for r in rows], expected, atol=1e-5)
    assert [int(r["flag"]) for r in rows] == list(detector.predict(mnist_sample.x_test[:3]))
    labels = np.argmax(detector.classifier.predict(mnist_sample.x_test[:3], verbose=0), axis=1)
    assert [int(r["label"]) for r in rows] == list(labels)

    archive = tmp_path / "x.npz"
    np.savez(archive, x=pixels)
    assert main(["detect", "--detector", str(path), "--images", str(archive)]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == "file,label,adversarial_score,flag" and printed[1].startswith("x.npz[0],")
    names, read, errors = read_images(archive, (28, 28, 1))
    assert len(names) == 3 and errors == [] and np.array_equal(read, pixels / np.float32(255))


def test_detect_errors(saved_detector, tmp_path, capsys):
    from saliency_detect.cli import main

    _, path = saved_detector
    assert main(["detect", "--detector", str(tmp_path), "--images", str(tmp_path)]) == 2
    assert "No saved SaliencyDetector" in capsys.readouterr().err
    assert main(["detect", "--detector", str(path), "--images", str(tmp_path / "none")]) == 2
    assert "No image file, folder or .npz" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["detect", "--detector", str(path), "--images", str(tmp_path / "empty")]) == 2
    assert "No image files" in capsys.readouterr().err


def test_read_images_converts_resizes_and_reports(tmp_path):
    import keras

    from saliency_detect.data import read_images

    rgb = np.zeros((40, 30, 3), np.uint8)
    rgb[..., 0] = 255
    keras.utils.save_img(tmp_path / "red.png", rgb, scale=False)
    names, images, errors = read_images(tmp_path / "red.png", (28, 28, 1))
    assert names == ["red.png"] and images.shape == (1, 28, 28, 1) and errors == []
    assert np.allclose(images, images.flat[0]) and 0.2 < images.flat[0] < 0.4  # luminance of pure red
    _, rgb_read, _ = read_images(tmp_path / "red.png", (32, 32, 3))
    assert rgb_read.shape == (1, 32, 32, 3) and np.allclose(rgb_read[..., 0], 1.0)
    for name, array, reason in [
        ("shape.npz", np.zeros((2, 27, 27), np.uint8), r"expected images of shape \(N, 28, 28, 1\)"),
        ("range.npz", np.full((2, 28, 28, 1), 2.0, np.float32), r"must be finite and lie in \[0, 1\]"),
        ("nan.npz", np.full((2, 28, 28, 1), np.nan, np.float32), r"must be finite"),
    ]:
        np.savez(tmp_path / name, x=array)
        names, images, errors = read_images(tmp_path / name, (28, 28, 1))
        assert names == [] and images.shape == (0, 28, 28, 1)
        assert errors[0][0] == name and re.search(reason, errors[0][1]), errors
    np.savez(tmp_path / "two.npz", a=np.zeros((1, 28, 28)), b=np.zeros((1, 28, 28)))
    assert "expected one array" in read_images(tmp_path / "two.npz", (28, 28, 1))[2][0][1]
    (tmp_path / "corrupt.npz").write_bytes(b"PK\x03\x04 broken")
    assert read_images(tmp_path / "corrupt.npz", (28, 28, 1))[2][0][0] == "corrupt.npz"
    (tmp_path / "doc.txt").write_text("x")
    with pytest.raises(ValueError, match="Expected an image file"):
        read_images(tmp_path / "doc.txt", (28, 28, 1))


def _png_claiming(path, width, height):
    """A 1x1 PNG whose header claims `width` x `height` pixels (a decompression bomb's header)."""
    import io
    import struct
    import zlib

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("L", (1, 1)).save(buffer, format="PNG")
    data = bytearray(buffer.getvalue())
    start = data.index(b"IHDR")
    data[start + 4 : start + 12] = struct.pack(">II", width, height)
    data[start + 17 : start + 21] = struct.pack(">I", zlib.crc32(bytes(data[start : start + 17])))
    path.write_bytes(bytes(data))


def test_read_images_skips_a_decompression_bomb_and_reads_the_rest(tmp_path):
    import keras

    from saliency_detect.data import read_images

    keras.utils.save_img(tmp_path / "good.png", np.zeros((28, 28, 1), np.uint8), scale=False)
    _png_claiming(tmp_path / "bomb.png", 100_000, 100_000)
    (tmp_path / "empty.png").write_bytes(b"")
    names, images, errors = read_images(tmp_path, (28, 28, 1))
    assert names == ["good.png"] and images.shape == (1, 28, 28, 1)
    reasons = dict(errors)
    assert set(reasons) == {"bomb.png", "empty.png"}
    assert "DecompressionBombError" in reasons["bomb.png"]


# --- the report in a real browser -----------------------------------------------------------

_CHROMIUM = os.environ.get("SALIENCY_DETECT_CHROMIUM", "/usr/bin/chromium")


def test_html_report_renders_in_headless_chromium(finished_run):
    """Chromium renders report.html and every embedded figure decodes (naturalWidth > 0)."""
    required = os.environ.get("SALIENCY_DETECT_REQUIRE_BROWSER") == "1"
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        if required:
            raise
        pytest.skip("playwright is not installed (CI installs it)")
    if not Path(_CHROMIUM).exists():
        if required:
            pytest.fail(f"no Chromium at {_CHROMIUM}")
        pytest.skip(f"no Chromium at {_CHROMIUM} (CI installs Debian's chromium)")
    _, out, results = finished_run
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=_CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
            ],
        )
        try:
            page = browser.new_page()
            page.goto((out / "report.html").as_uri())
            page.wait_for_load_state("load")
            images = page.evaluate(
                "Array.from(document.images).map(i => [i.complete, i.naturalWidth, i.naturalHeight])"
            )
            names = page.evaluate("Array.from(document.images).map(i => i.alt)")
            headings = page.locator("h2").all_inner_texts()
            cell = page.locator("table").nth(2).locator("tbody tr").first.locator("td").first.inner_text()
            screenshot = page.screenshot(full_page=True)
        finally:
            browser.close()
    assert len(images) == len(results["files"]) - 3  # every PNG; not results.json, tables.md, report.html
    assert all(done and width > 100 and height > 100 for done, width, height in images), images
    # The paper's Figure 1 per attack (what D sees) is among the figures that loaded.
    assert {"saliency_fgsm.png", "saliency_bim.png", "security.png"} <= set(names)
    assert "Table 1: classifier and saliency detector" in headings
    assert "Security: sanity checks" in headings
    assert any(h.startswith("Security: bim (L∞, 8 images") for h in headings)
    assert cell == "fgsm"
    assert screenshot.startswith(b"\x89PNG")
    (out / "report-screenshot.png").write_bytes(screenshot)


def test_the_config_of_the_recorded_mnist_run_loads(tmp_path):
    from conftest import REPO

    text = (REPO / "docs" / "results.md").read_text()
    block = re.search(r'```toml title="reproduce.toml"\n(.*?)```', text, re.S).group(1)
    (tmp_path / "exp.toml").write_text(block)
    config = load_config(tmp_path / "exp.toml")
    assert config.dataset == "mnist" and [a.display for a in config.attacks] == [
        "fgsm",
        "bim",
        "iterative_l2",
        "jsma",
    ]
    assert config.detector_train_size == 5000 and config.attacks[3].train_size == 1000


def test_the_full_scale_run_in_the_results_is_the_shipped_paper_config(tmp_path):
    from conftest import REPO

    text = (REPO / "docs" / "results.md").read_text()
    block = re.search(r'```toml title="paper-mnist.toml"\n(.*?)```', text, re.S).group(1)
    (tmp_path / "paper-mnist.toml").write_text(block)
    recorded, shipped = load_config(tmp_path / "paper-mnist.toml"), load_config("paper-mnist")
    # The baselines added to the shipped config after the recorded run are the only
    # difference allowed, and the page must say which they are.
    added = [b for b in shipped.baselines if b not in recorded.baselines]
    assert list(recorded.baselines) == [b for b in shipped.baselines if b not in added]
    assert dataclasses.replace(recorded, baselines=shipped.baselines) == shipped
    for name in added:
        assert f"`{name}`" in text.split('```toml title="paper-mnist.toml"')[0]
    # The security section came after the run too: the page says its report has none.
    assert "security section (the `security_*` keys" in text.split('```toml title="paper-mnist.toml"')[0]
    assert "saliency-detect reproduce --config paper-mnist" in text


def test_the_config_of_the_recorded_attention_run_loads(tmp_path):
    from conftest import REPO

    text = (REPO / "docs" / "results.md").read_text()
    block = re.search(r'```toml title="explain.toml"\n(.*?)```', text, re.S).group(1)
    (tmp_path / "attention.toml").write_text(block)
    config = load_config(tmp_path / "attention.toml", kind="attention")
    assert config.dataset == "cifar10" and config.architecture == "resnet20" and config.n_images == 500
    assert [a.display for a in config.attacks] == ["pixel_attack", "pgd"]
    assert config.attacks[0].params == {"pixels": 3, "popsize": 100, "nb_iter": 30}


def test_the_documented_config_file_loads(tmp_path):
    from conftest import REPO

    text = (REPO / "docs" / "experiments.md").read_text()
    block = re.search(r"```toml[^\n]*\n(.*?)```", text, re.S).group(1)
    (tmp_path / "exp.toml").write_text(block)
    config = load_config(tmp_path / "exp.toml")
    assert [a.display for a in config.attacks] == ["fgsm", "bim", "jsma"]
    assert config.attacks[1].params == {"nb_iter": 20} and config.attacks[2].train_size == 1000


# --- the attention analysis (explain) ------------------------------------------------------


def tiny_explain(**changes):
    from saliency_detect.experiments import ExplainConfig

    values = {
        "dataset": "mnist-sample",
        "architecture": "mnist_net_f",
        "train_size": 500,
        "test_size": 40,
        "epochs": 1,
        "learning_rate": 1e-3,
        "augment": False,
        "n_images": 40,
        "n_figures": 2,
        "attacks": [
            {"name": "pixel_attack", "params": {"pixels": 3, "popsize": 20, "nb_iter": 3}},
            {"name": "pgd", "eps": 0.3, "params": {"nb_iter": 5}},
        ],
    }
    values.update(changes)
    return ExplainConfig.from_dict(values)


def test_explain_config_round_trip_and_errors(tmp_path):
    from saliency_detect.experiments import ExplainConfig

    config = tiny_explain()
    assert load_config(config.save(tmp_path / "e.json"), kind="attention") == config
    assert ExplainConfig().attacks[1] == AttackSpec("pgd", eps=8 / 255)  # the paper's PGD on CIFAR-10
    with pytest.raises(ValueError, match=r"Attack 'pgd' needs `eps` here"):
        tiny_explain(attacks=["pgd"])
    with pytest.raises(ValueError, match=r"`n_images` must be an integer of at least 1"):
        tiny_explain(n_images=0)
    with pytest.raises(ValueError, match=r"`top_fraction` must be in \(0, 1\]"):
        tiny_explain(top_fraction=1.5)
    with pytest.raises(ValueError, match=r"Unknown config key\(s\) \['detector_epochs'\]"):
        tiny_explain(detector_epochs=3)
    with pytest.raises(ValueError, match="`kind` must be"):
        load_config(tmp_path / "e.json", kind="other")


def test_control_moves_the_perturbation_to_random_pixels():
    from saliency_detect.experiments._explain import _near, _shuffled_perturbation

    rng = np.random.default_rng(0)
    x = np.full((3, 8, 8, 1), 0.5, np.float32)
    x_adv = x.copy()
    x_adv[:, 2, 3] = 0.9
    x_adv[:, 5, 5] = 0.1
    control = _shuffled_perturbation(x, x_adv, rng)
    changed = np.abs(control - x).max(-1) > 1e-6
    assert (changed.sum(axis=(1, 2)) == 2).all()  # same L0
    assert np.allclose(
        np.sort(np.abs(control - x).reshape(3, -1), axis=1), np.sort(np.abs(x_adv - x).reshape(3, -1), axis=1)
    )
    near = _near(x, x_adv, radius=1)
    assert near.shape == (3, 8, 8) and near.sum(axis=(1, 2)).tolist() == [18, 18, 18]  # two 3x3 squares
    assert near[0, 1:4, 2:5].all() and not near[0, 0, 0]
    assert _near(x, x_adv, radius=0).sum(axis=(1, 2)).tolist() == [2, 2, 2]


def test_near_perturbation_is_not_applicable_when_the_perturbation_is_everywhere():
    from saliency_detect.experiments._explain import _measures, _not_applicable

    rng = np.random.default_rng(0)
    x = np.full((2, 8, 8, 1), 0.5, np.float32)
    sparse = x.copy()
    sparse[:, 2, 3] = 0.9  # one pixel: its 3x3 neighbourhood is 9 of 64 pixels
    dense = np.clip(x + rng.choice([-0.03, 0.03], x.shape), 0, 1).astype(np.float32)  # every pixel, as PGD
    maps = {k: rng.random((2, 8, 8)) for k in ("gb_predicted", "gb_true", "cam_true", "cam_predicted")}
    other = {k: rng.random((2, 8, 8)) for k in maps}
    few = _measures(maps, other, x, sparse, radius=1, fraction=0.1)
    assert np.isfinite(few["attention_near_perturbation"]).all()
    assert _not_applicable("attention_near_perturbation", few) is None
    everywhere = _measures(maps, other, x, dense, radius=1, fraction=0.1)
    assert np.isnan(everywhere["attention_near_perturbation"]).all()
    reason = _not_applicable("attention_near_perturbation", everywhere)
    assert reason.startswith("the pixels within the radius of a perturbed pixel cover 100% of each image")
    assert _not_applicable("entropy_change", everywhere) is None
    # The control of the adversarial-class overlap can be given its own map (same class pair, clean image).
    pair = rng.random((2, 8, 8))
    controlled = _measures(maps, other, x, sparse, radius=1, fraction=0.1, adversarial_class_map=pair)
    direct = _measures(maps, {**other, "cam_predicted": pair}, x, sparse, radius=1, fraction=0.1)
    np.testing.assert_array_equal(
        controlled["gradcam_overlap_adversarial_class"], direct["gradcam_overlap_adversarial_class"]
    )
    assert not np.array_equal(
        controlled["gradcam_overlap_adversarial_class"], few["gradcam_overlap_adversarial_class"]
    )


@pytest.fixture(scope="module")
def finished_explain(tmp_path_factory):
    from saliency_detect.experiments import run_explain

    out = tmp_path_factory.mktemp("explain")
    config = tiny_explain()
    return config, out, run_explain(config, out, verbose=0)


def test_explain_writes_the_claims_table_and_figures(finished_explain):
    from saliency_detect.experiments import MEASURES

    config, out, results = finished_explain
    assert json.loads((out / "results.json").read_text()) == results
    assert results["experiment"] == "attention" and results["config"] == config.to_dict()
    for label in ("pixel_attack", "pgd"):
        info = results["attacks"][label]
        assert info["n_attacked"] == 40 and 0 <= info["n_analysed"] <= 40
        if info["n_analysed"]:
            assert set(info["measures"]) == set(MEASURES)
            for m in info["measures"].values():
                for side in ("attack", "control"):
                    assert m[side]["n"] <= info["n_analysed"]
                    if m[side]["n"] > 1:
                        assert m[side]["low"] <= m[side]["mean"] <= m[side]["high"]
    pgd = results["attacks"]["pgd"]
    assert pgd["mean_linf"] <= 0.3 + 1e-6 and pgd["n_analysed"] > 5
    # Grad-CAM of a clean image overlaps itself fully for an unchanged image: the control's
    # overlap must stay within [0, 1]; PGD's true-class maps move more than the control's.
    overlap = pgd["measures"]["gradcam_overlap_true_class"]
    assert 0.0 <= overlap["attack"]["mean"] <= 1.0 and 0.0 <= overlap["control"]["mean"] <= 1.0
    # PGD changes every pixel: "near the perturbation" is no region, and the table says so.
    near = pgd["measures"]["attention_near_perturbation"]
    assert near["attack"]["n"] == 0
    assert re.match(
        r"the pixels within the radius .* cover \d+% of each image \(more than 50%\)", near["not_applicable"]
    )
    pixel = results["attacks"]["pixel_attack"]
    if pixel["n_analysed"]:
        assert "not_applicable" not in pixel["measures"]["attention_near_perturbation"]
    tables = (out / "tables.md").read_text()
    assert tables.startswith("# Attention under attack") and "| pgd | entropy_change |" in tables
    assert "| pgd | attention_near_perturbation | n/a: the pixels within the radius" in tables
    assert (out / "attention_pgd.png").read_bytes().startswith(b"\x89PNG")
    page = (out / "report.html").read_text()
    assert page.count('<img src="data:image/png;base64,') == len(list(out.glob("attention_*.png")))


def test_explain_command_uses_flags_over_config(tmp_path, capsys):
    from saliency_detect.cli import main
    from saliency_detect.cli._experiment import config_from_args
    from saliency_detect.cli._main import build_parser

    path = tiny_explain().save(tmp_path / "e.json")
    args = build_parser().parse_args(
        ["explain", "--config", str(path), "--attacks", "fgsm=0.2", "--n-images", "10"]
    )
    config = config_from_args(args)
    assert (
        config.attacks == (AttackSpec("fgsm", eps=0.2),)
        and config.n_images == 10
        and config.train_size == 500
    )
    out = tmp_path / "out"
    argv = [
        "explain",
        "--config",
        str(path),
        "--attacks",
        "fgsm=0.3",
        "--n-images",
        "10",
        "--out",
        str(out),
        "--quiet",
    ]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "# Attention under attack" in printed and "| fgsm | attention_near_perturbation |" in printed
    assert main(["explain", "--attacks", "pgd", "--out", str(out)]) == 2
    assert "needs `eps`" in capsys.readouterr().err


# --- progress -------------------------------------------------------------------------------


def test_epoch_progress_draws_one_bar_over_epochs(capsys):
    import keras

    from saliency_detect._progress import EpochProgress

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    x, y = np.zeros((8, 3), "float32"), np.zeros((8, 1), "float32")
    stop = keras.callbacks.EarlyStopping(monitor="loss", patience=1, min_delta=1.0)
    model.fit(x, y, epochs=50, verbose=0, callbacks=[EpochProgress(50, title="fitting"), stop])
    printed = capsys.readouterr().out
    assert printed.startswith("fitting\n")
    # One bar, counted in epochs, closed at the epoch early stopping ended on (2 of 50).
    assert "2/50" in printed and "epoch" in printed and "loss" in printed and "50/50" not in printed
    assert printed.count("\n") <= 3


def test_quiet_and_verbose_exclude_each_other(capsys):
    from saliency_detect.cli._main import build_parser

    args = build_parser().parse_args(["demo", "--verbose"])
    from saliency_detect.cli._experiment import _verbosity

    assert _verbosity(args) == 2 and _verbosity(build_parser().parse_args(["demo"])) == 1
    assert _verbosity(build_parser().parse_args(["reproduce", "--quiet"])) == 0
    with pytest.raises(SystemExit):
        build_parser().parse_args(["demo", "--quiet", "--verbose"])
    assert "not allowed with argument" in capsys.readouterr().err


def test_security_attacks_detectors_of_attacks_without_a_ball_in_the_first_linf_attacks(
    tmp_path, monkeypatch
):
    """JSMA's detector is attacked at the first L-inf attack's budgets (an L2 attack comes first)."""
    import saliency_detect.evaluation as evaluation
    from saliency_detect.detector import FeatureSqueezingDetector
    from saliency_detect.evaluation import SecurityEvaluation
    from saliency_detect.experiments import _pipeline
    from saliency_detect.experiments._outputs import _security_sections
    from saliency_detect.models import mnist_net_f

    calls = []

    def fake_evaluation(f, detectors, x, y, *, eps, norm, **kwargs):
        calls.append((list(detectors), list(eps), norm, kwargs["surrogates"]))
        rate = {"rate": 0.0, "low": 0.0, "high": 0.1, "hits": 0, "n": len(x)}
        rates = (rate,) * len(eps)
        return {name: SecurityEvaluation(tuple(eps), norm, rates, rates, rates) for name in detectors}

    monkeypatch.setattr(evaluation, "security_evaluation", fake_evaluation)
    f = mnist_net_f()
    x = np.random.default_rng(0).random((60, 28, 28, 1), dtype=np.float32)
    y = np.arange(60) % 10
    config = tiny_config(security_eps_factors=[0.5, 1.0], security_size=8, security_transfer=False)

    def job(name, eps, norm):
        return {
            "spec": AttackSpec(name), "attack_eps": eps, "eps": eps, "norm": norm,
            "pairs": (x[:20], x[20:40]), "detectors": {},
            "baselines": {"feature_squeezing": FeatureSqueezingDetector(f).fit(x[:20])},
            "reports": {"feature_squeezing": {"roc_auc": 0.5, "tpr_at_1_fpr": 0.0, "tpr_at_5_fpr": 0.1}},
        }  # fmt: skip

    jobs = {
        "iterative_l2": job("iterative_l2", 1.0, 2.0),
        "jsma": job("jsma", None, None),
        "bim": job("bim", 0.2, np.inf),
    }
    section = _pipeline._security(_pipeline._Run(config, tmp_path, verbose=0), f, jobs, x, y)
    assert list(section) == ["iterative_l2", "jsma", "bim"]
    assert section["jsma"]["eps_from"] == "bim" and section["jsma"]["norm"] == "inf"
    assert section["jsma"]["eps"] == [0.1, 0.2] and section["iterative_l2"]["eps"] == [0.5, 1.0]
    assert [(c[1], c[2]) for c in calls] == [([0.5, 1.0], 2.0), ([0.1, 0.2], np.inf), ([0.1, 0.2], np.inf)]
    assert section["bim"]["n_images"] == 8 and section["bim"]["n_calibration"] == 52
    titles = [title for title, _, _ in _security_sections(section)]
    assert titles[1].startswith("Security: jsma (L∞ at bim's ε, 8 images") and "sanity" not in titles[-1]
    # With no attack that has a ball, there is nothing to borrow: the section is left out.
    assert _pipeline._security(_pipeline._Run(config, tmp_path / "b", verbose=0), f,
                               {"jsma": job("jsma", None, None)}, x, y) is None  # fmt: skip
