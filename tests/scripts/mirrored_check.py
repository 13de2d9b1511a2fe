"""Run under two logical CPU devices and print what the MirroredStrategy test checks, as JSON.

Logical devices must be configured before TensorFlow starts, so `tests/test_distribute.py`
runs this file in a fresh process.
"""

import json
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import keras  # noqa: E402

from saliency_detect import _batching  # noqa: E402
from saliency_detect._batching import map_batches  # noqa: E402
from saliency_detect.attacks import generate_adversarial_set, load_adversarial_set  # noqa: E402
from saliency_detect.data import load_dataset  # noqa: E402
from saliency_detect.detector import SaliencyDetector  # noqa: E402
from saliency_detect.models import mnist_net_f, train_classifier  # noqa: E402


def mirrored(variable) -> bool:
    return isinstance(getattr(variable, "value", variable), tf.distribute.DistributedValues)


strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
out = Path(tempfile.mkdtemp())
ds = load_dataset("mnist-sample", train_size=512, test_size=128)
report = {"replicas": strategy.num_replicas_in_sync}

# map_batches: each batch split over both replicas, results in input order.
signature = [tf.TensorSpec([None], tf.float32)]


@tf.function(input_signature=signature)
def replica_ids(values):
    replica = tf.distribute.get_replica_context().replica_id_in_sync_group
    return tf.fill(tf.shape(values), tf.cast(replica, tf.float32)), values * 2


with strategy.scope():
    ids, doubled = map_batches(replica_ids, (np.arange(10, dtype=np.float32),), 4)
report["replica_ids"] = ids.tolist()
report["order_kept"] = bool(np.array_equal(doubled, np.arange(10) * 2))

# f: a model built outside the scope (trained through a twin) and one built inside it.
keras.utils.set_random_seed(0)
outside = mnist_net_f()
before = outside.get_weights()[0].copy()
history = train_classifier(outside, ds, epochs=1, verbose=0, random_state=0, strategy=strategy)
report["outside_changed"] = not np.allclose(before, outside.get_weights()[0])
report["outside_loss"] = history.history["loss"][-1]
with strategy.scope():
    inside = mnist_net_f()
history = train_classifier(inside, ds, epochs=1, verbose=0, random_state=0)  # no strategy=: the model's own
report["inside_mirrored"] = (
    all(mirrored(v) for v in inside.weights) and inside.distribute_strategy is strategy
)
report["inside_loss"] = history.history["loss"][-1]
try:
    train_classifier(inside, ds, epochs=1, verbose=0, batch_size=127, strategy=strategy)
    report["odd_batch_error"] = ""
except ValueError as error:
    report["odd_batch_error"] = str(error)
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    small = load_dataset("mnist-sample", train_size=101, test_size=16)
    train_classifier(mnist_net_f(), small, epochs=1, verbose=0, strategy=strategy)
report["trim_warning"] = " ".join(str(w.message) for w in caught)

# An FGSM set generated on both replicas equals the single-device one.
x = ds.x_test[:100]
single = generate_adversarial_set(
    outside, x, None, "fgsm", {"eps": 0.1}, out / "one.h5", chunk_size=32, verbose=False
)
multi = generate_adversarial_set(
    outside, x, None, "fgsm", {"eps": 0.1}, out / "two.h5", chunk_size=32, verbose=False, strategy=strategy
)
a, b = load_adversarial_set(single), load_adversarial_set(multi)
report["fgsm_max_difference"] = float(np.abs(a.x_adv - b.x_adv).max())
report["fgsm_labels_equal"] = bool(np.array_equal(a.y_adv, b.y_adv))

# D: fitted under the strategy; scoring on both replicas equals scoring on one device.
det = SaliencyDetector(outside, epochs=2, verbose=0, random_state=0, strategy=strategy).fit(x, a.x_adv)
report["detector_mirrored"] = all(mirrored(v) for v in det.detector_.weights)
report["detector_loss"] = det.history_["loss"]
distributed = det.decision_function(x)
# A dataset is scored through the detector's one compiled, distributed scorer: the first
# dataset call traces it for its batch shape, the second reuses it.
scorer = next(fn for key, fn in det._compiled_steps[2].items() if key[0] == "decision_function")
run = _batching._DISTRIBUTED[scorer][strategy]
traces = [run.experimental_get_tracing_count()]
for _ in range(2):
    streamed = det.decision_function(tf.data.Dataset.from_tensor_slices(x).batch(16))
    traces.append(run.experimental_get_tracing_count())
report["dataset_traces"] = traces
report["dataset_score_max_difference"] = float(np.abs(distributed - streamed).max())
det.set_params(strategy=tf.distribute.OneDeviceStrategy("/cpu:0"))
report["score_max_difference"] = float(np.abs(distributed - det.decision_function(x)).max())

json.dump(report, sys.stdout)
