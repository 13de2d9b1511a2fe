"""`run_explain`: the attention paper's analysis, made quantitative.

For each attack: craft adversarial versions of test images (cached HDF5), keep the images
f classified correctly and the attack fooled, and compare guided-backpropagation saliency
and Grad-CAM of clean and adversarial images. Every measure is reported with a 95%
confidence interval beside the same measure for a control: the image's own perturbation
moved to random pixels (same values, same L0 and L∞), so an effect of "any change of this
size" is told apart from an effect of the attack.

The per-layer analysis (the detection paper's §5: "shallow layers are robust to
adversarial examples, middle layers start to extract wrong features") compares, at every
convolution layer of f, from input to output, the revised Grad-CAM map (the layer's
feature maps weighted by their pooled gradients, for each image's predicted class and
for the true class) of each adversarial image with its clean image's, and the layer's
activations' relative change, each beside the same comparison for the control.
"""

from __future__ import annotations

import dataclasses
import os
from typing import TYPE_CHECKING

import numpy as np

from saliency_detect._validation import validates_once
from saliency_detect.experiments._config import ExplainConfig
from saliency_detect.experiments._results import (
    LAYER_CLASSES,
    LAYER_MEASURES,
    MEASURES,
    AttentionAttack,
    AttentionResults,
    Interval,
    LayerRow,
    Measured,
)
from saliency_detect.experiments._steps import Run, adversarial_set, classifier, versions

if TYPE_CHECKING:
    import tensorflow as tf


#: Above this share of the image within `radius` of a perturbed pixel, "near the
#: perturbation" is no region (an L∞ attack such as PGD changes nearly every pixel) and
#: `attention_near_perturbation` is not applicable to the image.
MAX_NEAR_COVERAGE = 0.5


def _interval(values: np.ndarray) -> Interval:
    values = np.asarray(values, np.float64)
    values = values[np.isfinite(values)]
    if len(values) == 0:  # None, not NaN: results.json stays standard JSON and compares equal
        return Interval(None, None, None, 0)
    mean = float(values.mean())
    if len(values) == 1:  # one image has a mean but no spread: no interval, not a zero-width one
        return Interval(mean, None, None, 1)
    half = 1.96 * float(values.std(ddof=1)) / np.sqrt(len(values))
    return Interval(mean, mean - half, mean + half, len(values))


def _measured(attacked: np.ndarray, controlled: np.ndarray, not_applicable: str | None = None) -> Measured:
    return Measured(_interval(attacked), _interval(controlled), not_applicable)


