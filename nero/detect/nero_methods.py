"""NERO behind the common method interface: the run's own detector and the release's."""

from __future__ import annotations

import numpy as np

from nero.detect.detector import NERO
from nero.detect.registry import Evidence, OODMethod, register
from nero.detect.relevance import Head, head_relevance_chunked


@register("nero", "NERO")
class NeroMethod(OODMethod):
    """The NERO detector behind the common method interface."""

    def __init__(self, detector: NERO | None = None) -> None:
        self.detector = detector or NERO.from_preset("default")

    def get_params(self) -> dict:
        return self.detector.get_params()

    def fit(self, train: Evidence, head: Head) -> NeroMethod:
        if train.relevance is None or train.labels is None:
            raise ValueError("NERO needs relevance and labels of the training data")
        self.detector.fit(train.features, train.relevance, train.labels)
        return self

    def score(self, data: Evidence) -> np.ndarray:
        if data.relevance is None:
            raise ValueError("NERO needs relevance to score")
        return self.detector.score(data.features, data.relevance)


@register("nero_reference", "NERO (reference)")
class NeroReferenceMethod(OODMethod):
    """The release's NERO (``reference`` preset) next to the run's own, for comparison.

    Its relevance is recomputed from the features with the preset's own ε (0, plain LRP-0):
    a run stores relevance for its main detector, whose ε may differ.
    """

    def __init__(self) -> None:
        self.detector = NERO.from_preset("reference")

    def get_params(self) -> dict:
        return self.detector.get_params()

    def fit(self, train: Evidence, head: Head) -> NeroReferenceMethod:
        if train.labels is None:
            raise ValueError("NERO needs the labels of the training data")
        self.head_ = head
        self.detector.fit(train.features, self._relevance(train.features), train.labels)
        return self

    def score(self, data: Evidence) -> np.ndarray:
        return self.detector.score(data.features, self._relevance(data.features))

    def _relevance(self, features: np.ndarray) -> np.ndarray:
        return head_relevance_chunked(features, self.head_, self.detector.epsilon)
