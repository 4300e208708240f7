"""Fréchet distance against closed forms."""
import numpy as np
import pytest

from uvlm.eval.fid import feature_frechet_distance, frechet_distance, gaussian_stats, trace_sqrt_product


def test_identical_sets_have_zero_distance():
    x = np.random.default_rng(0).normal(size=(200, 16))
    assert feature_frechet_distance(x, x) == pytest.approx(0.0, abs=1e-8)


def test_shifted_set_distance_is_the_squared_shift():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(300, 8)) @ rng.normal(size=(8, 8))  # correlated features
    shift = rng.normal(size=8)
    assert feature_frechet_distance(x, x + shift) == pytest.approx(float(shift @ shift), rel=1e-8)


def test_diagonal_gaussians_closed_form():
    # FD = |mu_a - mu_b|^2 + sum_i (sqrt(a_i) - sqrt(b_i))^2 for diagonal covariances.
    mu_a, mu_b = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    a, b = np.array([1.0, 4.0, 9.0]), np.array([4.0, 4.0, 1.0])
    expected = 1 + 0 + 4 + (1 - 2) ** 2 + 0 + (3 - 1) ** 2
    assert frechet_distance(mu_a, np.diag(a), mu_b, np.diag(b)) == pytest.approx(expected)


def test_trace_sqrt_matches_eigenvalues_of_the_product():
    rng = np.random.default_rng(2)
    A, B = rng.normal(size=(6, 6)), rng.normal(size=(6, 6))
    sa, sb = A @ A.T, B @ B.T
    # eig(S_a S_b) is real and non-negative for PSD S_a, S_b.
    expected = np.sqrt(np.clip(np.linalg.eigvals(sa @ sb).real, 0, None)).sum()
    assert trace_sqrt_product(sa, sb) == pytest.approx(expected, rel=1e-7)


def test_singular_covariances_stay_finite():
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(5, 32)), rng.normal(size=(5, 32)) + 1.0   # N < D
    fd = feature_frechet_distance(x, y)
    assert np.isfinite(fd) and fd > 0


def test_too_few_samples():
    assert feature_frechet_distance(np.zeros((1, 3)), np.zeros((5, 3))) is None
    with pytest.raises(ValueError):
        gaussian_stats(np.zeros(3))
