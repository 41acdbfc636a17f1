"""Distances between two sets of samples: Fréchet distance and kernel distance (issue 5, generator quality).

Both take feature vectors (here: a project recognizer's face embeddings of generated and
of real faces, ``jaxdeid/reproduce/generators.py``) and say how far apart the two distributions are;
0 means "the same distribution". They are host-side numpy in float64: the covariance square
root below is ill-conditioned in float32, and these metrics run once per table, not in a
training step.

Fréchet distance (Dowson & Landau 1982; used on Inception features as "FID" by Heusel et al.
2017). Fit a Gaussian N(μ₁, Σ₁) to the first set and N(μ₂, Σ₂) to the second; the squared
Fréchet (2-Wasserstein) distance between the two Gaussians is

    d² = ‖μ₁ − μ₂‖² + Tr(Σ₁ + Σ₂ − 2 (Σ₁ Σ₂)^{1/2}).

Σ₁Σ₂ is not symmetric, and a general matrix square root (``scipy.linalg.sqrtm``) of it is
slow and returns complex round-off for nearly singular covariances. Only its trace is
needed, and with S = Σ₁^{1/2} (the symmetric PSD root, from an eigen-decomposition)

    Σ₁Σ₂ = S (S Σ₂)  has the same eigenvalues as  (S Σ₂) S = S Σ₂ S,

which is symmetric positive semi-definite. So Tr (Σ₁Σ₂)^{1/2} = Σᵢ √λᵢ(S Σ₂ S), computed with
two symmetric eigen-decompositions (``numpy.linalg.eigh``) and no complex arithmetic; tiny
negative eigenvalues from round-off are clipped to 0. The value reported is d² (the usual
"FID" convention), not d.

Kernel distance ("KID", Bińkowski et al. 2018): the unbiased estimator of the squared maximum
mean discrepancy with the cubic polynomial kernel k(x, y) = (xᵀy / D + 1)³,

    MMD²ᵤ = 1/(m(m−1)) Σ_{i≠j} k(xᵢ, xⱼ) + 1/(n(n−1)) Σ_{i≠j} k(yᵢ, yⱼ) − 2/(mn) Σ_{i,j} k(xᵢ, yⱼ),

averaged over random equal-size subsets. Unlike the Fréchet distance it is unbiased in the
sample size (and can come out slightly negative), so it is the better number when few
samples are available.
"""

from __future__ import annotations

import numpy as np

from .registry import register_metric


def _as_features(features, name: str) -> np.ndarray:
    x = np.asarray(features, np.float64)
    if x.ndim != 2:
        raise ValueError(f"{name}: expected features [N, D], got shape {x.shape}")
    if x.shape[0] < 2:
        raise ValueError(f"{name}: need at least 2 samples to estimate a covariance, got {x.shape[0]}")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name}: features contain NaN or inf")
    return x


def gaussian_statistics(features) -> tuple[np.ndarray, np.ndarray]:
    """Mean [D] and unbiased (ddof 1) covariance [D, D] of features [N, D], in float64."""
    x = _as_features(features, "gaussian_statistics")
    return x.mean(axis=0), np.cov(x, rowvar=False, ddof=1).reshape(x.shape[1], x.shape[1])


def _symmetric_sqrt(matrix: np.ndarray) -> np.ndarray:
    """The PSD square root of a symmetric PSD matrix (negative round-off eigenvalues clipped to 0)."""
    eigenvalues, eigenvectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return (eigenvectors * np.sqrt(np.clip(eigenvalues, 0.0, None))) @ eigenvectors.T


def trace_sqrt_product(sigma_1: np.ndarray, sigma_2: np.ndarray) -> float:
    """Tr (Σ₁Σ₂)^{1/2} as Σᵢ √λᵢ(Σ₁^{1/2} Σ₂ Σ₁^{1/2}) (see the module docstring for why this is equal)."""
    root_1 = _symmetric_sqrt(np.asarray(sigma_1, np.float64))
    product = root_1 @ np.asarray(sigma_2, np.float64) @ root_1
    eigenvalues = np.linalg.eigvalsh((product + product.T) / 2)
    return float(np.sum(np.sqrt(np.clip(eigenvalues, 0.0, None))))


