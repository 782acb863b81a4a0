"""Baselines on the logits (and GradNorm, in closed form from logits and features)."""

from __future__ import annotations

import numpy as np

from nero.detect.baselines.common import (
    ENTROPY_MIN_P,
    GEN_GAMMA,
    GEN_TOP_M,
    as_f64,
    as_tensor,
    by_chunk,
    pood_detectors,
    to_numpy,
)
from nero.detect.registry import Evidence, OODMethod, register
from nero.detect.relevance import softmax


@register("msp", "MSP")
class MSP(OODMethod):
    """Maximum softmax probability, negated: ``−max_k p_k``.

    Hendrycks & Gimpel, "A Baseline for Detecting Misclassified and Out-of-Distribution
    Examples in Neural Networks", ICLR 2017. pytorch-ood ``MaxSoftmax.score`` (T = 1).
    """

    def score(self, data: Evidence) -> np.ndarray:
        return to_numpy(pood_detectors().MaxSoftmax.score(as_tensor(data.logits)))


@register("maxlogit", "MaxLogit")
class MaxLogit(OODMethod):
    """Maximum logit, negated: ``−max_k y_k``.

    Hendrycks et al., "Scaling Out-of-Distribution Detection for Real-World Settings",
    ICML 2022. pytorch-ood ``MaxLogit.score``.
    """

    def score(self, data: Evidence) -> np.ndarray:
        return to_numpy(pood_detectors().MaxLogit.score(as_tensor(data.logits)))


@register("energy", "Energy")
class Energy(OODMethod):
    """Free energy ``−T·logsumexp(y / T)`` at T = 1.

    Liu et al., "Energy-based Out-of-distribution Detection", NeurIPS 2020. pytorch-ood
    ``EnergyBased.score``.
    """

    def score(self, data: Evidence) -> np.ndarray:
        return to_numpy(pood_detectors().EnergyBased.score(as_tensor(data.logits), t=1.0))


@register("entropy", "Entropy")
class Entropy(OODMethod):
    """Predictive entropy ``−Σ_k p_k log p_k`` with ``p`` clipped to ≥ 1e-6 (spec §5).

    Ours: pytorch-ood's ``Entropy`` clips at 1e-7, spec §5 at 1e-6.
    """

    def __init__(self, min_p: float = ENTROPY_MIN_P) -> None:
        self.min_p = min_p

    def score(self, data: Evidence) -> np.ndarray:
        def block(rows: slice) -> np.ndarray:
            p = np.clip(softmax(as_f64(data.logits[rows])), self.min_p, 1.0)
            return -(p * np.log(p)).sum(axis=1)

        return by_chunk(block, data.logits.shape[0])


@register("gen", "GEN")
class GEN(OODMethod):
    """Generalized entropy over the top-M probabilities, ``mean_top-M p^γ (1 − p)^γ``.

    Liu et al., "GEN: Pushing the Limits of Softmax-Based Out-of-Distribution Detection",
    CVPR 2023; γ = 0.1, M = min(100, C). pytorch-ood ``GEN.score`` (a mean instead of the
    paper's sum: a constant factor, same ranking).
    """

    def __init__(self, gamma: float = GEN_GAMMA, top_m: int = GEN_TOP_M) -> None:
        self.gamma = gamma
        self.top_m = top_m

    def score(self, data: Evidence) -> np.ndarray:
        m = min(self.top_m, data.logits.shape[1])
        return to_numpy(pood_detectors().GEN.score(as_tensor(data.logits), gamma=self.gamma, M=m))


@register("gradnorm", "GradNorm")
class GradNorm(OODMethod):
    """GradNorm on the head, negated: ``−Σ|∂L/∂W|`` with ``L = −Σ_k log softmax(y)_k``.

    Huang et al., "On the Importance of Gradients for Detecting Distributional Shifts in the
    Wild", NeurIPS 2021 (T = 1, weight of the final layer only, as the paper). Ours, in
    closed form from the cached arrays: ``∂L/∂y_k = C·p_k − 1`` and ``∂L/∂W_kj = (C·p_k − 1)·a_j``,
    so ``Σ|∂L/∂W| = (Σ_k |C·p_k − 1|)·(Σ_j |a_j|)`` — no backward pass. (pytorch-ood's
    ``GradNorm`` needs the model and per-sample backward passes.)
    """

    def score(self, data: Evidence) -> np.ndarray:
        def block(rows: slice) -> np.ndarray:
            p = softmax(as_f64(data.logits[rows]))
            logit_grad = np.abs(p.shape[1] * p - 1.0).sum(axis=1)
            return -logit_grad * np.abs(as_f64(data.features[rows])).sum(axis=1)

        return by_chunk(block, data.features.shape[0])
