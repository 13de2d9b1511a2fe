"""The model zoo of the papers, training, saving and loading.

Classifiers built here return **logits**. Functions across the library that need a
classifier's class scores also accept user models ending in a softmax: they read the
pre-softmax output through `logits_model`. `pretrained(name)` loads a trained classifier
shipped inside the package (offline), its model card in `pretrained_info(name)`.
"""

from saliency_detect.models._io import (
    ends_in_softmax,
    load_model,
    logits_model,
    model_fingerprint,
    save_model,
)
from saliency_detect.models._pretrained import (
    available_pretrained,
    pretrained,
    pretrained_for,
    pretrained_info,
)
from saliency_detect.models._training import (
    CLASSIFIER_RECIPES,
    FAST_DEFAULTS,
    PAPER_DEFAULTS,
    classifier_accuracy,
    paper_classifier,
    paper_defaults,
    predict_labels,
    recipe_defaults,
    train_classifier,
)
from saliency_detect.models._zoo import (
    available_models,
    cifar10_net_d,
    cifar10_net_f,
    get_model_builder,
    mnist_net_d,
    mnist_net_f,
    resnet20,
    vgg16_d,
    vgg16_f,
)

__all__ = [
    "CLASSIFIER_RECIPES",
    "FAST_DEFAULTS",
    "PAPER_DEFAULTS",
    "available_models",
    "available_pretrained",
    "cifar10_net_d",
    "cifar10_net_f",
    "classifier_accuracy",
    "ends_in_softmax",
    "get_model_builder",
    "load_model",
    "logits_model",
    "mnist_net_d",
    "mnist_net_f",
    "model_fingerprint",
    "paper_classifier",
    "paper_defaults",
    "predict_labels",
    "pretrained",
    "pretrained_for",
    "pretrained_info",
    "recipe_defaults",
    "resnet20",
    "save_model",
    "train_classifier",
    "vgg16_d",
    "vgg16_f",
]
