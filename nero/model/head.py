"""The classifier's head as plain arrays (no torch): what relevance and the detectors read."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Head:
    """The classifier's final linear layer: logits = features @ weight.T + bias."""

    weight: np.ndarray  # C×D
    bias: np.ndarray  # C

    @property
    def n_classes(self) -> int:
        return int(self.weight.shape[0])

    @property
    def n_features(self) -> int:
        return int(self.weight.shape[1])

    def logits(self, features: np.ndarray) -> np.ndarray:
        """Head output in float64 (the precision relevance is computed in)."""
        return np.asarray(features, np.float64) @ self.weight.T.astype(np.float64) + self.bias
