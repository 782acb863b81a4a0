"""Baseline OOD detectors behind the common method interface (higher = more OOD)."""

from __future__ import annotations

import numpy as np
from scipy.special import logsumexp

from nero.methods import Evidence, OODMethod, register
from nero.relevance import softmax


@register("msp", "MSP")
class MSP(OODMethod):
    """Maximum softmax probability (Hendrycks & Gimpel 2017), negated."""

    def score(self, data: Evidence) -> np.ndarray:
        return -softmax(np.asarray(data.logits, np.float64)).max(axis=1)


@register("energy", "Energy")
class Energy(OODMethod):
    """Free energy −logsumexp(y) at T = 1 (Liu et al. 2020)."""

    def score(self, data: Evidence) -> np.ndarray:
        return -logsumexp(np.asarray(data.logits, np.float64), axis=1)
