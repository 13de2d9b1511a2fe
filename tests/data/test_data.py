import pickle
from importlib import resources
from pathlib import Path

import numpy as np
import pytest

from saliency_detect.data import (
    CIFAR10_CLASSES,
    Dataset,
    DatasetNotFoundError,
    available_datasets,
    load_dataset,
)


def _check_layout(ds: Dataset, n_train, n_test, shape, num_classes):
    assert ds.x_train.shape == (n_train, *shape)
    assert ds.x_test.shape == (n_test, *shape)
    assert ds.x_train.dtype == np.float32 and ds.x_test.dtype == np.float32
    assert ds.y_train.shape == (n_train,) and ds.y_test.shape == (n_test,)
    assert ds.y_train.dtype == np.int64
    assert ds.x_train.min() >= 0.0 and ds.x_train.max() <= 1.0
    assert ds.num_classes == num_classes
    assert ds.clip_range == (0.0, 1.0)
    assert ds.input_shape == shape
    assert set(np.unique(ds.y_train)) == set(range(num_classes))


def _fake_mnist(path, n=5, value=7):
    np.savez(
        path,
        x_train=np.full((n, 28, 28), value, np.uint8),
        y_train=np.arange(n, dtype=np.uint8) % 10,
        x_test=np.full((2, 28, 28), value, np.uint8),
        y_test=np.zeros(2, np.uint8),
    )


@pytest.fixture
def isolated(monkeypatch, tmp_path):
    """No SALIENCY_DETECT_DATA and an empty Keras cache: only what a test puts there."""
    monkeypatch.delenv("SALIENCY_DETECT_DATA", raising=False)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    return tmp_path


# --- the embedded sample --------------------------------------------------------------


