"""Fréchet distance between two sets of feature vectors (the FID formula).

    FD = |mu_a - mu_b|^2 + tr(S_a) + tr(S_b) - 2 tr( (S_a S_b)^(1/2) )

Here the features come from the world's attribute probe rather than Inception,
so the number is an FID-style analogue, comparable only within this project.

The matrix square root is taken the symmetric way: with R = S_a^(1/2) (from an
eigendecomposition of the symmetric S_a), tr((S_a S_b)^(1/2)) = tr((R S_b R)^(1/2)),
and R S_b R is symmetric positive semi-definite, so its square root is again an
eigendecomposition with negative round-off eigenvalues clipped to 0. This needs
no complex arithmetic and stays finite for singular covariances (fewer samples
than feature dimensions, which is the rule for small evaluation sets).
"""
from __future__ import annotations

import numpy as np


def gaussian_stats(features) -> tuple[np.ndarray, np.ndarray]:
    """(mean, covariance with ddof = 1) of features (N, D); needs N >= 2."""
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2:
        raise ValueError(f"features must be (N, D), got shape {f.shape}")
    if f.shape[0] < 2:
        raise ValueError(f"a covariance needs at least 2 feature vectors, got {f.shape[0]}")
    return f.mean(0), np.cov(f, rowvar=False).reshape(f.shape[1], f.shape[1])


def _sqrt_psd(s: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((s + s.T) / 2)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def trace_sqrt_product(sigma_a: np.ndarray, sigma_b: np.ndarray) -> float:
    """tr((S_a S_b)^(1/2)) for symmetric PSD S_a, S_b."""
    r = _sqrt_psd(sigma_a)
    m = r @ sigma_b @ r
    w = np.linalg.eigvalsh((m + m.T) / 2)
    return float(np.sqrt(np.clip(w, 0.0, None)).sum())


def frechet_distance(mu_a, sigma_a, mu_b, sigma_b) -> float:
    """Fréchet distance between N(mu_a, sigma_a) and N(mu_b, sigma_b); clipped at 0."""
    mu_a, mu_b = np.asarray(mu_a, np.float64), np.asarray(mu_b, np.float64)
    sigma_a, sigma_b = np.asarray(sigma_a, np.float64), np.asarray(sigma_b, np.float64)
    if mu_a.shape != mu_b.shape or sigma_a.shape != sigma_b.shape:
        raise ValueError(f"feature dimensions differ: {mu_a.shape} vs {mu_b.shape}")
    diff = mu_a - mu_b
    fd = diff @ diff + np.trace(sigma_a) + np.trace(sigma_b) - 2 * trace_sqrt_product(sigma_a, sigma_b)
    # Round-off can take an exact 0 slightly below it.
    return max(float(fd), 0.0)


def feature_frechet_distance(features_a, features_b) -> float | None:
    """FD between two feature sets (N_a, D) and (N_b, D); None if either has < 2 rows."""
    if len(features_a) < 2 or len(features_b) < 2:
        return None
    return frechet_distance(*gaussian_stats(features_a), *gaussian_stats(features_b))
