"""Head relevance (spec §1) against a slow, obviously-correct per-sample computation."""

import numpy as np
import pytest

from nero.detect.relevance import Head, ZeroLogitWarning, head_relevance


def slow_relevance(a: np.ndarray, w: np.ndarray, b: np.ndarray, eps: float = 0.0) -> np.ndarray:
    """R_j = Σ_k p_k · ã_j · W̃_kj / (y_k + ε·sign(y_k)), one sample and one neuron at a time."""
    n, d = a.shape
    c = w.shape[0]
    out = np.zeros((n, d + 1))
    for i in range(n):
        y = [sum(w[k, j] * a[i, j] for j in range(d)) + b[k] for k in range(c)]
        m = max(y)
        z = sum(np.exp(yk - m) for yk in y)
        p = [np.exp(yk - m) / z for yk in y]
        for j in range(d + 1):
            aj = a[i, j] if j < d else 1.0
            total = 0.0
            for k in range(c):
                wkj = w[k, j] if j < d else b[k]
                denom = y[k] + (eps * (1.0 if y[k] >= 0 else -1.0) if eps else 0.0)
                total += p[k] * aj * wkj / denom
            out[i, j] = total
    return out


@pytest.fixture
def problem():
    rng = np.random.default_rng(0)
    a = np.maximum(rng.normal(size=(7, 11)), 0)  # post-ReLU features
    w = rng.normal(size=(4, 11))
    b = rng.normal(size=4)
    return a, w, b


def test_matches_slow_float64_loop(problem):
    a, w, b = problem
    fast = head_relevance(a, Head(w, b))
    np.testing.assert_allclose(fast, slow_relevance(a, w, b), rtol=0, atol=1e-10)


def test_conservation_sums_to_one(problem):
    a, w, b = problem
    r = head_relevance(a, Head(w, b))
    np.testing.assert_allclose(r.sum(axis=1), 1.0, atol=1e-10)
    assert r.shape == (7, 12)


def test_last_column_is_bias_relevance(problem):
    a, w, b = problem
    r_no_bias = head_relevance(a, Head(w, np.zeros_like(b)))
    np.testing.assert_array_equal(r_no_bias[:, -1], 0.0)


def test_epsilon_matches_slow_loop_and_breaks_conservation_slightly(problem):
    a, w, b = problem
    fast = head_relevance(a, Head(w, b), epsilon=0.5)
    np.testing.assert_allclose(fast, slow_relevance(a, w, b, eps=0.5), atol=1e-10)
    assert not np.allclose(fast.sum(axis=1), 1.0)


def test_zero_logit_is_reported_not_nan():
    w = np.array([[1.0, -1.0], [0.5, 0.5]])
    b = np.array([0.0, 0.1])
    a = np.array([[1.0, 1.0], [2.0, 0.0]])  # first sample: logit 0 exactly for class 0
    with pytest.warns(ZeroLogitWarning, match=r"rows \[0\]"):
        r = head_relevance(a, Head(w, b))
    assert np.isfinite(r).all()


def test_rejects_nan_features_and_wrong_width(problem):
    a, w, b = problem
    bad = a.copy()
    bad[3, 2] = np.nan
    with pytest.raises(ValueError, match=r"rows \[3\]"):
        head_relevance(bad, Head(w, b))
    with pytest.raises(ValueError, match="head expects"):
        head_relevance(a[:, :5], Head(w, b))