def _shuffled_perturbation(x: np.ndarray, x_adv: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The control: each image's perturbation with its pixel positions permuted at random."""
    n, h, w, c = x.shape
    delta = (x_adv - x).reshape(n, h * w, c)
    order = np.argsort(rng.random((n, h * w)), axis=1)
    moved = np.take_along_axis(delta, order[..., None], axis=1).reshape(x.shape)
    return np.clip(x + moved, 0.0, 1.0).astype(np.float32)


def _near(x: np.ndarray, x_other: np.ndarray, radius: int) -> np.ndarray:
    """Pixels within `radius` (Chebyshev) of a changed pixel, (N, H, W) booleans."""
    import tensorflow as tf

    changed = (np.abs(x_other - x).max(axis=-1) > 1e-6).astype(np.float32)[..., None]
    size = 2 * radius + 1
    grown = tf.nn.max_pool2d(changed, ksize=size, strides=1, padding="SAME")
    return grown.numpy()[..., 0] > 0.5


def _maps(f, x, y, predicted, batch_size: int = 64) -> dict[str, np.ndarray]:
    from saliency_detect import saliency

    return {
        "gb_predicted": saliency.guided_backprop(f, x, target=predicted, batch_size=batch_size, reduce="abs"),
        "gb_true": saliency.guided_backprop(f, x, target=y, batch_size=batch_size, reduce="abs"),
        "cam_true": saliency.grad_cam(f, x, target=y, batch_size=batch_size),
        "cam_predicted": saliency.grad_cam(f, x, target=predicted, batch_size=batch_size),
    }


def _top_overlap(a: np.ndarray, b: np.ndarray, fraction: float) -> np.ndarray:
    from saliency_detect.saliency.metrics import top_k_intersection

    k = max(1, round(fraction * a.shape[1] * a.shape[2]))
    return top_k_intersection(a, b, k)


def _measures(
    clean, other, x, x_other, radius: int, fraction: float, adversarial_class_map=None
) -> dict[str, np.ndarray]:
    """Each measure per image; NaN where a measure does not apply to the image.

    `adversarial_class_map` replaces `other["cam_predicted"]` in the adversarial-class
    overlap (the control passes the clean image's map for the attack's class).
    """
    from saliency_detect.saliency.metrics import entropy, mass_in_mask, spearman

    near = _near(x, x_other, radius)
    shift = mass_in_mask(other["gb_predicted"], near) - mass_in_mask(clean["gb_predicted"], near)
    coverage = near.mean(axis=(1, 2))
    cam_adversarial = other["cam_predicted"] if adversarial_class_map is None else adversarial_class_map
    return {
        "attention_near_perturbation": np.where(coverage > MAX_NEAR_COVERAGE, np.nan, shift),
        "entropy_change": entropy(other["gb_predicted"]) - entropy(clean["gb_predicted"]),
        "rank_correlation_true_class": spearman(clean["gb_true"], other["gb_true"]),
        "gradcam_overlap_true_class": _top_overlap(clean["cam_true"], other["cam_true"], fraction),
        "gradcam_overlap_adversarial_class": _top_overlap(clean["cam_true"], cam_adversarial, fraction),
        "near_coverage": coverage,
    }


def _not_applicable(name: str, measured: dict[str, np.ndarray]) -> str | None:
    """Why a measure is undefined for every analysed image, or None when it is defined for some."""
    if name == "attention_near_perturbation" and not np.isfinite(measured[name]).any():
        coverage = float(np.mean(measured["near_coverage"]))
        return (
            f"the pixels within the radius of a perturbed pixel cover {coverage:.0%} of each image "
            f"(more than {MAX_NEAR_COVERAGE:.0%}), so 'near the perturbation' is no region"
        )
    return None


def _layer_maps(f, x, classes, layers: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Revised Grad-CAM at each layer, for `classes`, at the layer's own resolution (no resizing)."""
    from saliency_detect.saliency import grad_cam_layers

    return grad_cam_layers(f, x, layers=list(layers), target=classes, batch_size=64, upsample=False)


def _layer_shift(clean: dict[str, np.ndarray], other: dict[str, np.ndarray], fraction: float):
    """Per layer, each image's rank correlation and top-cell overlap of its two maps (NaN: undefined).

    A map that is constant (all zero after Grad-CAM's ReLU, say) has no ranking and no top
    cells: both measures are NaN for that image and it is left out of the layer's interval.
    """
    from saliency_detect.saliency.metrics import spearman

    shifts = {}
    for layer in clean:
        a, b = clean[layer], other[layer]
        flat = (np.ptp(a.reshape(len(a), -1), axis=1) == 0) | (np.ptp(b.reshape(len(b), -1), axis=1) == 0)
        shifts[layer] = {
            "rank_correlation": np.where(flat, np.nan, spearman(a, b)),
            "top_overlap": np.where(flat, np.nan, _top_overlap(a, b, fraction)),
        }
    return shifts


def _feature_change_step(prepared, *, layers: tuple[str, ...]):
    """`(clean, other) -> (N, layers)` relative changes of each layer's activations (NaN: all-zero clean)."""
    import tensorflow as tf

    model = prepared.feature_model(layers)
    count = len(layers)

    def step(a, b):
        changes = []
        for clean, other in zip(
            model(a, training=False)[:count], model(b, training=False)[:count], strict=True
        ):
            axes = list(range(1, len(clean.shape)))
            norm = tf.sqrt(tf.reduce_sum(tf.square(clean), axis=axes))
            moved = tf.sqrt(tf.reduce_sum(tf.square(other - clean), axis=axes))
            changes.append(tf.where(norm > 0, moved / tf.maximum(norm, 1e-30), np.nan))
        return tf.stack(changes, axis=1)

    return step


def _feature_change(f, x, x_other, layers: tuple[str, ...], batch_size: int = 64) -> np.ndarray:
    """(N, layers): each layer's activations' relative change, `||A(x_other) - A(x)|| / ||A(x)||`.

    The features alone, no gradient: how much of a layer's response the perturbation moves.
    NaN where the clean activations are all zero. The step is compiled once per classifier,
    layers and image shape (`Prepared.compiled`).
    """
    import tensorflow as tf

    from saliency_detect._batching import map_batches
    from saliency_detect._prepared import prepare

    spec = tf.TensorSpec((None, *x.shape[1:]), tf.float32)
    step = prepare(f).compiled(_feature_change_step, {"layers": tuple(layers)}, [spec, spec])
    return np.asarray(map_batches(step, (x, x_other), batch_size), np.float64)


def _per_layer(f, x, x_adv, x_control, y, y_adv, y_control, fraction: float) -> tuple[LayerRow, ...]:
    """Each convolution layer's measures, adversarial and control against clean, for both classes."""
    from saliency_detect.saliency._gradcam import conv_layers

    layers = conv_layers(f)
    clean = _layer_maps(f, x, y, layers)  # the analysed images are classified correctly: predicted = true
    change = _feature_change(f, x, x_adv, layers), _feature_change(f, x, x_control, layers)
    shifts = {}
    for target, classes in (("predicted", (y_adv, y_control)), ("true", (y, y))):
        shifts[target] = (
            _layer_shift(clean, _layer_maps(f, x_adv, classes[0], layers), fraction),
            _layer_shift(clean, _layer_maps(f, x_control, classes[1], layers), fraction),
        )
    return tuple(
        LayerRow(
            layer=layer,
            depth=i + 1,
            feature_change=_measured(change[0][:, i], change[1][:, i]),
            **{
                target: {
                    name: _measured(attacked[layer][name], moved[layer][name]) for name in LAYER_MEASURES
                }
                for target, (attacked, moved) in shifts.items()
            },
        )
        for i, layer in enumerate(layers)
    )


def _layers_png(label: str, rows: tuple[LayerRow, ...]) -> bytes:
    """Each per-layer measure against depth, per class: attack and control, with 95% intervals."""
    from saliency_detect.experiments._outputs import _figure_png

    depth = [row.depth for row in rows]

    def plot(ax, points: list[Measured], title):
        for side, color in (("attack", "tab:red"), ("control", "tab:gray")):
            intervals = [getattr(p, side) for p in points]
            mean = [np.nan if i.mean is None else i.mean for i in intervals]
            half = [np.nan if i.low is None else i.mean - i.low for i in intervals]
            ax.errorbar(depth, mean, yerr=half, marker="o", ms=3, capsize=2, color=color, label=side)
        ax.set_title(title, fontsize=8)

    def draw(fig):
        axes = fig.subplots(len(LAYER_CLASSES), len(LAYER_MEASURES) + 1, squeeze=False)
        for r, target in enumerate(LAYER_CLASSES):
            for c, name in enumerate(LAYER_MEASURES):
                ax = axes[r][c]
                plot(
                    ax,
                    [getattr(row, target)[name] for row in rows],
                    f"{name.replace('_', ' ')} ({target} class)",
                )
                ax.set_ylim(-0.05 if name == "top_overlap" else -1.05, 1.05)
                if r == len(LAYER_CLASSES) - 1:
                    ax.set_xlabel("convolution layer (input → output)", fontsize=8)
        plot(axes[0][-1], [row.feature_change for row in rows], "activations' relative change")
        axes[0][-1].set_ylim(bottom=0)
        axes[1][-1].axis("off")
        axes[0][0].legend(fontsize=7)
        fig.suptitle(f"{label}: revised Grad-CAM per layer, adversarial (and control) vs clean", fontsize=9)

    return _figure_png(draw, size=(12.0, 6.0))


def _grid_png(label: str, x, x_adv, clean, adv, y, y_adv, class_names) -> bytes:
    from saliency_detect.experiments._outputs import _figure_png

    columns = [
        ("image", lambda i: x[i], None),
        ("adversarial", lambda i: x_adv[i], None),
        ("GB clean\n(pred.)", lambda i: clean["gb_predicted"][i], "gray"),
        ("GB adv.\n(pred.)", lambda i: adv["gb_predicted"][i], "gray"),
        ("Grad-CAM\nclean (true)", lambda i: clean["cam_true"][i], "jet"),
        ("Grad-CAM\nadv. (true)", lambda i: adv["cam_true"][i], "jet"),
        ("Grad-CAM\nadv. (adv.)", lambda i: adv["cam_predicted"][i], "jet"),
    ]
    rows = len(x)

    def draw(fig):
        axes = fig.subplots(rows, len(columns), squeeze=False)
        for i in range(rows):
            for j, (title, pick, cmap) in enumerate(columns):
                ax = axes[i][j]
                image = pick(i)
                if cmap is None:
                    ax.imshow(image[..., 0] if image.shape[-1] == 1 else image, cmap="gray", vmin=0, vmax=1)
                else:
                    ax.imshow(image, cmap=cmap)
                ax.set_xticks([])
                ax.set_yticks([])
                if i == 0:
                    ax.set_title(title, fontsize=7)
            axes[i][0].set_ylabel(f"{class_names[y[i]]} → {class_names[y_adv[i]]}", fontsize=7)
        fig.suptitle(label)

    return _figure_png(draw, size=(1.3 * len(columns), 1.4 * rows + 0.6))


@validates_once
def run_explain(
    config: ExplainConfig,
    out_dir: str | os.PathLike[str],
    *,
    verbose: int = 1,
    strategy: tf.distribute.Strategy | None = None,
) -> AttentionResults:
    """Run the attention analysis and write its report to `out_dir`.

    Trains (or loads) the classifier, attacks the first `config.n_images` test images with
    each attack (cached, resumable HDF5 sets), and on the images f classified correctly
    and the attack fooled compares guided-backpropagation saliency and Grad-CAM of the
    clean and adversarial image w.r.t. the predicted, true and adversarial class. Each
    measure of `MEASURES` gets a mean and 95% confidence interval, beside the control
    (the same perturbation at random pixels). Writes `results.json`, `tables.md`, a
    figure grid per attack (image, adversarial image, guided backprop, Grad-CAM, like the
    paper's Figures 2-7) and `report.html`.

    Args:
        config: the analysis's settings.
        out_dir: the folder for the report and the cache.
        verbose: 0 is silent; 1 prints each step with progress bars.
        strategy: the `tf.distribute.Strategy` every step runs under (training, attacks,
            saliency, scoring); None takes the current one.

    Returns:
        An `AttentionResults`: per attack, the images attacked and analysed, each
        measure with its control and the per-layer rows. Its `to_dict()` is
        `results.json`'s contents (`load_results` reads it back).

    Raises:
        TypeError: if `config` is not an `ExplainConfig`.
        ValueError: if the data set or model does not fit the config.

    Examples:
        >>> import tempfile
        >>> from saliency_detect.experiments import ExplainConfig, run_explain
        >>> config = ExplainConfig(dataset="mnist-sample", architecture="mnist_net_f", train_size=300,
        ...     test_size=20, epochs=1, augment=False, n_images=20, n_figures=2,
        ...     attacks=[{"name": "fgsm", "eps": 0.3}])
        >>> results = run_explain(config, tempfile.mkdtemp(), verbose=0)
        >>> sorted(results.attacks["fgsm"].measures) == sorted(MEASURES)
        True
    """
    from saliency_detect._distribute import resolve_strategy

    if not isinstance(config, ExplainConfig):
        raise TypeError(f"`config` must be an ExplainConfig. Received: {type(config).__name__}")
    with resolve_strategy(strategy).scope():
        return _explain(Run(config, out_dir, verbose))


def _explain(run) -> AttentionResults:
    from saliency_detect import saliency
    from saliency_detect.experiments._outputs import _safe
    from saliency_detect.models import predict_labels

    config = run.config
    dataset = run.load_data()
    f, classifier_info = classifier(run, dataset)
    n = min(config.n_images, len(dataset.x_test))
    x, y = dataset.x_test[:n], dataset.y_test[:n]
    rng = np.random.default_rng(config.seed)
    attacks, figures = {}, {}
    for spec in config.attacks:
        label = spec.display
        adversarial = adversarial_set(run, f, spec, spec.eps, x, y, "explain")
        y_clean = predict_labels(f, x)
        keep = (y_clean == y) & adversarial.success
        xs, xa, ys, ya = x[keep], adversarial.x_adv[keep], y[keep], adversarial.y_adv[keep]
        run.log(f"[{label}] analysing {len(xs)} of {n} images (correct on clean, fooled by the attack)")
        attack = AttentionAttack(
            spec=spec,
            n_attacked=int(n),
            n_analysed=len(xs),
            success_rate=float(np.mean(adversarial.success)),
            mean_l0=float(np.mean(adversarial.l0)),
            mean_linf=float(np.mean(adversarial.linf)),
        )
        if len(xs):
            x_control = _shuffled_perturbation(xs, xa, rng)
            y_control = predict_labels(f, x_control)
            clean = run.timed(f"saliency/{label}", lambda xs=xs, ys=ys: _maps(f, xs, ys, ys))
            adv = run.timed(f"saliency/{label}", lambda xa=xa, ys=ys, ya=ya: _maps(f, xa, ys, ya))
            control = run.timed(
                f"saliency/{label}", lambda xc=x_control, ys=ys, yc=y_control: _maps(f, xc, ys, yc)
            )
            # Grad-CAM of the clean image for the class the attack reached: the like-for-like
            # control of the adversarial-class overlap (same two classes, no perturbation).
            pair = run.timed(
                f"saliency/{label}", lambda xs=xs, ya=ya: saliency.grad_cam(f, xs, target=ya, batch_size=64)
            )
            measured = _measures(clean, adv, xs, xa, config.radius, config.top_fraction)
            controlled = _measures(
                clean, control, xs, x_control, config.radius, config.top_fraction, adversarial_class_map=pair
            )
            layers = None
            if config.per_layer:
                layers = run.timed(
                    f"layers/{label}",
                    lambda xs=xs, xa=xa, xc=x_control, ys=ys, ya=ya, yc=y_control: _per_layer(
                        f, xs, xa, xc, ys, ya, yc, config.top_fraction
                    ),
                )
                figures[f"layers_{_safe(label)}.png"] = _layers_png(label, layers)
            attack = dataclasses.replace(
                attack,
                measures={
                    name: _measured(measured[name], controlled[name], _not_applicable(name, measured))
                    for name in MEASURES
                },
                control_fooled_rate=float(np.mean(y_control != ys)),
                layers=layers,
            )
            shown = slice(0, min(config.n_figures, len(xs)))
            figures[f"attention_{_safe(label)}.png"] = _grid_png(
                label,
                xs[shown],
                xa[shown],
                {k: v[shown] for k, v in clean.items()},
                {k: v[shown] for k, v in adv.items()},
                ys[shown],
                ya[shown],
                dataset.class_names,
            )
        attacks[label] = attack
    results = AttentionResults(
        config=config, versions=versions(), classifier=classifier_info, attacks=attacks
    )
    return run.finish(results, figures)
