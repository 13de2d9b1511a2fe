"""Writing an experiment's report: `results.json`, `tables.md`, PNG figures, `report.html`.

Figures are drawn on `matplotlib.figure.Figure` objects (no pyplot state, no display
needed); every file is written to a temporary name and renamed into place. The HTML
report embeds its images as base64 data, so the one file can be mailed or archived.
"""

from __future__ import annotations

import base64
import dataclasses
import html
import io
import json
from pathlib import Path

import numpy as np

from saliency_detect._files import atomic_write_bytes, atomic_write_text
from saliency_detect.evaluation import GeneralizationMatrix
from saliency_detect.experiments._results import (
    AttentionResults,
    DetectionResults,
    Interval,
    Results,
    RocCurve,
    SecuritySection,
)

_COMPARED = ("d_accuracy_clean", "d_accuracy_adversarial", "roc_auc", "tpr_at_1_fpr", "tpr_at_5_fpr")
_COMPARED_TITLES = ["D acc. clean", "D acc. adv.", "ROC AUC", "TPR @ 1% FPR", "TPR @ 5% FPR"]
_TABLE1_COLUMNS = (
    ("f_accuracy_clean", "f acc. clean"),
    ("f_accuracy_adversarial", "f acc. adv."),
    ("d_accuracy_clean", "D acc. clean"),
    ("d_accuracy_adversarial", "D acc. adv."),
    ("roc_auc", "ROC AUC"),
    ("tpr_at_1_fpr", "TPR @ 1% FPR"),
    ("tpr_at_5_fpr", "TPR @ 5% FPR"),
)
SECURITY_NOTE = (
    "Attack success: f fooled and the detector silent (rate, 95% Wilson interval). 'none': PGD on f "
    "with no detector; 'PGD on f': the same images judged by f and the detector (the attacker does not "
    "know it); 'joint': the joint attack on f and the detector (joint_pgd, best of its sum and selective "
    "modes). ROC AUC and TPR columns: the detector against the attack's own test set, without adaptation."
)
SANITY_NOTE = (
    "A failed check means the evaluation, not the detector, is in doubt (Carlini et al. 2019). "
    "unbounded: ε the whole pixel range (the joint attack as at every ε, and from the clean images "
    "with the middle ε's step and twice the steps); its success must not be significantly below 95% "
    "(exact binomial test). stronger: twice the steps and one more restart must not lower success. "
    "transfer: the joint attack on a surrogate detector (seed + 1, the second half of the training "
    "pairs), judged by the real one, must not beat white-box. For these two, p is the one-sided exact "
    "McNemar test over the paired images. p < 0.05 fails."
)
_IMAGE_ONLY_COLUMNS = (
    ("d_accuracy_clean", "image-only D acc. clean"),
    ("d_accuracy_adversarial", "image-only D acc. adv."),
    ("roc_auc", "image-only ROC AUC"),
)