def frechet_distance_from_statistics(mu_1, sigma_1, mu_2, sigma_2) -> float:
    """d² = ‖μ₁ − μ₂‖² + Tr(Σ₁ + Σ₂ − 2 (Σ₁Σ₂)^{1/2}) between N(μ₁, Σ₁) and N(μ₂, Σ₂).

    Round-off can make d² of (nearly) identical statistics a tiny negative number; it is
    clipped to 0, the true minimum.
    """
    mu_1, mu_2 = np.asarray(mu_1, np.float64), np.asarray(mu_2, np.float64)
    sigma_1, sigma_2 = np.asarray(sigma_1, np.float64), np.asarray(sigma_2, np.float64)
    dim = mu_1.shape[-1] if mu_1.ndim == 1 else -1
    if mu_1.shape != mu_2.shape or sigma_1.shape != (dim, dim) or sigma_2.shape != (dim, dim):
        raise ValueError(f"mismatched statistics: mu {mu_1.shape} vs {mu_2.shape}, "
                         f"sigma {sigma_1.shape} vs {sigma_2.shape}")
    mean_term = float(np.sum(np.square(mu_1 - mu_2)))
    covariance_term = float(np.trace(sigma_1) + np.trace(sigma_2)) - 2.0 * trace_sqrt_product(sigma_1, sigma_2)
    return max(mean_term + covariance_term, 0.0)


@register_metric("frechet_distance", kind="distribution", higher_is_better=False)
def frechet_distance(features_a, features_b) -> float:
    """Squared Fréchet distance between Gaussians fitted to two feature sets [N, D] and [M, D]; 0 = same.

    d² = ‖μ_a − μ_b‖² + Tr(Σ_a + Σ_b − 2 (Σ_a Σ_b)^{1/2}), see the module docstring. Symmetric.
    Biased upwards for small N (each covariance is an estimate), so only compare values computed
    with the same sample sizes and the same feature extractor.
    """
    mu_a, sigma_a = gaussian_statistics(features_a)
    mu_b, sigma_b = gaussian_statistics(features_b)
    return frechet_distance_from_statistics(mu_a, sigma_a, mu_b, sigma_b)


def _polynomial_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return (x @ y.T / x.shape[1] + 1.0) ** 3


def _mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    m, n = x.shape[0], y.shape[0]
    k_xx, k_yy, k_xy = _polynomial_kernel(x, x), _polynomial_kernel(y, y), _polynomial_kernel(x, y)
    within_x = (k_xx.sum() - np.trace(k_xx)) / (m * (m - 1))   # i ≠ j only: the unbiased U-statistic
    within_y = (k_yy.sum() - np.trace(k_yy)) / (n * (n - 1))
    return float(within_x + within_y - 2.0 * k_xy.mean())


@register_metric("kernel_distance", kind="distribution", higher_is_better=False)
def kernel_distance(features_a, features_b, *, num_subsets: int = 100, subset_size: int = 1000,
                    seed: int = 0) -> float:
    """KID: unbiased MMD² with the kernel (xᵀy/D + 1)³, averaged over random subsets; ≈ 0 = same.

    When both sets hold at most ``subset_size`` samples they are used whole (the estimator allows
    N ≠ M); otherwise each of ``num_subsets`` rounds draws ``min(subset_size, N, M)`` samples
    without replacement from each set. Unbiased, so it can be slightly negative when the sets match.
    """
    x, y = _as_features(features_a, "kernel_distance"), _as_features(features_b, "kernel_distance")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"kernel_distance: feature sizes differ ({x.shape[1]} vs {y.shape[1]})")
    if x.shape[0] <= subset_size and y.shape[0] <= subset_size:
        return _mmd2_unbiased(x, y)  # both sets fit in one subset: use every sample once
    size = min(int(subset_size), x.shape[0], y.shape[0])
    rng = np.random.default_rng(seed)
    values = [_mmd2_unbiased(x[rng.choice(x.shape[0], size, replace=False)],
                             y[rng.choice(y.shape[0], size, replace=False)]) for _ in range(int(num_subsets))]
    return float(np.mean(values))


__all__ = ["frechet_distance", "frechet_distance_from_statistics", "gaussian_statistics", "trace_sqrt_product",
           "kernel_distance"]
