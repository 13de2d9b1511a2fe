"""Make sure Keras runs on the TensorFlow backend before anything imports it."""

from __future__ import annotations

import json
import os

_HOW_TO_SWITCH = (
    "saliency_detect needs Keras on the TensorFlow backend. Switch with "
    "`export KERAS_BACKEND=tensorflow` (or `os.environ['KERAS_BACKEND'] = 'tensorflow'` "
    'before the first `import keras`), or set "backend": "tensorflow" in {config}.'
)


def _keras_config_path() -> str:
    # The same rule Keras uses to find keras.json: $KERAS_HOME, else ~/.keras.
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return os.path.join(home, "keras.json")


def configured_backend() -> tuple[str | None, str]:
    """Return the backend Keras will pick at import time, and where that choice comes from."""
    env = os.environ.get("KERAS_BACKEND")
    if env:
        return env, "the KERAS_BACKEND environment variable"
    path = _keras_config_path()
    try:
        with open(path, encoding="utf-8") as f:
            backend = json.load(f).get("backend")
    except (OSError, ValueError, AttributeError):
        return None, path
    return backend, path


def require_tensorflow_backend() -> None:
    """Raise ImportError, before Keras is imported, if Keras is set to another backend."""
    backend, source = configured_backend()
    if backend is not None and backend != "tensorflow":
        raise ImportError(
            f"Keras is configured to use the {backend!r} backend (from {source}). "
            + _HOW_TO_SWITCH.format(config=_keras_config_path())
        )


def check_loaded_backend() -> None:
    """Raise ImportError if an already imported Keras runs on another backend."""
    import keras

    backend = keras.backend.backend()
    if backend != "tensorflow":
        raise ImportError(
            f"Keras was already imported with the {backend!r} backend. "
            + _HOW_TO_SWITCH.format(config=_keras_config_path())
        )