def _figure_png(draw, *, size=(5.0, 4.0)) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=size, dpi=110)
    FigureCanvasAgg(figure)
    draw(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", bbox_inches="tight")
    return buffer.getvalue()


def _matrix_png(m: GeneralizationMatrix) -> bytes:
    n = max(len(m.test_labels), 2)
    return _figure_png(lambda fig: m.plot(fig.add_subplot()), size=(2.4 + 0.9 * n, 1.4 + 0.8 * n))


def _roc_png(label: str, curves: dict[str, RocCurve]) -> bytes:
    def draw(fig):
        ax = fig.add_subplot()
        for kind, curve in curves.items():
            ax.plot(curve.fpr, curve.tpr, label=kind)
        ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
        ax.set_xlabel("false-positive rate (clean images flagged)")
        ax.set_ylabel("true-positive rate (adversarial images flagged)")
        ax.set_title(f"ROC: {label}")
        ax.legend(loc="lower right")

    return _figure_png(draw)


def saliency_grid_png(label: str, x, saliency, x_adv, saliency_adv) -> bytes:
    """The detection paper's Figure 1 for one attack: clean and adversarial images beside their saliency.

    A row per image: the clean image, its saliency channel as D sees it, the adversarial
    image, its saliency channel, and the perturbation. Saliency (averaged over colour
    channels) is drawn on one symmetric blue-red scale per row, so clean and adversarial
    maps compare at a glance.
    """

    def draw(fig):
        rows = len(x)
        axes = fig.subplots(rows, 5, squeeze=False)
        titles = ("clean", "saliency (clean)", "adversarial", "saliency (adv.)", "perturbation")
        for i in range(rows):
            maps = (saliency[i].mean(axis=-1), saliency_adv[i].mean(axis=-1))
            limit = max(float(np.abs(m).max()) for m in maps) or 1.0
            delta = (x_adv[i] - x[i]).mean(axis=-1)
            bound = float(np.abs(delta).max()) or 1.0
            panels = (
                (x[i], "gray", 0.0, 1.0),
                (maps[0], "RdBu_r", -limit, limit),
                (x_adv[i], "gray", 0.0, 1.0),
                (maps[1], "RdBu_r", -limit, limit),
                (delta, "RdBu_r", -bound, bound),
            )
            for j, (image, cmap, low, high) in enumerate(panels):
                ax = axes[i][j]
                shown = image[..., 0] if image.ndim == 3 and image.shape[-1] == 1 else image
                ax.imshow(np.clip(shown, 0, 1) if image.ndim == 3 else shown, cmap=cmap, vmin=low, vmax=high)
                ax.set_xticks([])
                ax.set_yticks([])
                if i == 0:
                    ax.set_title(titles[j], fontsize=7)
        fig.suptitle(f"What D sees: {label}")

    return _figure_png(draw, size=(6.5, 1.35 * len(x) + 0.6))


def _security_png(security: dict[str, SecuritySection]) -> bytes:
    """The security section's plot: success against ε, a panel per attack, a colour per detector.

    Solid lines: the joint attack on f and the detector; dashed: PGD on f alone judged by
    f and the detector; black: PGD on f with no detector. Bars: 95% Wilson intervals.
    """

    def draw(fig):
        axes = fig.subplots(1, len(security), squeeze=False)[0]
        for ax, (label, section) in zip(axes, security.items(), strict=True):
            eps = section.eps
            rows = section.detectors
            first = next(iter(rows.values())).evaluation
            _interval_line(ax, eps, first.undefended, color="black", label="no detector (PGD on f)")
            for i, (kind, row) in enumerate(rows.items()):
                color = f"C{i}"
                _interval_line(ax, eps, row.evaluation.adaptive, color=color, label=f"{kind}: joint attack")
                _interval_line(
                    ax, eps, row.evaluation.unaware, color=color, linestyle="--", label=f"{kind}: PGD on f"
                )
            ax.set_xlabel(f"ε ({section.norm_label})")
            ax.set_ylabel("attack success (f fooled, not flagged)")
            ax.set_ylim(-0.02, 1.02)
            ax.set_title(f"{label} ({section.n_images} images)")
        axes[-1].legend(loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize=7)
        fig.suptitle(f"Security: detectors at {section.fpr:.0%} clean FPR")

    return _figure_png(draw, size=(4.2 * len(security) + 2.5, 3.8))


def _interval_line(ax, eps, rates, **style) -> None:
    values = np.array([r["rate"] for r in rates])
    errors = np.array([[r["rate"] - r["low"] for r in rates], [r["high"] - r["rate"] for r in rates]])
    ax.errorbar(eps, values, yerr=errors, marker="o", markersize=3, capsize=2, linewidth=1.2, **style)


def _figures(results: DetectionResults) -> dict[str, bytes]:
    figures = {"cross_attack.png": _matrix_png(results.cross_attack)}
    for label, matrix in results.cross_eps.items():
        figures[f"cross_eps_{_safe(label)}.png"] = _matrix_png(matrix)
    for label, curves in results.roc.items():
        figures[f"roc_{_safe(label)}.png"] = _roc_png(label, curves)
    if results.security:
        figures["security.png"] = _security_png(results.security)
    return figures


def _safe(label: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in label)


def _markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "| --- |" + " ---: |" * (len(header) - 1)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


_TITLES = {"detection": "Detection experiment", "attention": "Attention under attack"}


def _sections(results: DetectionResults | AttentionResults) -> list[tuple[str, list[str], list[list[str]]]]:
    """The report's tables as (title, header, rows), shared by Markdown and HTML."""
    if isinstance(results, AttentionResults):
        return _attention_sections(results)
    return _detection_sections(results)


def _classifier_section(
    results: DetectionResults | AttentionResults,
) -> tuple[str, list[str], list[list[str]]]:
    f = results.classifier
    return (
        "Classifier",
        ["source", "test accuracy", "fingerprint"],
        [[f.source, f"{f.test_accuracy:.4f}", f.fingerprint[:16]]],
    )


def _attention_sections(results: AttentionResults) -> list[tuple[str, list[str], list[list[str]]]]:
    sections = [_classifier_section(results)]
    rows = []
    for label, info in results.attacks.items():
        rows.append(
            [
                label,
                str(info.n_attacked),
                str(info.n_analysed),
                f"{info.success_rate:.3f}",
                f"{info.mean_l0:.1f}",
                f"{info.mean_linf:.3f}",
            ]
        )
    sections.append(
        (
            "Attacks",
            ["attack", "images attacked", "analysed (fooled f)", "success", "mean L0", "mean L∞"],
            rows,
        )
    )
    rows = []
    for label, info in results.attacks.items():
        for name, m in info.measures.items():
            if m.not_applicable is not None:
                rows.append([label, name, f"n/a: {m.not_applicable}", "n/a"])
                continue
            rows.append([label, name, _interval_text(m.attack), _interval_text(m.control)])
    sections.append(
        (
            "Claims measured (mean, 95% CI; control: the same perturbation at random pixels, and for "
            "gradcam_overlap_adversarial_class the clean image's Grad-CAM for the adversarial class)",
            ["attack", "measure", "adversarial", "control"],
            rows,
        )
    )
    rows = [
        [label, str(row.depth), row.layer, target, *(_interval_text(getattr(getattr(row, target)[name], side),
         count=True) for name in ("rank_correlation", "top_overlap") for side in ("attack", "control"))]
        for label, info in results.attacks.items()
        for row in info.layers or ()
        for target in ("predicted", "true")
    ]  # fmt: skip
    if rows:
        sections.append(
            (
                "Per layer: clean vs adversarial (and control) revised Grad-CAM, input to output, for each "
                "image's predicted class and for the true class (mean, 95% CI, images with a map that ranks)",
                ["attack", "depth", "layer", "class", "rank corr. adv.", "rank corr. control",
                 "top overlap adv.", "top overlap control"],
                rows,
            )
        )  # fmt: skip
    rows = [
        [label, str(row.depth), row.layer, *(_interval_text(getattr(row.feature_change, side), count=True)
         for side in ("attack", "control"))]
        for label, info in results.attacks.items()
        for row in info.layers or ()
    ]  # fmt: skip
    if rows:
        sections.append(
            (
                "Per layer: relative change of the layer's activations, "
                "||A(other) - A(clean)|| / ||A(clean)|| (mean, 95% CI)",
                ["attack", "depth", "layer", "adversarial", "control"],
                rows,
            )
        )
    return sections


def _interval_text(interval: Interval, *, count: bool = False) -> str:
    """An interval as text: `mean [low, high]`, and `, n = images` when `count`.

    `n/a (no image)` when no image defined the measure, `mean [no interval: 1 image]` when one did.
    """
    if interval.mean is None:
        return "n/a (no image)"
    if interval.low is None:  # one image: a mean without an interval
        text = f"{interval.mean:.4f} [no interval: 1 image]"
    else:
        text = f"{interval.mean:.4f} [{interval.low:.4f}, {interval.high:.4f}]"
    return f"{text}, n = {interval.n}" if count else text


def _eps(value) -> str:
    return "—" if value is None else f"{value:.4g}"


def _number(value) -> str:
    return "—" if value is None or value != value else f"{value:.3f}"


def _table1_section(results: DetectionResults) -> tuple[str, list[str], list[list[str]]]:
    """Table 1: a row per attack and recipe of the saliency detector, the image-only detector beside it."""
    image_only = {
        (r.attack, r.detector.replace("image", "saliency", 1)): r.report
        for r in results.comparison
        if r.detector == "image" or r.detector.startswith("image (")
    }
    show_image = bool(image_only)
    header = ["attack", "detector", *(title for _, title in _TABLE1_COLUMNS), "threshold"]
    if show_image:
        header += [title for _, title in _IMAGE_ONLY_COLUMNS]
    rows = []
    for r in results.table1:
        row = [r.attack, r.detector, *(_number(getattr(r.report, key)) for key, _ in _TABLE1_COLUMNS)]
        row.append(r.report.threshold_source)
        if show_image:
            other = image_only.get((r.attack, r.detector))
            row += [_number(getattr(other, key, None)) for key, _ in _IMAGE_ONLY_COLUMNS]
        rows.append(row)
    return "Table 1: classifier and saliency detector", header, rows


def _detection_sections(results: DetectionResults) -> list[tuple[str, list[str], list[list[str]]]]:
    sections = []
    sections.append(_classifier_section(results))
    sections.append(
        (
            "Attacks",
            [
                "attack",
                "ε (Table 1)",
                "f acc. target",
                "f acc. at ε (search)",
                "ε (matrices)",
                "success (test)",
                "mean L0",
                "mean L2",
                "mean L∞",
                "D train images",
            ],
            [
                [
                    label,
                    _eps(a.eps) + ("" if a.eps is None or a.eps_searched else " (given)"),
                    _number(a.eps_target_accuracy),
                    _number(a.eps_search_accuracy),
                    _eps(a.matrix_eps),
                    f"{a.success_rate_test:.3f}",
                    f"{a.mean_l0_test:.1f}",
                    f"{a.mean_l2_test:.3f}",
                    f"{a.mean_linf_test:.3f}",
                    str(a.detector_train_size),
                ]
                for label, a in results.attacks.items()
            ],
        )
    )
    sections.append(_table1_section(results))
    if any(r.detector != "saliency" for r in results.comparison):
        sections.append(
            (
                "Detectors compared",
                ["attack", "detector", *_COMPARED_TITLES, "threshold"],
                [
                    [
                        r.attack,
                        r.detector,
                        *(_number(getattr(r.report, k)) for k in _COMPARED),
                        r.report.threshold_source,
                    ]
                    for r in results.comparison
                ],
            )
        )
    matrices = [("Cross-attack generalization (D accuracy)", results.cross_attack)]
    for label, m in results.cross_eps.items():
        matrices.append((f"Cross-ε generalization: {label}", m))
    for title, m in matrices:
        sections.append(
            (
                title,
                ["trained on \\ tested on", *m.test_labels],
                [
                    [label, *(f"{v:.3f}" for v in row)]
                    for label, row in zip(m.train_labels, m.values, strict=True)
                ],
            )
        )
    sections += _security_sections(results.security or {})
    adaptive = results.adaptive
    if adaptive is not None:
        sections.append(
            (
                f"Detector-aware attack on the {adaptive.attack} detector "
                f"(ε = {adaptive.eps:.4g}, {adaptive.n_images} images)",
                ["σ", "detection rate", "f accuracy"],
                [
                    [f"{r['sigma']:g}", f"{r['detection_rate']:.3f}", f"{r['f_accuracy']:.3f}"]
                    for r in adaptive.rows
                ],
            )
        )
    return sections


def _rate_text(rate: dict[str, float]) -> str:
    return f"{rate['rate']:.2f} [{rate['low']:.2f}, {rate['high']:.2f}]"


def _security_sections(security: dict[str, SecuritySection]) -> list[tuple[str, list[str], list[list[str]]]]:
    """A table per attack (success of each attacker at each ε) and one of the sanity checks."""
    sections, checks = [], []
    for label, section in security.items():
        norm = section.norm_label
        if section.eps_from != label:  # an attack without an Lp ball borrows one
            norm += f" at {section.eps_from}'s ε"
        eps = [f"{e:.3g}" for e in section.eps]
        header = ["detector", "ROC AUC", "TPR @ 1% FPR", "TPR @ 5% FPR"]
        header += [f"{kind} ε={e}" for e in eps for kind in ("PGD on f", "joint")]
        first = next(iter(section.detectors.values())).evaluation
        rows = [["none", "—", "—", "—", *(t for r in first.undefended for t in (_rate_text(r), "—"))]]
        for kind, row in section.detectors.items():
            pairs = zip(row.evaluation.unaware, row.evaluation.adaptive, strict=True)
            rows.append(
                [
                    kind,
                    *(_number(v) for v in (row.roc_auc, row.tpr_at_1_fpr, row.tpr_at_5_fpr)),
                    *(_rate_text(r) for pair in pairs for r in pair),
                ]
            )
            for c in row.evaluation.checks:
                verdict = "passed" if c.passed else "FAILED"
                numbers = (f"{c.eps:.3g}", f"{c.value:.3f}", f"{c.reference:.3f}", f"{c.p_value:.3g}")
                checks.append([label, kind, c.name, *numbers, verdict])
        sections.append(
            (
                f"Security: {label} ({norm}, {section.n_images} images, {section.nb_iter} steps, "
                f"{section.restarts} restart(s); detectors flag {section.fpr:.0%} of "
                f"{section.n_calibration} held-out clean images)",
                header,
                rows,
            )
        )
    if checks:
        header = ["attack", "detector", "check", "ε", "success", "compared with", "p", "verdict"]
        sections.append(("Security: sanity checks", header, checks))
    return sections


def _notes(results: DetectionResults | AttentionResults, title: str) -> list[str]:
    """Text printed under a table: which threshold its columns use."""
    from saliency_detect.evaluation._report import THRESHOLD_NOTE

    if isinstance(results, DetectionResults) and (
        title.startswith("Table 1") or title == "Detectors compared"
    ):
        return [THRESHOLD_NOTE]
    if title.startswith("Security: sanity"):
        return [SANITY_NOTE]
    if title.startswith("Security"):
        return [SECURITY_NOTE]
    return []


def tables_markdown(results: DetectionResults | AttentionResults) -> str:
    """Render an experiment's results (`run_experiment`'s or `run_explain`'s) as Markdown tables.

    Args:
        results: what `run_experiment` or `run_explain` returned, or a finished run's
            `results.json` read back with `load_results`.

    Returns:
        The Markdown of the run's `tables.md`.

    Raises:
        TypeError: if `results` is neither (a dict read from `results.json` must go
            through `load_results` or the results type's `from_dict` first).
    """
    if not isinstance(results, (DetectionResults, AttentionResults)):
        raise TypeError(
            "`results` must be a DetectionResults or AttentionResults (what run_experiment and run_explain "
            f"return; `load_results(path)` reads a results.json). Received: {type(results).__name__}"
        )
    parts = [f"# {_TITLES[results.experiment]}", ""]
    for title, header, rows in _sections(results):
        parts += [f"## {title}", "", _markdown_table(header, rows), ""]
        notes = _notes(results, title)
        parts += [*notes, ""] if notes else []
    return "\n".join(parts)


_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 70em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
th { background: #f2f2f2; }
figure { display: inline-block; margin: 0.5em; }
figcaption { text-align: center; font-size: 0.9em; }
pre { background: #f6f6f6; padding: 0.8em; overflow-x: auto; font-size: 0.85em; }
"""


def report_html(results: DetectionResults | AttentionResults, figures: dict[str, bytes]) -> str:
    """Render a self-contained HTML report: tables, embedded PNG figures, config and versions."""
    e = html.escape
    title = _TITLES[results.experiment]
    body = [f"<h1>{e(title)}</h1>"]
    body.append(
        f"<p>Data set <code>{e(results.config.dataset)}</code>; total time "
        f"{results.timings.get('total', 0):.0f} s; "
        f"saliency_detect {e(results.versions['saliency_detect'])}.</p>"
    )
    for title, header, rows in _sections(results):
        body.append(f"<h2>{e(title)}</h2><table><thead><tr>")
        body.append("".join(f"<th>{e(h)}</th>" for h in header) + "</tr></thead><tbody>")
        for row in rows:
            body.append("<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>")
        body.append("</tbody></table>")
        body += [f'<p class="note">{e(note)}</p>' for note in _notes(results, title)]
    body.append("<h2>Figures</h2>")
    for name, png in figures.items():
        data = base64.b64encode(png).decode("ascii")
        body.append(
            f'<figure><img src="data:image/png;base64,{data}" alt="{e(name)}">'
            f"<figcaption>{e(name)}</figcaption></figure>"
        )
    body.append("<h2>Configuration</h2><pre>" + e(json.dumps(results.config.to_dict(), indent=2)) + "</pre>")
    body.append("<h2>Versions</h2><pre>" + e(json.dumps(results.versions, indent=2)) + "</pre>")
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>saliency_detect: {e(title.lower())}</title>"
        f"<style>{_CSS}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n"
    )


def write_outputs(results: Results, out: Path, figures: dict[str, bytes] | None = None) -> Results:
    """Write `results.json`, `tables.md`, the PNG figures and `report.html` into `out`.

    `figures` maps file names to PNG bytes; None draws the detection experiment's.
    Returns `results` with `files` naming what was written.
    """
    figures = _figures(results) if figures is None else figures
    files = {"results": "results.json", "tables": "tables.md", "report": "report.html"}
    files.update({name.removesuffix(".png"): name for name in figures})
    results = dataclasses.replace(results, files=files)
    for name, png in figures.items():
        atomic_write_bytes(out / name, png)
    atomic_write_text(out / "tables.md", tables_markdown(results))
    atomic_write_text(out / "report.html", report_html(results, figures))
    results.save(out / "results.json")
    return results
