"""Experiments: the detection paper's pipeline, end to end, with cached resumable steps.

`run_experiment(config, out_dir)` trains or loads the classifier, finds each attack's
minimal ε, crafts adversarial sets, fits the saliency detector per attack and the
baselines, and writes `results.json`, `tables.md`, PNG figures and a self-contained
`report.html`. `ExperimentConfig` holds every setting and round-trips through JSON or
TOML (`load_config`); `demo_config()` is `saliency-detect demo`'s.
"""

from saliency_detect.experiments._config import (
    BASELINES,
    AttackSpec,
    ExperimentConfig,
    demo_config,
    load_config,
)
from saliency_detect.experiments._outputs import report_html, tables_markdown
from saliency_detect.experiments._pipeline import run_experiment

__all__ = [
    "BASELINES",
    "AttackSpec",
    "ExperimentConfig",
    "demo_config",
    "load_config",
    "report_html",
    "run_experiment",
    "tables_markdown",
]
