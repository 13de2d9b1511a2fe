import json
import logging
import os
import shutil
import subprocess
import sys

import pytest

from saliency_detect.cli import main


def test_help_lists_the_subcommands(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "train" in out and "COMMAND" in out


def test_console_script_is_installed():
    # Scripts are installed next to the interpreter, whether or not the venv is activated.
    search = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])
    exe = shutil.which("saliency-detect", path=search)
    assert exe is not None, "the saliency-detect entry point is not installed"
    result = subprocess.run([exe, "train", "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "--dataset" in result.stdout


def test_python_m_prints_the_version():
    result = subprocess.run(
        [sys.executable, "-m", "saliency_detect", "--version"], capture_output=True, text=True, timeout=120
    )
    from saliency_detect import __version__

    assert result.returncode == 0 and __version__ in result.stdout


def test_train_command_trains_and_saves(tmp_path, capsys):
    out = tmp_path / "f.keras"
    code = main(
        [
            "train",
            "--dataset",
            "mnist-sample",
            "--train-size",
            "256",
            "--test-size",
            "64",
            "--epochs",
            "1",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "Test accuracy:" in printed and str(out) in printed
    from saliency_detect.models import load_model

    assert load_model(out).name == "mnist_net_f"


def test_train_command_fast_recipe_writes_its_settings_on_the_card(tmp_path):
    out = tmp_path / "f.keras"
    argv = ["train", "--train-size", "128", "--test-size", "32", "--recipe", "fast", "--epochs", "1",
            "--optimizer", "sgd", "--no-augment", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    card = json.loads(out.with_suffix(".json").read_text())
    assert card["recipe"] == "fast" and card["optimizer"] == "sgd" and card["augment"] is False
    assert card["label_smoothing"] == 0.1 and card["weight_decay"] == 0.05 and card["batch_size"] == 256
    assert card["epochs"] == 1 and card["learning_rate"] == 2e-3 and card["warmup"] == 0.2
    assert card["command"].endswith("--out " + str(out))


def test_train_command_default_output_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--train-size", "64", "--test-size", "16", "--epochs", "1"]) == 0
    assert (tmp_path / "mnist_net_f-mnist-sample.keras").is_file()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "--dataset", "imagenet"], "Unknown data set 'imagenet'"),
        (["train", "--model", "alexnet", "--train-size", "8"], "Unknown model 'alexnet'"),
        (["train", "--out", "model.h5", "--train-size", "8"], "must end in '.keras'"),
    ],
)
def test_train_command_errors_exit_2_with_a_message(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    assert message in capsys.readouterr().err
    assert not any(p.suffix == ".keras" for p in tmp_path.iterdir())


def test_attack_command_writes_an_adversarial_set(tmp_path, capsys, trained_mnist_f):
    from saliency_detect.attacks import load_adversarial_set
    from saliency_detect.models import save_model

    model_path = save_model(trained_mnist_f, tmp_path / "f.keras")
    out = tmp_path / "adv.h5"
    argv = ["attack", "--model", str(model_path), "--attack", "jsma", "--size", "12", "--out", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "success rate" in printed and str(out) in printed
    adversarial = load_adversarial_set(out)
    assert adversarial.attack == "jsma" and len(adversarial.x_adv) == 12
    assert adversarial.l0.max() <= int(0.1 * 784)
    assert main([*argv[:-2], "--param", "gamma=0.05", "--out", str(tmp_path / "b.h5")]) == 0
    params = load_adversarial_set(tmp_path / "b.h5").params
    assert params["gamma"] == 0.05 and params["random_state"] == 0 and params["output"] == "probabilities"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--attack", "fgsm"], "--eps is required for fgsm"),
        (["--attack", "deepfool", "--eps", "0.1"], "Unknown attack 'deepfool'"),
        (["--attack", "fgsm", "--eps", "0.1", "--param", "steps=3"], "unknown option"),
        # An ε on the 0-255 scale for images in [0, 1] would binarise them.
        (["--attack", "fgsm", "--eps", "8"], "`eps` must be at most 1 for images in clip_range (0, 1)"),
        (["--attack", "bim", "--eps", "8"], "8/255 = 0.0314"),
    ],
)
def test_attack_command_errors(tmp_path, capsys, extra, message):
    from saliency_detect.models import mnist_net_f, save_model

    model_path = save_model(mnist_net_f(), tmp_path / "f.keras")
    code = main(
        ["attack", "--model", str(model_path), "--size", "4", "--out", str(tmp_path / "a.h5"), *extra]
    )
    assert code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "a.h5").exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        # `--size -3` used to attack 1,997 of the 2,000 images and exit 0.
        (
            ["attack", "--model", "f.keras", "--attack", "fgsm", "--out", "a.h5", "--size", "-3"],
            "--size: expected a positive integer, got '-3'",
        ),
        (
            ["attack", "--model", "f.keras", "--attack", "fgsm", "--out", "a.h5", "--eps", "-0.1"],
            "--eps: expected a positive number",
        ),
        (
            ["attack", "--model", "f.keras", "--attack", "fgsm", "--out", "a.h5", "--eps", "nan"],
            "--eps: expected a positive number",
        ),
        (
            ["attack", "--model", "f.keras", "--attack", "fgsm", "--out", "a.h5", "--chunk-size", "0"],
            "--chunk-size",
        ),
        (
            ["attack", "--model", "f.keras", "--attack", "fgsm", "--out", "a.h5", "--seed", "-1"],
            "--seed: expected a seed",
        ),
        (["train", "--train-size", "0"], "--train-size: expected a positive integer"),
        (["train", "--epochs", "0"], "--epochs: expected a positive integer, got '0'"),
        (["train", "--label-smoothing", "1.5"], "--label-smoothing: expected a number in [0, 1)"),
        (["train", "--weight-decay", "-1"], "--weight-decay: expected a number >= 0"),
        (["train", "--learning-rate", "0"], "--learning-rate: expected a positive number"),
        (["detect", "--detector", "d", "--images", "x.png", "--batch-size", "-1"], "--batch-size"),
        (["reproduce", "--test-size", "-5"], "--test-size: expected a positive integer"),
        (["explain", "--n-images", "0"], "--n-images: expected a positive integer"),
    ],
)
def test_out_of_range_counts_and_sizes_stop_at_parsing(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("make", "argv", "message"),
    [
        # output paths under a file, that are a folder, or under a read-only folder
        (
            lambda t: (t / "file").write_text("x"),
            ["attack", "--out", "{t}/file/a.h5"],
            "is a file, not a folder",
        ),
        (lambda t: (t / "dir").mkdir(), ["attack", "--out", "{t}/dir"], "is a folder; expected a file path"),
        (lambda t: (t / "ro").mkdir(mode=0o500), ["attack", "--out", "{t}/ro/a.h5"], "is not writable"),
        (
            lambda t: (t / "file").write_text("x"),
            ["reproduce", "--out", "{t}/file"],
            "is a file; expected a folder",
        ),
        (
            lambda t: (t / "file").write_text("x"),
            ["train", "--resume-dir", "{t}/file/backup"],
            "is a file, not a folder",
        ),
        (
            lambda t: (t / "dir").mkdir(),
            ["detect", "--detector", "d", "--images", "x", "--out", "{t}/dir"],
            "is a folder",
        ),
    ],
)
def test_unusable_output_paths_stop_at_parsing(tmp_path, capsys, monkeypatch, make, argv, message):
    make(tmp_path)
    if "not writable" in message:  # root may write anywhere: ask the OS's answer for this folder
        real_access = os.access
        monkeypatch.setattr(os, "access", lambda p, mode: real_access(p, mode) and not str(p).endswith("/ro"))
    command, *rest = argv
    required = {"attack": ["--model", "f.keras", "--attack", "fgsm"]}.get(command, [])
    with pytest.raises(SystemExit) as exit_:
        main([command, *required, *(a.format(t=tmp_path) for a in rest)])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_unexpected_errors_end_in_one_line_and_debug_shows_the_traceback(tmp_path, capsys, monkeypatch):
    import saliency_detect.cli._attack as attack_command

    def broken(args):
        raise RuntimeError("something\nunexpected")

    monkeypatch.setattr(attack_command, "run", broken)
    argv = ["attack", "--model", "f.keras", "--attack", "fgsm", "--out", str(tmp_path / "a.h5")]
    tensorflow_logger = logging.getLogger("tensorflow")
    filters = list(tensorflow_logger.filters)
    assert main(argv) == 2
    # Retracing is removed where it happens, not hidden: the command filters no warnings.
    assert tensorflow_logger.filters == filters
    err = capsys.readouterr().err
    assert err.strip() == (
        "saliency-detect attack: error: RuntimeError: something unexpected "
        "(run with --debug for the traceback)"
    )
    with pytest.raises(RuntimeError, match="something"):
        main(["--debug", *argv])


def test_a_truncated_cache_and_a_busy_output_end_in_one_line(tmp_path, capsys, trained_mnist_f):
    import json
    import socket

    from saliency_detect.models import save_model

    model_path = save_model(trained_mnist_f, tmp_path / "f.keras")
    out = tmp_path / "a.h5"
    argv = [
        "attack",
        "--model",
        str(model_path),
        "--attack",
        "fgsm",
        "--eps",
        "0.1",
        "--size",
        "8",
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    data = out.read_bytes()
    out.write_bytes(data[: len(data) // 3])
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "is damaged and cannot be opened" in err and "Delete it" in err and "Traceback" not in err
    out.unlink()
    (tmp_path / "a.h5.lock").write_text(json.dumps({"host": socket.gethostname(), "pid": os.getpid()}))
    assert main(argv) == 2
    assert "is being written by process" in capsys.readouterr().err
