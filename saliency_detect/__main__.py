"""`python -m saliency_detect` runs the `saliency-detect` command."""

from saliency_detect.cli import main

raise SystemExit(main())
