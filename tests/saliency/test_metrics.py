import numpy as np
import pytest
from scipy.stats import spearmanr

from saliency_detect.saliency import metrics

RNG = np.random.default_rng(0)
A = RNG.normal(size=(5, 12, 12, 3))
B = A + RNG.normal(scale=0.5, size=A.shape)


def test_spearman_matches_scipy_per_image():
    ours = metrics.spearman(A, B)
    expected = [spearmanr(a.ravel(), b.ravel()).statistic for a, b in zip(A, B, strict=True)]
    np.testing.assert_allclose(ours, expected, rtol=1e-10)
    ties = np.array([[[1.0, 1.0, 2.0, 3.0]]])
    np.testing.assert_allclose(
        metrics.spearman(ties, ties[..., ::-1]), [spearmanr([1, 1, 2, 3], [3, 2, 1, 1]).statistic]
    )
    assert np.isnan(metrics.spearman(np.zeros((1, 3, 3)), A[:1, :3, :3, 0]))[0]


def test_top_k_intersection():
    a = np.zeros((2, 4, 4))
    a[:, 0, :2] = [5.0, -4.0]  # magnitudes count, not signs
    b = np.zeros((2, 4, 4))
    b[0, 0, :2] = [1.0, 1.0]
    b[1, 3, 3] = 9.0
    b[1, 0, 0] = 1.0
    assert metrics.top_k_intersection(a, b, k=2).tolist() == [1.0, 0.5]
    assert metrics.top_k_intersection(A, A, k=10).tolist() == [1.0] * 5
    with pytest.raises(ValueError, match=r"`k` must be an integer in \[1, 16\]"):
        metrics.top_k_intersection(a, b, k=17)


def test_ssim_is_one_for_equal_maps_symmetric_and_scale_aware():
    maps = np.abs(A[..., 0])
    np.testing.assert_allclose(metrics.ssim(maps, maps), 1.0, atol=1e-6)
    other = np.abs(B[..., 0])
    np.testing.assert_allclose(metrics.ssim(maps, other), metrics.ssim(other, maps), atol=1e-6)
    assert np.all(metrics.ssim(maps, other) < 0.9)
    # Unnormalised: halving one map changes its similarity to the original.
    assert np.all(metrics.ssim(maps, maps / 2) < 0.99)
    # Joint rescaling of both maps does not.
    np.testing.assert_allclose(metrics.ssim(3 * maps, 3 * other), metrics.ssim(maps, other), atol=1e-5)
    assert metrics.ssim(A[:, :4, :4], B[:, :4, :4]).shape == (5,)  # maps smaller than the window


def test_entropy_and_gini_order_diffuse_and_concentrated_maps():
    uniform = np.ones((1, 8, 8))
    spike = np.zeros((1, 8, 8))
    spike[0, 2, 5] = 3.0
    blob = np.zeros((1, 8, 8))
    blob[0, 2:4, 2:4] = 1.0
    assert metrics.entropy(uniform)[0] == pytest.approx(6.0)
    assert metrics.entropy(spike)[0] == 0.0
    assert metrics.entropy(blob)[0] == pytest.approx(2.0)
    assert metrics.gini(uniform)[0] == pytest.approx(0.0)
    assert metrics.gini(spike)[0] == pytest.approx(1 - 1 / 64)
    assert metrics.gini(uniform)[0] < metrics.gini(blob)[0] < metrics.gini(spike)[0]
    assert (
        np.isnan(metrics.entropy(np.zeros((1, 2, 2))))[0] and np.isnan(metrics.gini(np.zeros((1, 2, 2))))[0]
    )
    # Signs do not matter: both measure |map|.
    np.testing.assert_allclose(metrics.entropy(A), metrics.entropy(-A))


def test_mass_in_mask():
    maps = np.zeros((2, 4, 4, 3))
    maps[0, 0, 0] = 1.0
    maps[0, 3, 3] = -3.0
    maps[1] = 1.0
    mask = np.zeros((4, 4), bool)
    mask[0, 0] = True
    np.testing.assert_allclose(metrics.mass_in_mask(maps, mask), [0.25, 1 / 16])
    per_image = np.stack([mask, ~mask])
    np.testing.assert_allclose(metrics.mass_in_mask(maps, per_image), [0.25, 15 / 16])
    with pytest.raises(ValueError, match="boolean"):
        metrics.mass_in_mask(maps, mask.astype(int))
    with pytest.raises(ValueError, match=r"\(N, H, W\)"):
        metrics.mass_in_mask(maps, np.ones((3, 3), bool))


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: metrics.spearman(A, A[:2]), "same shape"),
        (lambda: metrics.entropy(np.ones(5)), r"\(N, H, W\)"),
        (lambda: metrics.gini(np.zeros((0, 4, 4))), "empty batch"),
        (lambda: metrics.ssim(np.full((1, 4, 4), np.nan), np.ones((1, 4, 4))), "NaN"),
    ],
)
def test_bad_maps(call, message):
    with pytest.raises(ValueError, match=message):
        call()
