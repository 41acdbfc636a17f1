"""Fréchet distance and KID (jaxdeid/metrics/frechet.py) against closed forms and a scipy sqrtm reference."""

import numpy as np
import pytest
import scipy.linalg

from jaxdeid import metrics
from jaxdeid.metrics.frechet import (frechet_distance, frechet_distance_from_statistics, gaussian_statistics,
                                     kernel_distance, trace_sqrt_product)


def _random_covariance(rng: np.random.Generator, dim: int, rank: int | None = None) -> np.ndarray:
    factor = rng.normal(size=(dim, rank or dim))
    return factor @ factor.T / (rank or dim)


def _sqrtm_reference(mu_1, sigma_1, mu_2, sigma_2) -> float:
    """The textbook formula with a general matrix square root (test-only reference)."""
    root = scipy.linalg.sqrtm(sigma_1 @ sigma_2)
    return float(np.sum((mu_1 - mu_2) ** 2) + np.trace(sigma_1 + sigma_2 - 2 * np.real(root)))


def test_registered_as_distribution_metrics():
    assert metrics.get_metric("frechet_distance").kind == "distribution"
    assert metrics.get_metric("frechet_distance").higher_is_better is False
    assert metrics.get_metric("kernel_distance").kind == "distribution"
    assert "frechet_distance" in metrics.list_metrics("distribution")


def test_a_set_against_itself_is_zero():
    features = np.random.default_rng(0).normal(size=(200, 16)) * np.linspace(0.1, 3.0, 16)
    assert frechet_distance(features, features) == pytest.approx(0.0, abs=1e-8)


def test_shifted_unit_gaussians_give_squared_mean_shift():
    # N(0, I) vs N(mu, I): the covariance term vanishes, so d² = ‖mu‖² (up to sampling error).
    rng = np.random.default_rng(1)
    dim, count = 8, 40_000
    mu = rng.normal(size=dim)
    a = rng.normal(size=(count, dim))
    b = rng.normal(size=(count, dim)) + mu
    expected = float(np.sum(mu ** 2))
    assert frechet_distance(a, b) == pytest.approx(expected, rel=0.03, abs=0.01)


def test_scaled_covariance_closed_form():
    # N(0, s1² I) vs N(0, s2² I) in D dims: d² = D (s1 − s2)².
    dim = 5
    value = frechet_distance_from_statistics(np.zeros(dim), 4.0 * np.eye(dim), np.zeros(dim), 0.25 * np.eye(dim))
    assert value == pytest.approx(dim * (2.0 - 0.5) ** 2, rel=1e-12)


def test_symmetric():
    rng = np.random.default_rng(2)
    a = rng.normal(size=(300, 10)) @ rng.normal(size=(10, 10))
    b = rng.normal(size=(250, 10)) * 2.0 + 0.5
    assert frechet_distance(a, b) == pytest.approx(frechet_distance(b, a), rel=1e-10)
    assert frechet_distance(a, b) > 1.0


@pytest.mark.parametrize("dim,rank", [(3, None), (6, None), (12, None), (8, 3)])
def test_agrees_with_scipy_sqrtm(dim, rank):
    rng = np.random.default_rng(dim * 10 + (rank or 0))
    sigma_1, sigma_2 = _random_covariance(rng, dim, rank), _random_covariance(rng, dim)
    mu_1, mu_2 = rng.normal(size=dim), rng.normal(size=dim)
    ours = frechet_distance_from_statistics(mu_1, sigma_1, mu_2, sigma_2)
    assert ours == pytest.approx(_sqrtm_reference(mu_1, sigma_1, mu_2, sigma_2), rel=1e-6, abs=1e-8)
    assert trace_sqrt_product(sigma_1, sigma_2) == pytest.approx(
        float(np.trace(np.real(scipy.linalg.sqrtm(sigma_1 @ sigma_2)))), rel=1e-6, abs=1e-8)


def test_fewer_samples_than_dimensions_stays_finite():
    # Singular covariances (N < D), as with a handful of smoke-preset test faces.
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(4, 32)), rng.normal(size=(6, 32)) + 1.0
    value = frechet_distance(a, b)
    assert np.isfinite(value) and value > 0


def test_statistics_and_input_checks():
    features = np.random.default_rng(4).normal(size=(50, 3))
    mu, sigma = gaussian_statistics(features)
    np.testing.assert_allclose(mu, features.mean(0))
    np.testing.assert_allclose(sigma, np.cov(features.T))
    with pytest.raises(ValueError):
        frechet_distance(features[:1], features)
    with pytest.raises(ValueError):
        frechet_distance(features, features[:, :2])
    with pytest.raises(ValueError):
        frechet_distance(features[0], features)


def test_kernel_distance_near_zero_for_same_distribution_and_positive_for_shift():
    rng = np.random.default_rng(5)
    a, b = rng.normal(size=(400, 8)), rng.normal(size=(400, 8))
    same = kernel_distance(a, b, num_subsets=10, subset_size=200)
    shifted = kernel_distance(a, b + 1.0, num_subsets=10, subset_size=200)
    assert abs(same) < 0.05
    assert shifted > 10 * max(abs(same), 1e-3)
    assert kernel_distance(a, b + 1.0) == pytest.approx(kernel_distance(b + 1.0, a), rel=1e-10)


def test_kernel_distance_matches_explicit_double_sum():
    rng = np.random.default_rng(6)
    x, y = rng.normal(size=(5, 3)), rng.normal(size=(7, 3)) + 0.3
    k = lambda u, v: (u @ v / 3 + 1.0) ** 3  # noqa: E731
    xx = sum(k(x[i], x[j]) for i in range(5) for j in range(5) if i != j) / (5 * 4)
    yy = sum(k(y[i], y[j]) for i in range(7) for j in range(7) if i != j) / (7 * 6)
    xy = sum(k(x[i], y[j]) for i in range(5) for j in range(7)) / (5 * 7)
    assert kernel_distance(x, y) == pytest.approx(xx + yy - 2 * xy, rel=1e-10)
