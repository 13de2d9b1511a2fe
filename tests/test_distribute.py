"""tf.distribute strategies, streaming from HDF5 and mixed precision.

Strategies over several devices need TensorFlow configured before it starts, so those
checks run scripts from `tests/scripts/` in fresh processes: two logical CPU devices
for `MirroredStrategy`, two local worker processes on loopback for
`MultiWorkerMirroredStrategy`.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import types
from pathlib import Path

import h5py
import numpy as np
import pytest

SCRIPTS = Path(__file__).parent / "scripts"


def _run_script(args, *, env=None, timeout=600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})},
    )


# ---------------------------------------------------------------- MirroredStrategy
@pytest.fixture(scope="module")
def mirrored_report() -> dict:
    done = _run_script([SCRIPTS / "mirrored_check.py"])
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_map_batches_splits_each_batch_over_the_replicas_in_order(mirrored_report):
    assert mirrored_report["replicas"] == 2
    # batches of 4, 4 and 2: each split in two contiguous halves, one per replica
    assert mirrored_report["replica_ids"] == [0, 0, 1, 1, 0, 0, 1, 1, 0, 1]
    assert mirrored_report["order_kept"]


def test_train_classifier_under_mirrored_strategy(mirrored_report):
    # built outside the scope: trained through a twin, weights copied back
    assert mirrored_report["outside_changed"]
    assert np.isfinite(mirrored_report["outside_loss"])
    # built inside the scope: trained in place on mirrored variables
    assert mirrored_report["inside_mirrored"]
    assert np.isfinite(mirrored_report["inside_loss"])


def test_batch_size_must_split_over_replicas(mirrored_report):
    assert "multiple of the number of replicas (2)" in mirrored_report["odd_batch_error"]
    assert "batch_size=127" in mirrored_report["odd_batch_error"]
    assert "Training on 100 of 101 images" in mirrored_report["trim_warning"]


def test_fgsm_set_on_two_replicas_equals_single_device(mirrored_report):
    assert mirrored_report["fgsm_max_difference"] <= 1e-6
    assert mirrored_report["fgsm_labels_equal"]


def test_detector_fits_and_scores_under_mirrored_strategy(mirrored_report):
    assert mirrored_report["detector_mirrored"]
    assert all(np.isfinite(mirrored_report["detector_loss"]))
    assert mirrored_report["score_max_difference"] <= 1e-5
    assert mirrored_report["dataset_score_max_difference"] <= 1e-5


def test_scoring_datasets_reuses_one_distributed_scorer(mirrored_report):
    first, after_one, after_two = mirrored_report["dataset_traces"]
    assert after_one > first  # the dataset went through the scorer's cached function
    assert after_two == after_one  # and a second dataset did not retrace it


# ---------------------------------------------------------------- MultiWorkerMirroredStrategy
def _free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def test_two_workers_on_loopback_train_one_detector_and_agree(tmp_path, mnist_sample):
    from saliency_detect.models import mnist_net_f, save_model

    save_model(mnist_net_f(), tmp_path / "f.keras")
    x = mnist_sample.x_test[:64]
    np.savez(tmp_path / "data.npz", x_clean=x, x_adv=np.clip(x + 0.3, 0, 1))
    cluster = {"worker": [f"127.0.0.1:{port}" for port in _free_ports(2)]}
    workers = []
    for index in range(2):
        config = {"cluster": cluster, "task": {"type": "worker", "index": index}}
        workers.append(
            subprocess.Popen(
                [
                    sys.executable,
                    str(SCRIPTS / "multiworker_worker.py"),
                    str(tmp_path / "f.keras"),
                    str(tmp_path / "data.npz"),
                    str(tmp_path / f"worker{index}.npz"),
                ],
                env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "TF_CONFIG": json.dumps(config)},
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    try:
        outputs = [w.communicate(timeout=600) for w in workers]
    finally:
        for w in workers:
            w.kill()
    for w, (_, err) in zip(workers, outputs, strict=True):
        assert w.returncode == 0, err[-3000:]
    first, second = (np.load(tmp_path / f"worker{i}.npz") for i in range(2))
    assert int(first["replicas"]) == 2
    assert np.isfinite(first["loss"]).all()
    np.testing.assert_allclose(first["weights"], second["weights"], atol=1e-6)
    np.testing.assert_allclose(first["scores"], second["scores"], atol=1e-6)


# ---------------------------------------------------------------- helpers, in process
def test_resolve_strategy_and_make_strategy():
    import tensorflow as tf

    from saliency_detect._distribute import make_strategy, resolve_strategy
    from saliency_detect.models import mnist_net_f

    assert resolve_strategy(None) is tf.distribute.get_strategy()
    assert resolve_strategy(None, mnist_net_f()) is tf.distribute.get_strategy()  # built outside any scope
    one = tf.distribute.OneDeviceStrategy("/cpu:0")
    assert resolve_strategy(one) is one
    with pytest.raises(TypeError, match=r"tf\.distribute\.Strategy"):
        resolve_strategy("mirrored")
    assert make_strategy("default") is tf.distribute.get_strategy()
    with pytest.raises(ValueError, match="one of"):
        make_strategy("tpu-pod")


def test_training_rows_without_replicas_keeps_everything():
    from saliency_detect._distribute import training_rows

    assert training_rows(types.SimpleNamespace(num_replicas_in_sync=1), 127, 13) == 13


def test_worker_output_names_non_chief_workers():
    from saliency_detect.cli._strategy import worker_output

    def strategy(task_type, task_id, cluster):
        spec = types.SimpleNamespace(as_dict=lambda: cluster)
        resolver = types.SimpleNamespace(task_type=task_type, task_id=task_id, cluster_spec=lambda: spec)
        return types.SimpleNamespace(cluster_resolver=resolver)

    workers = {"worker": ["a:1", "b:2"]}
    assert worker_output(Path("run"), types.SimpleNamespace()) == Path("run")
    assert worker_output(Path("run"), strategy("worker", 0, workers)) == Path("run")
    assert worker_output(Path("f.keras"), strategy("worker", 1, workers)) == Path("f-worker-1.keras")
    with_chief = {"chief": ["c:0"], **workers}
    assert worker_output(Path("run"), strategy("chief", 0, with_chief)) == Path("run")
    assert worker_output(Path("run"), strategy("worker", 0, with_chief)) == Path("run-worker-0")


def test_cli_strategy_flags(tmp_path, capsys):
    import tensorflow as tf

    from saliency_detect.cli import main

    with pytest.raises(SystemExit):
        main(["train", "--strategy", "tpu", "--dataset", "mnist-sample"])
    assert "invalid choice" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # attacks are not split across machines: no multiworker
        main(
            ["attack", "--model", "m.keras", "--attack", "fgsm", "--out", "a.h5", "--strategy", "multiworker"]
        )
    capsys.readouterr()
    if not tf.config.list_physical_devices("GPU"):
        code = main(
            ["train", "--dataset", "mnist-sample", "--mixed-precision", "--out", str(tmp_path / "f.keras")]
        )
        assert code == 2
        assert "--mixed-precision needs a GPU" in capsys.readouterr().err


def test_detector_strategy_is_a_parameter_not_saved(tmp_path, trained_mnist_f, mnist_sample):
    import tensorflow as tf

    from saliency_detect.detector import SaliencyDetector

    x = mnist_sample.x_test[:32]
    one = tf.distribute.OneDeviceStrategy("/cpu:0")
    det = SaliencyDetector(trained_mnist_f, epochs=1, verbose=0, random_state=0, strategy=one)
    assert det.get_params()["strategy"] is one
    det.fit(x, np.clip(x + 0.3, 0, 1))
    det.save(tmp_path / "det")
    saved = json.loads((tmp_path / "det" / "config.json").read_text())
    assert "strategy" not in saved["params"]
    with pytest.raises(TypeError, match=r"tf\.distribute\.Strategy"):
        SaliencyDetector(trained_mnist_f, strategy="mirrored").fit(x, x)


# ---------------------------------------------------------------- streaming from HDF5
def _write(path: Path, key: str, array: np.ndarray) -> Path:
    with h5py.File(path, "w") as file:
        file[key] = array
    return path


def test_hdf5_dataset_streams_the_images_in_order(tmp_path, mnist_sample):
    from saliency_detect.data import hdf5_dataset

    x = mnist_sample.x_test[:50]
    path = _write(tmp_path / "x.h5", "x", x)
    streamed = np.concatenate([b.numpy() for b in hdf5_dataset(path, block_size=16).batch(7)])
    np.testing.assert_array_equal(streamed, x)
    images, labels = next(iter(hdf5_dataset(path, label=1, block_size=16).batch(50)))
    assert images.shape == (50, 28, 28, 1) and set(labels.numpy().tolist()) == {1.0}
    assert int(hdf5_dataset(path).cardinality()) == 50


def test_hdf5_dataset_errors(tmp_path, mnist_sample):
    import tensorflow as tf

    from saliency_detect.data import hdf5_dataset

    with pytest.raises(FileNotFoundError, match="No HDF5 file"):
        hdf5_dataset(tmp_path / "missing.h5")
    (tmp_path / "junk.h5").write_bytes(b"not hdf5 at all")
    with pytest.raises(ValueError, match="not a readable HDF5 file"):
        hdf5_dataset(tmp_path / "junk.h5")
    path = _write(tmp_path / "x.h5", "images", mnist_sample.x_test[:4])
    with pytest.raises(ValueError, match=r"no dataset 'x'; it holds \['images'\]"):
        hdf5_dataset(path, "x")
    with pytest.raises(ValueError, match="floating-point"):
        hdf5_dataset(_write(tmp_path / "u8.h5", "x", np.zeros((4, 28, 28, 1), np.uint8)))
    bad = mnist_sample.x_test[:8].copy()
    bad[6, 0, 0, 0] = np.nan  # in the second block: reported when that block is read
    stream = hdf5_dataset(_write(tmp_path / "nan.h5", "x", bad), block_size=4)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"\[4:8\].*NaN"):
        list(stream)


def test_generate_from_hdf5_source_equals_in_memory(tmp_path, trained_mnist_f, mnist_sample):
    from saliency_detect.attacks import generate_adversarial_set, load_adversarial_set

    x, y = mnist_sample.x_test[:40], mnist_sample.y_test[:40]
    source = _write(tmp_path / "clean.h5", "x", x)
    in_memory = generate_adversarial_set(
        trained_mnist_f, x, y, "fgsm", {"eps": 0.2}, tmp_path / "a.h5", chunk_size=16, verbose=False
    )
    with h5py.File(source, "r") as file:
        streamed = generate_adversarial_set(
            trained_mnist_f,
            file["x"],
            y,
            "fgsm",
            {"eps": 0.2},
            tmp_path / "b.h5",
            chunk_size=16,
            verbose=False,
        )
        # the same images from disk have the same fingerprint: the in-memory file is reused
        assert (
            generate_adversarial_set(
                trained_mnist_f, file["x"], y, "fgsm", {"eps": 0.2}, in_memory, chunk_size=16, verbose=False
            )
            == in_memory
        )
    np.testing.assert_array_equal(load_adversarial_set(streamed).x_adv, load_adversarial_set(in_memory).x_adv)


def test_generate_from_hdf5_source_reports_bad_chunk(tmp_path, trained_mnist_f, mnist_sample):
    from saliency_detect.attacks import generate_adversarial_set

    x = mnist_sample.x_test[:20].copy()
    x[17] = 2.0
    source = _write(tmp_path / "clean.h5", "x", x)
    with h5py.File(source, "r") as file, pytest.raises(ValueError, match=r"x\[16:20\].*\[0(\.0)?, 1(\.0)?\]"):
        generate_adversarial_set(
            trained_mnist_f,
            file["x"],
            None,
            "fgsm",
            {"eps": 0.2},
            tmp_path / "a.h5",
            chunk_size=8,
            verbose=False,
        )
    flat = _write(tmp_path / "flat.h5", "x", np.zeros((5, 784), np.float32))
    with h5py.File(flat, "r") as file, pytest.raises(ValueError, match="rank 4"):
        generate_adversarial_set(trained_mnist_f, file["x"], None, "fgsm", {"eps": 0.2}, tmp_path / "b.h5")


def test_detector_trains_from_hdf5_streams(tmp_path, trained_mnist_f, mnist_sample):
    import tensorflow as tf

    from saliency_detect.data import hdf5_dataset
    from saliency_detect.detector import SaliencyDetector

    x = mnist_sample.x_test[:64]
    clean = hdf5_dataset(_write(tmp_path / "clean.h5", "x", x), label=0, block_size=16)
    adversarial = hdf5_dataset(_write(tmp_path / "adv.h5", "x_adv", np.clip(x + 0.3, 0, 1)), "x_adv", label=1)
    pairs = tf.data.Dataset.sample_from_datasets([clean, adversarial], seed=0)
    pairs = pairs.apply(tf.data.experimental.assert_cardinality(128)).shuffle(32, seed=0).batch(16)
    det = SaliencyDetector(trained_mnist_f, epochs=3, learning_rate=1e-3, verbose=0, random_state=0).fit(
        pairs
    )
    assert det.score(x, np.zeros(len(x))) > 0.5 and det.score(np.clip(x + 0.3, 0, 1), np.ones(len(x))) > 0.5


# ---------------------------------------------------------------- mixed precision
@pytest.mark.parametrize("method", ["gradient", "guided_backprop", "grad_cam"])
def test_saliency_of_a_mixed_precision_model_is_computed_in_float32(method):
    import keras

    from saliency_detect import saliency
    from saliency_detect.models import mnist_net_f

    keras.utils.set_random_seed(0)
    keras.mixed_precision.set_dtype_policy("mixed_bfloat16")
    try:
        mixed = mnist_net_f()
    finally:
        keras.mixed_precision.set_dtype_policy("float32")
    reference = mnist_net_f()
    reference.set_weights(mixed.get_weights())
    x = np.random.default_rng(0).random((4, 28, 28, 1), dtype=np.float32)
    assert mixed(x).dtype == "bfloat16"  # the model itself computes in reduced precision
    maps = getattr(saliency, method)(mixed, x)
    assert maps.dtype == np.float32
    np.testing.assert_allclose(maps, getattr(saliency, method)(reference, x), rtol=1e-5, atol=1e-7)


def test_cli_train_and_attack_under_mirrored_strategy(tmp_path):
    from saliency_detect.attacks import load_adversarial_set
    from saliency_detect.cli import main

    model = tmp_path / "f.keras"
    common = ["--dataset", "mnist-sample", "--strategy", "mirrored"]
    assert (
        main(
            [
                "train",
                *common,
                "--train-size",
                "256",
                "--test-size",
                "64",
                "--epochs",
                "1",
                "--out",
                str(model),
            ]
        )
        == 0
    )
    assert model.is_file()
    out = tmp_path / "fgsm.h5"
    assert (
        main(
            [
                "attack",
                "--model",
                str(model),
                *common,
                "--attack",
                "fgsm",
                "--eps",
                "0.2",
                "--size",
                "32",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    adversarial = load_adversarial_set(out)
    assert adversarial.x_adv.shape == (32, 28, 28, 1) and adversarial.linf.max() <= 0.2 + 1e-6


def test_generate_from_a_memmap_reads_chunks_and_equals_in_memory(
    tmp_path, trained_mnist_f, mnist_sample, monkeypatch
):
    import sys

    from saliency_detect.attacks import generate_adversarial_set, load_adversarial_set

    generate = sys.modules["saliency_detect.attacks._generate"]
    checked = []

    def spy(images, **kwargs):
        checked.append(len(images))
        return check(images, **kwargs)

    check = generate.check_images

    x = mnist_sample.x_test[:24]
    on_disk = np.lib.format.open_memmap(tmp_path / "x.npy", mode="w+", dtype=np.float32, shape=x.shape)
    on_disk[:] = x
    on_disk.flush()
    mapped = np.load(tmp_path / "x.npy", mmap_mode="r")
    args = (None, "fgsm", {"eps": 0.2})
    monkeypatch.setattr(generate, "check_images", spy)
    streamed = generate_adversarial_set(
        trained_mnist_f, mapped, *args, tmp_path / "a.h5", chunk_size=8, verbose=False
    )
    assert checked and max(checked) <= 8, "a memory map is validated chunk by chunk, never loaded whole"
    in_memory = generate_adversarial_set(
        trained_mnist_f, x, *args, tmp_path / "b.h5", chunk_size=8, verbose=False
    )
    np.testing.assert_array_equal(load_adversarial_set(streamed).x_adv, load_adversarial_set(in_memory).x_adv)


def test_experiments_refuse_a_strategy_that_is_not_one(tmp_path):
    from saliency_detect.experiments import ExplainConfig, demo_config, run_experiment, run_explain

    with pytest.raises(TypeError, match=r"tf\.distribute\.Strategy"):
        run_experiment(demo_config(), tmp_path / "a", strategy="mirrored")
    with pytest.raises(TypeError, match=r"tf\.distribute\.Strategy"):
        run_explain(ExplainConfig(), tmp_path / "b", strategy="mirrored")
