import importlib
import json
import os
import subprocess
import sys
from importlib import metadata, resources

import pytest

import saliency_detect


def _import_in_subprocess(env_changes, code="import saliency_detect"):
    env = {**os.environ, **env_changes}
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)


def test_version_matches_the_installed_metadata():
    assert metadata.version("saliency-detect") == saliency_detect.__version__


def test_another_backend_in_the_environment_fails_at_import_with_the_fix():
    result = _import_in_subprocess({"KERAS_BACKEND": "jax"})
    assert result.returncode != 0
    assert "ImportError" in result.stderr
    assert "'jax' backend" in result.stderr and "KERAS_BACKEND=tensorflow" in result.stderr


def test_another_backend_in_keras_json_fails_at_import(tmp_path):
    (tmp_path / "keras.json").write_text(json.dumps({"backend": "torch"}))
    env = {"KERAS_HOME": str(tmp_path)}
    result = _import_in_subprocess({**env, "KERAS_BACKEND": ""})
    assert result.returncode != 0
    assert "'torch' backend" in result.stderr and str(tmp_path / "keras.json") in result.stderr


def test_tensorflow_backend_imports_and_subpackages_load_lazily():
    code = (
        "import sys, saliency_detect; "
        "assert 'tensorflow' not in sys.modules, 'TensorFlow was imported eagerly'; "
        "saliency_detect.models; assert 'tensorflow' in sys.modules; print('ok')"
    )
    result = _import_in_subprocess({"KERAS_BACKEND": "tensorflow"}, code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_unknown_attribute_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        saliency_detect.nope  # noqa: B018


@pytest.mark.parametrize(
    "package",
    [
        "saliency_detect",
        "saliency_detect.attacks",
        "saliency_detect.cli",
        "saliency_detect.data",
        "saliency_detect.models",
        "saliency_detect.saliency",
        "saliency_detect.saliency.metrics",
    ],
)
def test_every_public_name_exists(package):
    module = importlib.import_module(package)
    assert len(set(module.__all__)) == len(module.__all__), "duplicate names in __all__"
    for name in module.__all__:
        assert getattr(module, name) is not None, f"{package}.{name}"


def test_package_is_typed():
    assert resources.files("saliency_detect").joinpath("py.typed").is_file()
