"""Neuron-level relevance at the classifier head (NERO spec §1).

LRP-0 (optionally LRP-ε) through the final linear layer ``y = W a + b``, with every class
weighted by its softmax probability: ``R_j = Σ_k p_k · ã_j · W̃_kj / y_k`` where the bias is
an extra neuron of activation 1. Computed for a whole batch with one matrix product.
"""

from __future__ import annotations

import warnings

import numpy as np

from nero.files import release_pages
from nero.model.head import Head

__all__ = ["Head", "head_relevance", "head_relevance_chunked", "ZeroLogitWarning"]


class ZeroLogitWarning(UserWarning):
    """A logit is exactly zero, so LRP-0 divides by zero for that sample."""


def _stabilised(logits: np.ndarray, epsilon: float) -> np.ndarray:
    """``y + ε·sign(y)`` with sign(0) := +1, so ε > 0 never leaves a zero denominator."""
    sign = np.where(logits >= 0, 1.0, -1.0)
    return logits + epsilon * sign


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=1, keepdims=True)


def head_relevance(features: np.ndarray, head: Head, epsilon: float = 0.0) -> np.ndarray:
    """Relevance of every penultimate neuron plus the bias, N×(D+1), float64.

    ``epsilon=0`` is the reference release (plain LRP-0). A logit of exactly zero makes
    LRP-0 undefined; instead of the release's inf/NaN, those entries alone are moved to
    the smallest positive float and a :class:`ZeroLogitWarning` names the rows.
    """
    a = np.asarray(features, np.float64)
    if a.ndim != 2 or a.shape[1] != head.n_features:
        raise ValueError(f"features have shape {a.shape}, the head expects N×{head.n_features}")
    if not np.isfinite(a).all():
        bad = np.flatnonzero(~np.isfinite(a).all(axis=1))
        raise ValueError(f"features contain NaN/inf in rows {bad[:10].tolist()} ({bad.size} rows)")
    y = head.logits(a)
    p = softmax(y)
    denominator = _stabilised(y, epsilon) if epsilon > 0 else y
    zero = denominator == 0
    if zero.any():
        rows = np.flatnonzero(zero.any(axis=1))
        warnings.warn(
            f"{rows.size} samples have a logit of exactly 0 (rows {rows[:10].tolist()}); "
            "LRP-0 is undefined there, using the smallest positive float instead. "
            "Set epsilon > 0 (LRP-ε) to avoid this.",
            ZeroLogitWarning,
            stacklevel=2,
        )
        denominator = np.where(zero, np.finfo(np.float64).tiny, denominator)
    w_tilde = np.concatenate([head.weight, head.bias[:, None]], axis=1).astype(np.float64)
    a_tilde = np.concatenate([a, np.ones((a.shape[0], 1))], axis=1)
    return a_tilde * ((p / denominator) @ w_tilde)


def head_relevance_chunked(
    features: np.ndarray,
    head: Head,
    epsilon: float = 0.0,
    chunk: int = 8192,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """:func:`head_relevance` over row chunks into ``out`` (float32, the run's dtype; may be
    a memory map), so memory stays flat however many rows there are."""
    if out is None:
        out = np.empty((features.shape[0], head.n_features + 1), np.float32)
    for start in range(0, features.shape[0], chunk):
        block = np.asarray(features[start : start + chunk])
        out[start : start + chunk] = head_relevance(block, head, epsilon)
        release_pages(features, out)
    return out
