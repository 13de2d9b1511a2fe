"""Saliency and attribution: one signature for every method, maps of the input's size.

Every method is called as `method(model, x, *, target="predicted", labels=None,
batch_size=64, **options)` on images (N, H, W, C) and returns float32 NumPy maps of the
input's height and width. The class score is the pre-softmax logit; the user's model is
never modified. `target` selects the class explained: `"predicted"`, `"true"` (with
`labels=`) or explicit class indices (e.g. the adversarial class).

Comparison measures live in `saliency_detect.saliency.metrics`.
"""

from saliency_detect.saliency import metrics
from saliency_detect.saliency._gradcam import grad_cam, grad_cam_layers
from saliency_detect.saliency._gradient import (
    deconvnet,
    gradient,
    guided_backprop,
    integrated_gradients,
    smoothgrad,
)
from saliency_detect.saliency._registry import available_methods, saliency_fn
from saliency_detect.saliency._sanity import SanityCheckResult, sanity_check

__all__ = [
    "SanityCheckResult",
    "available_methods",
    "deconvnet",
    "grad_cam",
    "grad_cam_layers",
    "gradient",
    "guided_backprop",
    "integrated_gradients",
    "metrics",
    "saliency_fn",
    "sanity_check",
    "smoothgrad",
]
