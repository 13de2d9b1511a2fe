"""The `saliency-detect detect` command."""

from __future__ import annotations

import csv

import numpy as np
import pytest


@pytest.fixture(scope="module")
def saved_detector(tmp_path_factory, mnist_sample):
    from saliency_detect.attacks import fgsm
    from saliency_detect.detector import SaliencyDetector
    from saliency_detect.models import mnist_net_f

    f = mnist_net_f()
    x = mnist_sample.x_test[:64]
    detector = SaliencyDetector(f, epochs=1, verbose=0, random_state=0).fit(x, fgsm(f, x, eps=0.3))
    path = tmp_path_factory.mktemp("det") / "det"
    detector.save(path)
    return detector, path


def test_detect_scores_files_folders_and_npz_and_skips_unreadable(
    saved_detector, tmp_path, mnist_sample, capsys
):
    import keras

    from saliency_detect.cli import main
    from saliency_detect.data import read_images

    detector, path = saved_detector
    images = tmp_path / "images"
    (images / "sub").mkdir(parents=True)
    pixels = (mnist_sample.x_test[:3] * 255).round().astype(np.uint8)
    for i, name in enumerate(["a.png", "b.png", "sub/c.png"]):
        keras.utils.save_img(images / name, pixels[i], scale=False)
    (images / "broken.png").write_bytes(b"\x89PNG not really")
    (images / "notes.txt").write_text("not an image, not looked at")
    out = tmp_path / "scores.csv"
    assert main(["detect", "--detector", str(path), "--images", str(images), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "skipped broken.png" in err and "Scored 3 image(s)" in err and "1 unreadable" in err
    rows = list(csv.DictReader(out.open()))
    assert [r["file"] for r in rows] == ["a.png", "b.png", "sub/c.png"]
    expected = detector.predict_proba(mnist_sample.x_test[:3])[:, 1]
    np.testing.assert_allclose([float(r["adversarial_score"]) for r in rows], expected, atol=1e-5)
    assert [int(r["flag"]) for r in rows] == list(detector.predict(mnist_sample.x_test[:3]))
    labels = np.argmax(detector.classifier.predict(mnist_sample.x_test[:3], verbose=0), axis=1)
    assert [int(r["label"]) for r in rows] == list(labels)

    archive = tmp_path / "x.npz"
    np.savez(archive, x=pixels)
    assert main(["detect", "--detector", str(path), "--images", str(archive)]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == "file,label,adversarial_score,flag" and printed[1].startswith("x.npz[0],")
    names, read, errors = read_images(archive, (28, 28, 1))
    assert len(names) == 3 and errors == [] and np.array_equal(read, pixels / np.float32(255))


def test_detect_errors(saved_detector, tmp_path, capsys):
    from saliency_detect.cli import main

    _, path = saved_detector
    assert main(["detect", "--detector", str(tmp_path), "--images", str(tmp_path)]) == 2
    assert "No saved SaliencyDetector" in capsys.readouterr().err
    assert main(["detect", "--detector", str(path), "--images", str(tmp_path / "none")]) == 2
    assert "No image file, folder or .npz" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["detect", "--detector", str(path), "--images", str(tmp_path / "empty")]) == 2
    assert "No image files" in capsys.readouterr().err
