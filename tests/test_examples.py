import subprocess
import sys

from conftest import REPO


def test_train_classifier_example_runs(tmp_path):
    out = tmp_path / "f.keras"
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "examples" / "train_classifier.py"),
            "--epochs",
            "1",
            "--train-size",
            "256",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "test accuracy" in result.stdout and out.is_file()
