"""One worker of the two-process MultiWorkerMirroredStrategy test; TF_CONFIG comes from the parent.

Usage: multiworker_worker.py CLASSIFIER.keras DATA.npz OUT.npz
"""

import sys

import numpy as np
import tensorflow as tf

# A multi-worker strategy must exist before any other TensorFlow work.
strategy = tf.distribute.MultiWorkerMirroredStrategy()

from saliency_detect.detector import SaliencyDetector  # noqa: E402
from saliency_detect.models import load_model  # noqa: E402

classifier_path, data_path, out_path = sys.argv[1:4]
f = load_model(classifier_path, compile=False)
data = np.load(data_path)
det = SaliencyDetector(
    f, epochs=1, batch_size=32, validation_split=0.0, random_state=0, strategy=strategy, verbose=0
).fit(data["x_clean"], data["x_adv"])
np.savez(
    out_path,
    scores=det.decision_function(data["x_clean"][:16]),
    loss=np.asarray(det.history_["loss"]),
    weights=np.concatenate([w.ravel() for w in det.detector_.get_weights()]),
    replicas=strategy.num_replicas_in_sync,
)
