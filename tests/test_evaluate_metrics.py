"""Separation power, FPD and KPD against closed-form answers."""

import numpy as np
import pytest
import torch
from threadpoolctl import threadpool_limits

from caloforge import CaloforgeError
from caloforge.evaluate import (
    common_bins,
    fpd,
    frechet_distance,
    histogram_separation_power,
    kpd,
    mmd_polynomial,
    separation_power,
)


@pytest.fixture(autouse=True)
def _one_thread():
    """One thread per library: shared CI machines are much slower when oversubscribed."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(limits=1):
        yield
    torch.set_num_threads(previous)


def test_separation_power_identical_and_disjoint():
    rng = np.random.default_rng(0)
    x = rng.normal(size=1000)
    assert separation_power(x, x) == 0.0
    assert histogram_separation_power([3, 0, 5], [3, 0, 5]) == 0.0
    assert histogram_separation_power([1, 2, 0, 0], [0, 0, 7, 1]) == pytest.approx(1.0)
    # disjoint samples on the reference's binning: the generated sample piles up in the
    # last bin, which holds 1/50 of the reference: S = 0.5 (0.98^2 / 1.02 + 0.98) = 0.96
    assert separation_power(rng.uniform(0, 1, 50_000), rng.uniform(5, 6, 500)) == \
        pytest.approx(0.96, abs=0.005)


def test_separation_power_hand_computed():
    # p = (1/2, 1/2), q = (1, 0): 0.5 * ((1/2)^2 / (3/2) + (1/2)^2 / (1/2)) = 1/3
    assert histogram_separation_power([1, 1], [2, 0]) == pytest.approx(1 / 3)
    # unequal totals are normalised first
    assert histogram_separation_power([10, 10], [200, 0]) == pytest.approx(1 / 3)
    # explicit bins; values outside count in the end bins
    edges = np.array([0.0, 1.0, 2.0])
    assert separation_power([0.5, 1.5], [0.2, -7.0], bins=edges) == pytest.approx(1 / 3)


def test_separation_power_of_two_samples_of_one_distribution_is_small():
    rng = np.random.default_rng(1)
    same = separation_power(rng.normal(size=20_000), rng.normal(size=20_000))
    shifted = separation_power(rng.normal(size=20_000), rng.normal(0.5, 1.0, size=20_000))
    assert same < 0.005
    assert shifted > 0.02


def test_common_bins_scales():
    # the range is the reference's: the generated sample does not move it
    edges = common_bins([1.0, 10.0, 100.0], [1000.0], bins=2, scale="log", quantile=0.0)
    np.testing.assert_allclose(edges, [1.0, 10.0, 100.0])
    np.testing.assert_allclose(common_bins([0, 1, 2], [3], scale="discrete"),
                               [-0.5, 0.5, 1.5, 2.5])
    edges = common_bins(np.full(10, 5.0), bins=4)
    assert edges[0] < 5.0 < edges[-1]
    # a constant reference: the generated sample gives the range
    np.testing.assert_allclose(common_bins(np.zeros(5), [1.0, 2.0], bins=2), [0.0, 1.0, 2.0])
    # physical limits bound the range
    edges = common_bins(np.linspace(-0.5, 1.5, 1001), bins=4, quantile=0.0, limits=(0, 1))
    np.testing.assert_allclose(edges, [0.0, 0.25, 0.5, 0.75, 1.0])
    with pytest.raises(CaloforgeError, match="NaN"):
        common_bins([1.0, np.nan])
    with pytest.raises(CaloforgeError, match="empty"):
        separation_power([], [1.0])


def test_frechet_distance_closed_form():
    mu1, mu2 = np.zeros(3), np.array([1.0, 2.0, 0.0])
    s1, s2 = np.eye(3), np.diag([4.0, 1.0, 0.25])
    # |mu1 - mu2|^2 + sum (sigma1 - sigma2)^2 for diagonal covariances
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(5.0 + 1.0 + 0.0 + 0.25)


def test_fpd_identical_gaussians_is_consistent_with_zero():
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(8000, 5)), rng.normal(size=(8000, 5))
    value, error = fpd(x, y, num_batches=5, num_points=5, normalise=False)
    assert error > 0
    assert value <= 3 * error


def test_fpd_shifted_gaussians():
    rng = np.random.default_rng(3)
    shift, scale = np.array([0.3, 0.0, -0.2]), np.array([1.0, 1.5, 1.0])
    x = rng.normal(size=(20_000, 3))
    y = rng.normal(size=(20_000, 3)) * scale + shift
    expected = np.sum(shift**2) + np.sum((1.0 - scale) ** 2)  # shift^2 + trace term
    value, error = fpd(x, y, num_batches=5, num_points=5, normalise=False)
    assert abs(value - expected) < max(3 * error, 0.02)


def test_mmd_polynomial_closed_form():
    # For 1D features and kernel (x y + 1)^4, MMD^2 = sum_k C(4,k) (m_k(P) - m_k(Q))^2
    # with m_k the raw moments; P = N(0, 1), Q = N(mu, 1).
    mu = 0.5
    m_p = np.array([1.0, 0.0, 1.0, 0.0, 3.0])
    m_q = np.array([1.0, mu, 1 + mu**2, mu**3 + 3 * mu, mu**4 + 6 * mu**2 + 3])
    binom = np.array([1, 4, 6, 4, 1])
    expected = np.sum(binom * (m_p - m_q) ** 2)
    rng = np.random.default_rng(4)
    values = [mmd_polynomial(rng.normal(size=(1000, 1)), rng.normal(mu, 1.0, (1000, 1)))
              for _ in range(30)]
    # unbiased: the mean of independent estimates within 4 standard errors
    assert abs(np.mean(values) - expected) < 4 * np.std(values) / np.sqrt(len(values))
    value, error = kpd(rng.normal(size=(10_000, 1)), rng.normal(mu, 1.0, (10_000, 1)),
                       batch_size=2000, normalise=False)
    assert abs(value - expected) < 3 * error + 0.1 * expected


def test_kpd_identical_distributions_is_consistent_with_zero():
    rng = np.random.default_rng(5)
    x, y = rng.normal(size=(6000, 4)), rng.normal(size=(6000, 4))
    value, error = kpd(x, y, batch_size=2000)
    assert error > 0
    assert abs(value) <= 3 * error


def test_fpd_kpd_bad_input():
    with pytest.raises(CaloforgeError, match="n_features"):
        fpd(np.zeros((10, 3)), np.zeros((10, 4)))
    with pytest.raises(CaloforgeError, match="NaN"):
        kpd(np.full((10, 2), np.nan), np.zeros((10, 2)))


def _response_case(n: int = 100_000, seed: int = 5):
    """Issue case: reference response N(0.98, 0.02); generated the same with 20% empty
    showers (response 0)."""
    rng = np.random.default_rng(seed)
    reference = rng.normal(0.98, 0.02, n)
    generated = rng.normal(0.98, 0.02, n)
    generated[rng.random(n) < 0.2] = 0.0
    return reference, generated, rng


def test_separation_power_of_empty_showers_is_not_hidden_by_outliers():
    reference, generated, rng = _response_case()
    # 20% of the mass moved into the first bin: S = 0.5 (0.2^2 / 0.2 + 0.2^2 / 1.8) = 0.111
    before = separation_power(reference, generated)
    assert before == pytest.approx(0.111, abs=0.005)
    # 0.2% more generated values at 500: they land in the last bin and the rest of the
    # histogram keeps its binning (before: the range followed them and S fell to 0.001)
    outliers = generated.copy()
    outliers[rng.choice(len(outliers), len(outliers) // 500, replace=False)] = 500.0
    after = separation_power(reference, outliers)
    assert after == pytest.approx(before, abs=0.005)
    assert after > 0.1
    # the same with the physical range of the response as limits
    edges = common_bins(reference, outliers, limits=(0.0, 1.5))
    assert 0.9 < edges[0] and edges[-1] < 1.1


def test_frechet_distance_agrees_with_the_matrix_square_root():
    from scipy import linalg

    rng = np.random.default_rng(11)
    for d in (1, 3, 40):
        a, b = rng.normal(size=(2 * d + 5, d)), rng.normal(size=(2 * d + 5, d)) * 1.3
        s1, s2 = np.cov(a, rowvar=False).reshape(d, d), np.cov(b, rowvar=False).reshape(d, d)
        mu1, mu2 = a.mean(axis=0), b.mean(axis=0) + 0.2
        root = np.real(linalg.sqrtm(s1 @ s2))
        expected = (mu1 - mu2) @ (mu1 - mu2) + np.trace(s1 + s2 - 2 * root)
        assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-7)


def test_minimum_sample_size_for_distances():
    from caloforge.evaluate.metrics import min_showers_for_distances

    assert min_showers_for_distances(10) == 200
    assert min_showers_for_distances(360) == 1800