def test_mnist_sample_is_real_mnist(mnist_sample):
    _check_layout(mnist_sample, 10000, 2000, (28, 28, 1), 10)
    assert mnist_sample.y_train[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert mnist_sample.class_names == tuple("0123456789")


def test_mnist_sample_is_the_start_of_the_shared_mnist(mnist_sample, shared_data):
    with np.load(shared_data / "mnist.npz") as full:
        np.testing.assert_array_equal(mnist_sample.x_train[..., 0] * 255, full["x_train"][:10000])
        np.testing.assert_array_equal(mnist_sample.y_test, full["y_test"][:2000])


def test_mnist_sample_ships_small_with_its_licence():
    folder = resources.files("saliency_detect.data")
    with resources.as_file(folder.joinpath("mnist_sample.npz")) as p:
        assert p.stat().st_size <= 2_000_000
    licence = folder.joinpath("MNIST_SAMPLE_LICENSE.md").read_text(encoding="utf-8")
    assert "CC BY-SA 3.0" in licence and "LeCun" in licence


def test_sample_needs_no_data_anywhere(isolated):
    assert len(load_dataset("mnist-sample", download=False).x_train) == 10000


# --- real MNIST and CIFAR-10 from the shared folder -----------------------------------


def test_full_mnist_statistics_prove_it_is_real(shared_data):
    ds = load_dataset("mnist")
    _check_layout(ds, 60000, 10000, (28, 28, 1), 10)
    assert ds.y_train[:5].tolist() == [5, 0, 4, 1, 9]
    assert ds.x_train.mean() * 255 == pytest.approx(33.318, abs=5e-4)
    assert ds.source.endswith("mnist.npz")


def test_cifar10_full_training_set_is_preferred(shared_data):
    ds = load_dataset("cifar10")
    _check_layout(ds, 50000, 2000, (32, 32, 3), 10)
    assert ds.class_names == CIFAR10_CLASSES
    assert ds.source.endswith("cifar10.npz")
    assert np.bincount(ds.y_train, minlength=10).tolist() == [5000] * 10
    means = ds.x_train.reshape(-1, 3).mean(axis=0, dtype=np.float64) * 255
    np.testing.assert_allclose(means, [125.3, 123.0, 113.9], atol=1.0)


def test_cifar10_subset_file_is_the_fallback(shared_data, tmp_path):
    # The subset alone in a folder is found; its images are the full file's first 10,000.
    (tmp_path / "cifar10-subset.npz").symlink_to(Path(shared_data) / "cifar10-subset.npz")
    subset = load_dataset("cifar10", data_dir=tmp_path, download=False)
    _check_layout(subset, 10000, 2000, (32, 32, 3), 10)
    assert subset.source.endswith("cifar10-subset.npz")
    full = load_dataset("cifar10", train_size=10000)
    np.testing.assert_array_equal(subset.x_train, full.x_train)
    np.testing.assert_array_equal(subset.x_test, full.x_test)


def test_train_and_test_size_take_the_first_images(shared_data):
    ds = load_dataset("mnist", train_size=100, test_size=10)
    assert len(ds.x_train) == 100 and len(ds.y_test) == 10
    assert ds.y_train[:5].tolist() == [5, 0, 4, 1, 9]
    with pytest.raises(ValueError, match="train_size"):
        load_dataset("mnist-sample", train_size=0)


# --- where files are looked for -------------------------------------------------------


def test_search_order_data_dir_then_env_then_keras_cache(isolated, monkeypatch):
    first, second, cache = isolated / "first", isolated / "second", isolated / "keras_home" / "datasets"
    for folder, value in ((first, 1), (second, 2), (cache, 3)):
        folder.mkdir(parents=True)
        _fake_mnist(folder / "mnist.npz", value=value)
    monkeypatch.setenv("SALIENCY_DETECT_DATA", str(second))

    def pixel(ds):
        return round(float(ds.x_train[0, 0, 0, 0]) * 255)

    assert pixel(load_dataset("mnist", data_dir=first, download=False)) == 1
    assert pixel(load_dataset("mnist", download=False)) == 2
    monkeypatch.delenv("SALIENCY_DETECT_DATA")
    ds = load_dataset("mnist", download=False)
    assert pixel(ds) == 3 and str(cache) in ds.source


def test_not_found_offline_names_every_place_searched(isolated, monkeypatch):
    empty = isolated / "empty"
    empty.mkdir()
    monkeypatch.setenv("SALIENCY_DETECT_DATA", str(isolated / "env_dir"))
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset("mnist", data_dir=empty, download=False)
    message = str(info.value)
    for place in (
        empty / "mnist.npz",
        isolated / "env_dir" / "mnist.npz",
        isolated / "keras_home" / "datasets",
    ):
        assert str(place) in message
    assert "data_dir" in message and "SALIENCY_DETECT_DATA" in message and "download=False" in message


def test_failed_download_is_reported_not_replaced(isolated, monkeypatch):
    import keras

    def offline():
        raise Exception("URL fetch failure on https://example: None -- [Errno -3] no network")

    monkeypatch.setattr(keras.datasets.cifar10, "load_data", offline)
    with pytest.raises(DatasetNotFoundError, match=r"download failed.*no network") as info:
        load_dataset("cifar10")
    assert "cifar10-subset.npz" in str(info.value) and "cifar-10-batches-py" in str(info.value)


def test_download_is_used_when_nothing_is_on_disk(isolated, monkeypatch):
    import keras

    x = np.zeros((3, 28, 28), np.uint8)
    monkeypatch.setattr(
        keras.datasets.mnist,
        "load_data",
        lambda: ((x, np.array([1, 2, 3], np.uint8)), (x, np.zeros(3, np.uint8))),
    )
    ds = load_dataset("mnist")
    assert ds.y_train.tolist() == [1, 2, 3] and "downloaded" in ds.source


def test_corrupt_and_foreign_files_get_clear_errors(isolated):
    (isolated / "mnist.npz").write_bytes(b"this is not a zip archive")
    with pytest.raises(ValueError, match=r"not a readable \.npz"):
        load_dataset("mnist", data_dir=isolated, download=False)
    np.savez(isolated / "mnist.npz", images=np.zeros((2, 28, 28), np.uint8))
    with pytest.raises(ValueError, match="lacks the arrays"):
        load_dataset("mnist", data_dir=isolated, download=False)
    np.savez(
        isolated / "mnist.npz",
        x_train=np.zeros((2, 32, 32), np.uint8),
        y_train=np.zeros(2),
        x_test=np.zeros((2, 28, 28), np.uint8),
        y_test=np.zeros(2),
    )
    with pytest.raises(ValueError, match=r"expected uint8 x_train of shape \(N, 28, 28\)"):
        load_dataset("mnist", data_dir=isolated, download=False)


def test_keras_cifar_batches_folder(isolated):
    folder = isolated / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name, n in [*((f"data_batch_{i}", 4) for i in range(1, 6)), ("test_batch", 3)]:
        data = rng.integers(0, 256, (n, 3 * 32 * 32), dtype=np.uint8)
        with open(folder / name, "wb") as f:
            pickle.dump({b"data": data, b"labels": list(range(n))}, f)
    ds = load_dataset("cifar10", data_dir=isolated, download=False)
    assert ds.x_train.shape == (20, 32, 32, 3) and ds.x_test.shape == (3, 32, 32, 3)
    # Channel-first rows become channels-last images: the first 1024 bytes are red.
    with open(folder / "test_batch", "rb") as f:
        raw = pickle.load(f)[b"data"][0]
    np.testing.assert_allclose(ds.x_test[0, :, :, 0].ravel() * 255, raw[:1024], atol=1e-3)


def test_unknown_name_lists_the_valid_ones():
    with pytest.raises(ValueError, match="Expected one of: mnist, mnist-sample, cifar10, folder:PATH"):
        load_dataset("imagenet")
    with pytest.raises(TypeError, match="string"):
        load_dataset(None)
    assert "folder:PATH" in available_datasets()


# --- image folders --------------------------------------------------------------------


def _write_images(folder, classes=("cat", "dog"), per_class=5, size=(20, 24)):
    from PIL import Image

    rng = np.random.default_rng(0)
    for c, name in enumerate(classes):
        (folder / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = np.full((*size, 3), 40 + 150 * c, np.uint8) + rng.integers(
                0, 10, (*size, 3), dtype=np.uint8
            )
            Image.fromarray(pixels).save(folder / name / f"{i}.png")


def test_folder_split_resizes_and_scales(tmp_path):
    _write_images(tmp_path / "imgs")
    ds = load_dataset(f"folder:{tmp_path / 'imgs'}", image_size=(16, 16), test_fraction=0.2)
    assert ds.class_names == ("cat", "dog")
    assert ds.x_train.shape == (8, 16, 16, 3) and ds.x_test.shape == (2, 16, 16, 3)
    assert ds.x_train.dtype == np.float32 and ds.x_train.max() <= 1.0
    # Each class was drawn with its own brightness: labels follow the images.
    brightness = ds.x_train.mean(axis=(1, 2, 3))
    assert np.all((brightness > 0.4) == (ds.y_train == 1))


def test_folder_with_train_and_test_folders_in_grayscale(tmp_path):
    _write_images(tmp_path / "train", per_class=3)
    _write_images(tmp_path / "test", per_class=2)
    ds = load_dataset(f"folder:{tmp_path}", image_size=(8, 8), color_mode="grayscale")
    assert ds.x_train.shape == (6, 8, 8, 1) and ds.x_test.shape == (4, 8, 8, 1)
    assert ds.y_test.tolist() == [0, 0, 1, 1]


def test_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a folder"):
        load_dataset(f"folder:{tmp_path / 'missing'}")
    (tmp_path / "empty" / "a").mkdir(parents=True)
    with pytest.raises(ValueError, match="Could not read an image data set"):
        load_dataset(f"folder:{tmp_path / 'empty'}")
    _write_images(tmp_path / "ok")
    with pytest.raises(ValueError, match="color_mode"):
        load_dataset(f"folder:{tmp_path / 'ok'}", color_mode="cmyk")
    with pytest.raises(ValueError, match="test_fraction"):
        load_dataset(f"folder:{tmp_path / 'ok'}", test_fraction=1.5)


def test_folder_with_undecodable_images_names_them(tmp_path):
    _write_images(tmp_path / "imgs")
    (tmp_path / "imgs" / "cat" / "empty.png").write_bytes(b"")
    (tmp_path / "imgs" / "dog" / "notes.jpg").write_text("not an image")
    with pytest.raises(
        ValueError,
        match=r"holds 2 image file\(s\) that cannot be decoded: .*empty.png \(empty file\); .*notes.jpg",
    ) as error:
        load_dataset(f"folder:{tmp_path / 'imgs'}", image_size=(16, 16), test_fraction=0.2)
    assert "Remove or replace them" in str(error.value)


def test_dataset_repr_does_not_print_arrays(mnist_sample):
    text = repr(mnist_sample)
    assert "train=10000" in text and "num_classes=10" in text and len(text) < 300
