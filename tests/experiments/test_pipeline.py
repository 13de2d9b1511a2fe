"""The `reproduce` / `demo` pipeline end to end: outputs, caches, resuming, the report, security."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from saliency_detect.experiments import (
    AttackSpec,
    AttentionResults,
    DetectionResults,
    ExperimentConfig,
    load_config,
    load_results,
    run_experiment,
)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, tiny_config):
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
    assert isinstance(results, DetectionResults)
    assert json.loads((out / "results.json").read_text()) == results.to_dict()
    assert results.config == config
    assert {"tensorflow", "keras", "numpy", "saliency_detect", "python"} <= set(results.versions)
    assert results.timings["total"] > 0 and "train_classifier" in results.timings
    # Each step's time is also summed over every invocation of the run, in the cache.
    assert results.timings_all_invocations["train_classifier"] == pytest.approx(
        results.timings["train_classifier"], abs=1e-3
    )
    # fgsm's ε was searched twice: Table 1's at its own level (f keeps < 12 %), the
    # matrices' at the config's (< 30 %), which needs a smaller ε.
    fgsm = results.attacks["fgsm"]
    assert fgsm.eps_searched and fgsm.eps_target_accuracy == 0.12 and fgsm.eps_search_accuracy < 0.12
    assert fgsm.matrix_eps_search_accuracy < config.target_accuracy and fgsm.matrix_eps < fgsm.eps
    assert fgsm.eps_search_history and fgsm.spec == config.attacks[0]
    bim = results.attacks["bim"]
    assert bim.eps == bim.matrix_eps == 0.2 and not bim.eps_searched and bim.eps_search_history is None
    assert "eps_search_history" not in results.to_dict()["attacks"]["bim"]  # only for a searched ε
    assert [(r.attack, r.detector) for r in results.table1] == [
        (a, d) for a in ("fgsm", "bim") for d in ("saliency", "saliency (paper recipe)")
    ]
    assert {(r.attack, r.detector) for r in results.comparison} == {
        (a, d)
        for a in ("fgsm", "bim")
        for d in ("saliency", "saliency (paper recipe)", "image", "image (paper recipe)")
    }
    sources = {r.detector: r.report.threshold_source for r in results.comparison}
    assert sources["saliency"] == "validation balanced accuracy"
    assert sources["saliency (paper recipe)"] == "probability 0.5"
    assert all(0 <= r.report.tpr_at_1_fpr <= r.report.tpr_at_5_fpr <= 1 for r in results.comparison)
    assert results.cross_attack.train_labels == ("fgsm", "bim")
    eps = fgsm.matrix_eps
    assert results.cross_eps["fgsm"].test_labels == (f"ε={eps:.3g}", f"ε={2 * eps:.3g}")
    assert [row["sigma"] for row in results.adaptive.rows] == [0.0, 1.0]
    assert results.adaptive.attack == "fgsm"
    # The security section: both attacks have an L-inf ε; each has the main recipe's two detectors.
    security = results.security
    assert list(security) == ["fgsm", "bim"]
    for label, section in security.items():
        assert section.eps == (results.attacks[label].eps,) and section.norm == "inf"
        assert section.n_images == 8 and section.n_calibration == 32 and section.fpr == 0.05
        assert list(section.detectors) == ["saliency", "image"]
        for kind, row in section.detectors.items():
            assert row.roc_auc == results.row(label, kind).report.roc_auc
            evaluation = row.evaluation
            assert all(r["n"] == 8 and r["low"] <= r["rate"] <= r["high"] for r in evaluation.adaptive)
            assert evaluation.unaware[0]["hits"] <= evaluation.undefended[0]["hits"]
            assert [c.name for c in evaluation.checks] == ["unbounded", "stronger", "transfer"]
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
    for name in results.files.values():
        assert (out / name).is_file(), name
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert pngs == sorted(n for n in results.files.values() if n.endswith(".png"))
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
    assert f"{results.table1[0].report.d_accuracy_clean:.3f}" in page


def test_results_json_reads_back_into_the_same_results(finished_run):
    from saliency_detect.experiments import tables_markdown

    _, out, results = finished_run
    loaded = load_results(out)  # the folder, or the file itself
    assert isinstance(loaded, DetectionResults)
    assert loaded.to_dict() == results.to_dict() == load_results(out / "results.json").to_dict()
    assert loaded.config == results.config and loaded.attacks == results.attacks
    assert loaded.comparison == results.comparison and loaded.security == results.security
    np.testing.assert_array_equal(loaded.cross_attack.values, results.cross_attack.values)
    assert tables_markdown(loaded) == (out / "tables.md").read_text()  # the report redrawn from the file


def test_results_point_at_their_rows(finished_run):
    _, _, results = finished_run
    row = results.row("bim", "image")
    assert (row.attack, row.detector, row.report.name) == ("bim", "image", "bim")
    with pytest.raises(KeyError, match=r"No row for attack 'jsma' and detector 'saliency'. Rows: \[\('bim'"):
        results.row("jsma")


def test_load_results_says_what_is_wrong_with_a_file(finished_run, tmp_path):
    from saliency_detect.experiments import tables_markdown

    _, out, _ = finished_run
    with pytest.raises(FileNotFoundError, match=r"No results file at .*results\.json"):
        load_results(tmp_path)
    (tmp_path / "results.json").write_text('{"experiment": "detection", "config"')  # truncated
    with pytest.raises(ValueError, match=r"is not a results\.json file \(it is not JSON"):
        load_results(tmp_path)
    (tmp_path / "results.json").write_text(json.dumps({"experiment": "training"}))
    expected = re.escape("must be one of ['attention', 'detection']. Received: 'training'")
    with pytest.raises(ValueError, match=expected):
        load_results(tmp_path)
    values = json.loads((out / "results.json").read_text())
    del values["comparison"]
    (tmp_path / "results.json").write_text(json.dumps(values))
    expected = re.escape("not a readable detection results file: KeyError('comparison')")
    with pytest.raises(ValueError, match=expected):
        load_results(tmp_path)
    with pytest.raises(ValueError, match="Expected the results of the 'detection' experiment"):
        DetectionResults.from_dict({"experiment": "attention"})
    with pytest.raises(ValueError, match="Expected the results of the 'attention' experiment"):
        AttentionResults.from_dict(json.loads((out / "results.json").read_text()))  # a detection run's
    with pytest.raises(TypeError, match=r"must be a DetectionResults or AttentionResults .* Received: dict"):
        tables_markdown(values)


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
    assert again.table1 == results.table1
    fresh, before = again.to_dict(), results.to_dict()
    assert fresh["matrices"] == before["matrices"]
    assert again.security == results.security
    # The record of what each step cost survives the rerun (f was not trained again).
    assert "train_classifier" not in again.timings
    assert again.timings_all_invocations["train_classifier"] == pytest.approx(
        results.timings_all_invocations["train_classifier"], abs=1e-3
    )


def test_interrupted_run_resumes_where_it_stopped(tmp_path, monkeypatch, tiny_config):
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
        if path.name != "timings.json":  # a record, not a result
            assert path.stat().st_mtime_ns == mtime, f"{path} was rewritten"
    assert [r.attack for r in results.table1] == ["fgsm", "bim"]


def test_damaged_caches_are_recomputed_with_a_warning(finished_run, tmp_path, monkeypatch):
    config, out, results = finished_run
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    damaged_eps = sorted((copy / "cache" / "epsilon").iterdir())[0]
    damaged_eps.write_text("{")  # truncated
    damaged = sorted((copy / "cache" / "detectors").iterdir())[0]
    data = bytearray((damaged / "detector.keras").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (damaged / "detector.keras").write_bytes(bytes(data))
    import saliency_detect.models as models

    monkeypatch.setattr(models, "train_classifier", lambda *a, **k: pytest.fail("f was retrained"))
    with pytest.warns(UserWarning) as caught:
        again = run_experiment(config, copy, verbose=0)
    messages = " | ".join(str(w.message) for w in caught)
    assert f"ε '{damaged_eps}' is damaged" in messages and "recomputing it" in messages
    assert f"detector '{damaged}' is damaged" in messages and "SHA-256 mismatch" in messages
    assert [r.attack for r in again.table1] == [r.attack for r in results.table1]
    assert again.attacks["fgsm"].eps == results.attacks["fgsm"].eps  # searched again, same ε
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


def test_feature_baselines_are_not_refitted_on_a_rerun(tmp_path, monkeypatch, tiny_config):
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
    assert {r.detector for r in first.comparison} >= set(kinds)
    again = run_experiment(config, tmp_path, verbose=0)
    assert again.comparison == first.comparison and again.roc == first.roc


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
        results.classifier.fingerprint
        == json.loads((out / "results.json").read_text())["classifier"]["fingerprint"]
    )


def test_run_experiment_rejects_a_non_config(tmp_path):
    with pytest.raises(TypeError, match="must be an ExperimentConfig"):
        run_experiment({"dataset": "mnist"}, tmp_path)


def test_reproduce_flags_override_the_config_file(tmp_path, tiny_config):
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


def test_pretrained_classifier_is_used_unless_told_to_retrain(tmp_path, tiny_config):
    from saliency_detect.models import model_fingerprint, pretrained

    config = tiny_config(use_pretrained=True, attacks=[{"name": "fgsm", "eps": 0.3}])
    results = run_experiment(config, tmp_path / "a", verbose=0)
    assert results.classifier.source == "pretrained:mnist_net_f"
    assert results.classifier.fingerprint == model_fingerprint(pretrained("mnist_net_f"))
    assert "train_classifier" not in results.timings


def test_reproduce_command_writes_the_report(tmp_path, capsys, tiny_config):
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


def test_demo_command_runs_the_demo_config(tmp_path, capsys, monkeypatch, tiny_config):
    import saliency_detect.experiments as experiments
    from saliency_detect.cli import main

    monkeypatch.setattr(
        experiments, "demo_config", lambda: tiny_config(attacks=[{"name": "fgsm", "eps": 0.3}])
    )
    assert main(["demo", "--out", str(tmp_path / "demo"), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "## Cross-attack generalization" in printed and "report.html" in printed
    assert (tmp_path / "demo" / "report.html").is_file()


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
    assert len(images) == len(results.files) - 3  # every PNG; not results.json, tables.md, report.html
    assert all(done and width > 100 and height > 100 for done, width, height in images), images
    # The paper's Figure 1 per attack (what D sees) is among the figures that loaded.
    assert {"saliency_fgsm.png", "saliency_bim.png", "security.png"} <= set(names)
    assert "Table 1: classifier and saliency detector" in headings
    assert "Security: sanity checks" in headings
    assert any(h.startswith("Security: bim (L∞, 8 images") for h in headings)
    assert cell == "fgsm"
    assert screenshot.startswith(b"\x89PNG")
    (out / "report-screenshot.png").write_bytes(screenshot)


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
    tmp_path, monkeypatch, tiny_config
):
    """JSMA's detector is attacked at the first L-inf attack's budgets (an L2 attack comes first)."""
    import saliency_detect.evaluation as evaluation
    from saliency_detect.detector import FeatureSqueezingDetector
    from saliency_detect.evaluation import DetectionReport, SecurityEvaluation
    from saliency_detect.experiments import _pipeline
    from saliency_detect.experiments._outputs import _security_sections
    from saliency_detect.experiments._steps import Run
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

    report = DetectionReport(
        "any", 1.0, 0.5, 0.9, 0.8, 0.8, 0.1, 0.5, 0.1, 20, 20, 0.0, tpr_at_1_fpr=0.0, threshold_source="set"
    )

    def job(name, eps, norm):
        return {
            "spec": AttackSpec(name), "attack_eps": eps, "eps": eps, "norm": norm,
            "pairs": (x[:20], x[20:40]), "detectors": {},
            "baselines": {"feature_squeezing": FeatureSqueezingDetector(f).fit(x[:20])},
            "reports": {"feature_squeezing": report},
        }  # fmt: skip

    jobs = {
        "iterative_l2": job("iterative_l2", 1.0, 2.0),
        "jsma": job("jsma", None, None),
        "bim": job("bim", 0.2, np.inf),
    }
    section = _pipeline._security(Run(config, tmp_path, verbose=0), f, jobs, x, y)
    assert list(section) == ["iterative_l2", "jsma", "bim"]
    assert section["jsma"].eps_from == "bim" and section["jsma"].norm == "inf"
    assert section["jsma"].eps == (0.1, 0.2) and section["iterative_l2"].eps == (0.5, 1.0)
    assert [(c[1], c[2]) for c in calls] == [([0.5, 1.0], 2.0), ([0.1, 0.2], np.inf), ([0.1, 0.2], np.inf)]
    assert section["bim"].n_images == 8 and section["bim"].n_calibration == 52
    assert section["bim"].detectors["feature_squeezing"].roc_auc == report.roc_auc
    titles = [title for title, _, _ in _security_sections(section)]
    assert titles[1].startswith("Security: jsma (L∞ at bim's ε, 8 images") and "sanity" not in titles[-1]
    # The norm is the attack's own declaration, not a list of names: an L2 BIM is L2.
    assert _pipeline._attack_norm("bim", {"norm": 2}) == 2.0 and _pipeline._attack_norm("jsma", {}) is None
    # With no attack that has a ball, there is nothing to borrow: the section is left out.
    assert _pipeline._security(Run(config, tmp_path / "b", verbose=0), f,
                               {"jsma": job("jsma", None, None)}, x, y) is None  # fmt: skip


def test_security_section_names_its_norm_as_the_report_writes_it():
    from saliency_detect.experiments._results import SecuritySection

    def section(norm):
        return SecuritySection((0.1,), "bim", norm, 8, 32, 0.05, 2, 1, {})

    assert section("inf").norm_label == "L∞"
    assert section(2).norm_label == "L2"
    assert SecuritySection.from_dict(section(2).to_dict()) == section(2)
