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


@pytest.mark.parametrize(
    ("listing", "lookup", "name", "kind"),
    [
        ("attacks.available_attacks", "attacks.get_attack", "pgd", "attack"),
        ("saliency.available_methods", "saliency.saliency_fn", "grad_cam", "saliency method"),
        ("models.available_models", "models.get_model_builder", "resnet20", "model"),
    ],
)
def test_the_registries_have_one_shape(listing, lookup, name, kind):
    def resolve(dotted):
        module, attribute = dotted.split(".")
        return getattr(importlib.import_module(f"saliency_detect.{module}"), attribute)

    everything = resolve(listing)()
    # name -> {keyword: default}, the same for every registry
    assert isinstance(everything, dict) and name in everything
    assert all(isinstance(options, dict) for options in everything.values())
    assert resolve(lookup)(name).__name__ == name
    with pytest.raises(ValueError, match=rf"^Unknown {kind} 'nope'\. Expected one of: .*{name}"):
        resolve(lookup)("nope")


def _imports_of_every_module():
    """Module -> the package modules it imports (at the top or inside a function), by reading the AST."""
    import ast
    from pathlib import Path

    root = Path(saliency_detect.__file__).parent
    graph = {}
    for path in root.rglob("*.py"):
        parts = path.relative_to(root.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                candidates = [base] + [f"{base}.{alias.name}" for alias in node.names]
            elif isinstance(node, ast.Import):
                candidates = [alias.name for alias in node.names]
            else:
                continue
            targets |= {c for c in candidates if c.startswith("saliency_detect")}
        graph[name] = targets
    return {name: {t for t in targets if t in graph and t != name} for name, targets in graph.items()}


def test_no_import_circle_between_private_modules():
    # A package's __init__ imports its modules by design; a circle is two modules (or a
    # longer ring) that reach each other without passing through an __init__.
    graph = _imports_of_every_module()
    inits = {name for name in graph if importlib.util.find_spec(name).submodule_search_locations}
    edges = {name: targets - inits for name, targets in graph.items() if name not in inits}

    def reaches(start, goal, seen):
        for nxt in edges.get(start, ()):
            if nxt == goal or (nxt not in seen and reaches(nxt, goal, seen | {nxt})):
                return True
        return False

    circles = sorted(name for name in edges if reaches(name, name, {name}))
    assert not circles, f"modules on an import circle: {circles}"
