"""Experiments: the detection paper's pipeline, end to end, with cached resumable steps.

`run_experiment(config, out_dir)` trains or loads the classifier, finds each attack's
minimal ε, crafts adversarial sets, fits the saliency detector per attack and the
baselines, writes `results.json`, `tables.md`, PNG figures and a self-contained
`report.html`, and returns a `DetectionResults` (typed; `load_results` reads a
finished run's `results.json` back into one). `ExperimentConfig` holds every setting
and round-trips through JSON or TOML (`load_config`); `demo_config()` is `saliency-detect demo`'s.

`run_explain(ExplainConfig(...), out_dir)` is the attention paper's analysis: guided
backpropagation and Grad-CAM of clean vs adversarial images, figure grids, and a table of
measures (`MEASURES`) with confidence intervals beside a random-pixel control; it
returns an `AttentionResults`.
"""

from saliency_detect.experiments._config import (
    BASELINES,
    AttackSpec,
    ExperimentConfig,
    ExplainConfig,
    demo_config,
    load_config,
    named_configs,
)
from saliency_detect.experiments._explain import run_explain
from saliency_detect.experiments._outputs import tables_markdown
from saliency_detect.experiments._pipeline import run_experiment
from saliency_detect.experiments._results import (
    MEASURES,
    AdaptiveResult,
    AttackResult,
    AttentionAttack,
    AttentionResults,
    ClassifierResult,
    DetectionResults,
    DetectionRow,
    Interval,
    LayerRow,
    Measured,
    RocCurve,
    SecurityRow,
    SecuritySection,
    load_results,
)

__all__ = [
    "BASELINES",
    "MEASURES",
    "AdaptiveResult",
    "AttackResult",
    "AttackSpec",
    "AttentionAttack",
    "AttentionResults",
    "ClassifierResult",
    "DetectionResults",
    "DetectionRow",
    "ExperimentConfig",
    "ExplainConfig",
    "Interval",
    "LayerRow",
    "Measured",
    "RocCurve",
    "SecurityRow",
    "SecuritySection",
    "demo_config",
    "load_config",
    "load_results",
    "named_configs",
    "run_experiment",
    "run_explain",
    "tables_markdown",
]
