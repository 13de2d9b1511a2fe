"""Experiment configs: validation, round trips, the shipped and the documented configs."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest

from saliency_detect.experiments import AttackSpec, ExperimentConfig, demo_config, load_config

REPO = Path(__file__).resolve().parents[2]


def test_config_round_trips_through_dict_json_and_toml(tmp_path, tiny_config):
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


def test_config_replace_keeps_everything_else(tiny_config):
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
            r"'fgsm': `eps` must be a positive number or None. Received: eps=-1",
        ),
        ({"attacks": [{"name": "fgsm", "colour": 1}]}, r"An attack must be a name or a table with keys"),
        ({"attacks": ["fgsm", "fgsm"]}, r"labels must be unique"),
        ({"attacks": []}, r"at least one attack"),
        ({"attacks": "fgsm"}, r"`attacks` must be a list"),
        ({"baselines": ["lid", "magnet"]}, r"Unknown baseline\(s\) \['magnet'\]"),
        ({"test_size": 0}, r"`test_size` must be a positive integer or None. Received: test_size=0"),
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
def test_config_errors_name_the_setting(changes, message, tiny_config):
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


def test_the_config_of_the_recorded_mnist_run_loads(tmp_path):
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
    text = (REPO / "docs" / "results.md").read_text()
    block = re.search(r'```toml title="explain.toml"\n(.*?)```', text, re.S).group(1)
    (tmp_path / "attention.toml").write_text(block)
    config = load_config(tmp_path / "attention.toml", kind="attention")
    assert config.dataset == "cifar10" and config.architecture == "resnet20" and config.n_images == 500
    assert [a.display for a in config.attacks] == ["pixel_attack", "pgd"]
    assert config.attacks[0].params == {"pixels": 3, "popsize": 100, "nb_iter": 30}


def test_the_configs_of_the_recorded_per_layer_runs_load(tmp_path):
    text = (REPO / "docs" / "results.md").read_text()
    blocks = dict(re.findall(r'```toml title="(explain-layers-[\w-]+\.toml)"\n(.*?)```', text, re.S))
    names = ("cifar10-net-f", "mnist", "resnet20")
    assert sorted(blocks) == [f"explain-layers-{name}.toml" for name in names]
    architectures = {}
    for name, block in blocks.items():
        (tmp_path / name).write_text(block)
        config = load_config(tmp_path / name, kind="attention")
        assert config.per_layer and config.n_images == 500 and [a.name for a in config.attacks] == ["pgd"]
        architectures[config.architecture] = config.attacks[0].eps
    assert architectures == {"mnist_net_f": 0.3, "cifar10_net_f": 8 / 255, "resnet20": 8 / 255}


def test_the_documented_config_file_loads(tmp_path):
    text = (REPO / "docs" / "experiments.md").read_text()
    block = re.search(r"```toml[^\n]*\n(.*?)```", text, re.S).group(1)
    (tmp_path / "exp.toml").write_text(block)
    config = load_config(tmp_path / "exp.toml")
    assert [a.display for a in config.attacks] == ["fgsm", "bim", "jsma"]
    assert config.attacks[1].params == {"nb_iter": 20} and config.attacks[2].train_size == 1000


def test_explain_config_round_trip_and_errors(tmp_path, tiny_explain):
    from saliency_detect.experiments import ExplainConfig

    config = tiny_explain()
    assert load_config(config.save(tmp_path / "e.json"), kind="attention") == config
    assert ExplainConfig().attacks[1] == AttackSpec("pgd", eps=8 / 255)  # the paper's PGD on CIFAR-10
    with pytest.raises(ValueError, match=r"Attack 'pgd' needs `eps` here"):
        tiny_explain(attacks=["pgd"])
    with pytest.raises(ValueError, match=r"`n_images` must be a positive integer"):
        tiny_explain(n_images=0)
    with pytest.raises(ValueError, match=r"`top_fraction` must be in \(0, 1\]"):
        tiny_explain(top_fraction=1.5)
    with pytest.raises(ValueError, match=r"Unknown config key\(s\) \['detector_epochs'\]"):
        tiny_explain(detector_epochs=3)
    with pytest.raises(ValueError, match="`kind` must be"):
        load_config(tmp_path / "e.json", kind="other")


def test_both_configs_share_one_declaration_of_the_run_settings():
    """Data, classifier, attacks and seed are declared once; the attention config changes only
    the defaults of its paper's setting, and every setting is passed by keyword."""
    import dataclasses

    from saliency_detect.experiments import ExperimentConfig, ExplainConfig

    shared = ["dataset", "data_dir", "model", "use_pretrained", "architecture", "train_size", "test_size",
              "epochs", "learning_rate", "augment", "attacks", "seed"]  # fmt: skip
    for config in (ExperimentConfig, ExplainConfig):
        assert [f.name for f in dataclasses.fields(config)][: len(shared)] == shared
        with pytest.raises(TypeError):
            config("mnist")
    detection, attention = ExperimentConfig(), ExplainConfig()
    changed = [name for name in shared if getattr(detection, name) != getattr(attention, name)]
    assert changed == ["dataset", "architecture", "augment", "attacks"]
    assert (attention.dataset, attention.architecture, attention.augment) == ("cifar10", "resnet20", True)
    # The shared checks run for both.
    for config in (ExperimentConfig, ExplainConfig):
        with pytest.raises(ValueError, match=r"`seed` must be a non-negative integer"):
            config(seed=-1)
