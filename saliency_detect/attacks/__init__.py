"""Adversarial attacks, one module per attack, with shared keyword names and defaults.

Every attack is `attack(model, x, y=None, *, ...)` and returns adversarial images of the
same shape and dtype as `x`, inside `clip_range`. Shared keywords, in this order and with
these defaults wherever an attack takes them: `eps`, `norm=np.inf`,
`clip_range=(0.0, 1.0)`, `targeted=False`, `batch_size=128`, `random_state=None`. `y=None`
means the model's own predictions; `targeted=True` takes `y` as the target classes.

`detector_aware` (Metzen et al.'s adaptive adversary) and `joint_pgd` (Carlini & Wagner's
joint attack on a classifier and its detector) also take a fitted detector, so they are
not in the by-name registry.
"""

from saliency_detect._registry import REQUIRED
from saliency_detect.attacks._generate import AdversarialSet, generate_adversarial_set, load_adversarial_set
from saliency_detect.attacks._registry import available_attacks, get_attack
from saliency_detect.attacks.bim import bim
from saliency_detect.attacks.carlini_wagner_l2 import carlini_wagner_l2
from saliency_detect.attacks.detector_aware import detector_aware
from saliency_detect.attacks.fgsm import fgsm
from saliency_detect.attacks.iterative_l2 import iterative_l2
from saliency_detect.attacks.joint_pgd import joint_pgd
from saliency_detect.attacks.jsma import jsma
from saliency_detect.attacks.minimal_epsilon import MinimalEpsilon, minimal_epsilon
from saliency_detect.attacks.pgd import pgd
from saliency_detect.attacks.pixel_attack import pixel_attack

__all__ = [
    "REQUIRED",
    "AdversarialSet",
    "MinimalEpsilon",
    "available_attacks",
    "bim",
    "carlini_wagner_l2",
    "detector_aware",
    "fgsm",
    "generate_adversarial_set",
    "get_attack",
    "iterative_l2",
    "joint_pgd",
    "jsma",
    "load_adversarial_set",
    "minimal_epsilon",
    "pgd",
    "pixel_attack",
]
