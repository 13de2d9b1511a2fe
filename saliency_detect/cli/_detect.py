"""`saliency-detect detect`: score image files with a saved detector, as CSV."""

from __future__ import annotations

import argparse
import csv
import io
import sys
from pathlib import Path

from saliency_detect.cli._arguments import output_file, positive_int


def add_parser(subparsers) -> None:
    """Declare the `detect` subcommand."""
    p = subparsers.add_parser(
        "detect",
        help="score images (files, a folder or an .npz) with a saved detector; CSV out",
        description=(
            "Load a detector saved by SaliencyDetector.save (or `reproduce`), classify each "
            "image with its classifier and score it: CSV columns file, label, "
            "adversarial_score (probability), flag (1 = adversarial). Files that cannot be "
            "read are reported on stderr and skipped."
        ),
    )
    p.add_argument("--detector", required=True, help="the saved detector folder")
    p.add_argument("--images", required=True, help="an image file, a folder of images, or an .npz")
    p.add_argument(
        "--classifier",
        default=None,
        help="the classifier (.keras), if the detector folder does not hold one",
    )
    p.add_argument("--out", default=None, type=output_file, help="write the CSV here (default: print it)")
    p.add_argument(
        "--batch-size", type=positive_int, default=256, help="images scored per step (default: %(default)s)"
    )
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Score the images; exit 0 if every image was scored, 1 if some could not be read."""
    from saliency_detect._files import atomic_write_text
    from saliency_detect.data import read_images
    from saliency_detect.detector import GuardedClassifier, SaliencyDetector
    from saliency_detect.models import load_model

    classifier = load_model(args.classifier, compile=False) if args.classifier else None
    detector = SaliencyDetector.load(args.detector, classifier=classifier)
    names, images, errors = read_images(args.images, detector.input_shape_)
    for name, reason in errors:
        print(f"saliency-detect detect: skipped {name}: {reason}", file=sys.stderr)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["file", "label", "adversarial_score", "flag"])
    flagged = 0
    if len(images):
        guard = GuardedClassifier(detector.classifier, detector, batch_size=args.batch_size)
        prediction = guard.predict(images)
        flagged = int(prediction.flags.sum())
        for name, label, score, flag in zip(
            names, prediction.labels, prediction.scores, prediction.flags, strict=True
        ):
            writer.writerow([name, int(label), f"{float(score):.6f}", int(flag)])
    if args.out:
        atomic_write_text(Path(args.out), buffer.getvalue())
    else:
        sys.stdout.write(buffer.getvalue())
    print(
        f"Scored {len(names)} image(s): {flagged} flagged as adversarial; {len(errors)} unreadable"
        + (f"; CSV written to {args.out}" if args.out else ""),
        file=sys.stderr,
    )
    return 1 if errors else 0
