"""The attention analysis (`explain`): its controls, measures, outputs and command."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from saliency_detect.experiments import AttackSpec


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
def finished_explain(tmp_path_factory, tiny_explain):
    from saliency_detect.experiments import run_explain

    out = tmp_path_factory.mktemp("explain")
    config = tiny_explain()
    return config, out, run_explain(config, out, verbose=0)


def test_explain_writes_the_claims_table_and_figures(finished_explain):
    from saliency_detect.experiments import MEASURES, AttentionResults

    config, out, results = finished_explain
    assert json.loads((out / "results.json").read_text()) == results.to_dict()
    assert isinstance(results, AttentionResults) and results.config == config
    for label in ("pixel_attack", "pgd"):
        info = results.attacks[label]
        assert info.n_attacked == 40 and 0 <= info.n_analysed <= 40
        if info.n_analysed:
            assert set(info.measures) == set(MEASURES)
            for m in info.measures.values():
                for interval in (m.attack, m.control):
                    assert interval.n <= info.n_analysed
                    if interval.n > 1:
                        assert interval.low <= interval.mean <= interval.high
    pgd = results.attacks["pgd"]
    assert pgd.mean_linf <= 0.3 + 1e-6 and pgd.n_analysed > 5
    # Grad-CAM of a clean image overlaps itself fully for an unchanged image: the control's
    # overlap must stay within [0, 1]; PGD's true-class maps move more than the control's.
    overlap = pgd.measures["gradcam_overlap_true_class"]
    assert 0.0 <= overlap.attack.mean <= 1.0 and 0.0 <= overlap.control.mean <= 1.0
    # PGD changes every pixel: "near the perturbation" is no region, and the table says so.
    near = pgd.measures["attention_near_perturbation"]
    assert near.attack.n == 0 and near.attack.mean is None
    assert re.match(
        r"the pixels within the radius .* cover \d+% of each image \(more than 50%\)", near.not_applicable
    )
    pixel = results.attacks["pixel_attack"]
    if pixel.n_analysed:
        assert pixel.measures["attention_near_perturbation"].not_applicable is None
    from saliency_detect.experiments import load_results, tables_markdown

    loaded = load_results(out)
    assert isinstance(loaded, AttentionResults) and loaded.to_dict() == results.to_dict()
    assert loaded.attacks == results.attacks and tables_markdown(loaded) == (out / "tables.md").read_text()
    tables = (out / "tables.md").read_text()
    assert tables.startswith("# Attention under attack") and "| pgd | entropy_change |" in tables
    assert "| pgd | attention_near_perturbation | n/a: the pixels within the radius" in tables
    assert (out / "attention_pgd.png").read_bytes().startswith(b"\x89PNG")
    # The per-layer analysis: every convolution of f, input to output, attack beside control.
    from saliency_detect.models import mnist_net_f
    from saliency_detect.saliency._gradcam import conv_layers

    rows = pgd.layers
    assert [row.layer for row in rows] == list(conv_layers(mnist_net_f()))  # the 4 convolutions
    assert [row.depth for row in rows] == [1, 2, 3, 4]
    for row in rows:
        for target, side in ((t, s) for t in ("predicted", "true") for s in ("attack", "control")):
            measured = getattr(row, target)
            correlation = getattr(measured["rank_correlation"], side)
            overlap = getattr(measured["top_overlap"], side)
            # A map with no ranking (all zero after Grad-CAM's ReLU) leaves its image out of both.
            assert correlation.n == overlap.n <= pgd.n_analysed
            assert correlation.n == 0 or (-1.0 <= correlation.mean <= 1.0 and 0.0 <= overlap.mean <= 1.0)
    for row in rows:  # PGD moves every layer's activations
        change = row.feature_change
        assert change.attack.n == pgd.n_analysed and change.attack.mean > 0
    assert rows[-1].feature_change.attack.mean > rows[-1].feature_change.control.mean
    assert "Per layer: relative change of the layer's activations" in tables
    assert "Per layer: clean vs adversarial" in tables and f"| pgd | 1 | {rows[0].layer} | true |" in tables
    assert (out / "layers_pgd.png").read_bytes().startswith(b"\x89PNG")
    page = (out / "report.html").read_text()
    assert page.count('<img src="data:image/png;base64,') == len(list(out.glob("*.png")))


def test_the_feature_change_by_hand():
    import keras

    from saliency_detect.experiments._explain import _feature_change

    inputs = keras.Input((2, 2, 1))
    doubled = keras.layers.Conv2D(1, 1, use_bias=False, kernel_initializer="ones", name="conv")(inputs)
    f = keras.Model(inputs, keras.layers.Dense(3)(keras.layers.Flatten()(doubled)))
    x = np.array([[[[3.0], [0.0]], [[0.0], [4.0]]], [[[0.0], [0.0]], [[0.0], [0.0]]]], np.float32)
    other = x + np.array([[[0.0], [0.0]], [[0.0], [1.0]]], np.float32)
    change = _feature_change(f, x, other, ("conv",))
    # ||(3, 0, 0, 5) - (3, 0, 0, 4)|| / ||(3, 0, 0, 4)|| = 1 / 5; an all-zero clean response: NaN.
    np.testing.assert_allclose(change[0], [0.2], rtol=1e-6)
    assert change.shape == (2, 1) and np.isnan(change[1, 0])
    # Compiled once per classifier, layers and image shape, through the per-model step cache.
    from saliency_detect._prepared import prepare

    _feature_change(f, other, x, ("conv",))
    steps = [g for key, g in prepare(f)._functions.items() if key[0].__name__ == "_feature_change_step"]
    assert len(steps) == 1 and steps[0].experimental_get_tracing_count() == 1


def test_the_per_layer_shift_by_hand():
    from saliency_detect.experiments._explain import _layer_shift

    clean = {"conv": np.array([[[1, 2], [3, 4]], [[1, 2], [3, 4]], [[1, 2], [3, 4]]], np.float32)}
    other = {"conv": np.array([[[4, 3], [2, 1]], [[1, 2], [3, 4]], [[0, 0], [0, 0]]], np.float32)}
    shift = _layer_shift(clean, other, fraction=0.25)["conv"]  # top 1 of the 4 cells
    # Reversed ranks: -1; the same map: 1; a constant map has no ranking: NaN.
    np.testing.assert_allclose(shift["rank_correlation"][:2], [-1.0, 1.0], atol=1e-6)
    assert np.isnan(shift["rank_correlation"][2])
    # The clean top cell (value 4, bottom right) is the reversed map's lowest: overlap 0; same map: 1;
    # a constant map has no top cell (its ties would pick any): NaN.
    np.testing.assert_allclose(shift["top_overlap"][:2], [0.0, 1.0])
    assert np.isnan(shift["top_overlap"][2])


def test_explain_command_uses_flags_over_config(tmp_path, capsys, tiny_explain):
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


def test_interval_of_one_image_has_a_mean_and_no_interval():
    from saliency_detect.experiments._explain import _interval
    from saliency_detect.experiments._outputs import _interval_text

    one = _interval(np.array([0.25, np.nan]))  # NaN (measure undefined on that image) is dropped
    assert (one.mean, one.low, one.high, one.n) == (0.25, None, None, 1)
    assert _interval_text(one, count=True) == "0.2500 [no interval: 1 image], n = 1"
    two = _interval(np.array([0.0, 1.0]))
    assert two.low < two.mean == 0.5 < two.high and two.n == 2
    assert _interval_text(two) == f"0.5000 [{two.low:.4f}, {two.high:.4f}]"
    none = _interval(np.array([np.nan]))
    assert none.mean is None and _interval_text(none) == "n/a (no image)"
