"""Activation shaping: features are clipped, pruned or rescaled, then energy through the head."""

from __future__ import annotations

from typing import Any

import numpy as np

from nero.detect.baselines.common import (
    ASH_PERCENTILE,
    REACT_PERCENTILE,
    REACT_RELEASE_THRESHOLD,
    SCALE_PERCENTILE,
    Fitted,
    as_maps,
    by_chunk,
    feature_map_head,
    pood_detectors,
    to_numpy,
)
from nero.detect.registry import Evidence, OODMethod, register
from nero.detect.relevance import Head


class _ShapedEnergy(OODMethod, Fitted):
    """Energy of the head applied to shaped features; ``_detector`` builds the pytorch-ood
    feature-map detector once the head (and any threshold) is known."""

    def _detector(self, train: Evidence, head: Head) -> Any:
        raise NotImplementedError

    def fit(self, train: Evidence, head: Head) -> _ShapedEnergy:
        self.detector_ = self._detector(train, head)
        return self

    def score(self, data: Evidence) -> np.ndarray:
        self._require("detector_")
        return by_chunk(
            lambda rows: to_numpy(
                self.detector_.predict_feature_maps(as_maps(data.features[rows]))
            ),
            data.features.shape[0],
        )


@register("react", "ReAct (p90)")
class ReAct(_ShapedEnergy):
    """ReAct + Energy: features clipped at the 90th percentile of all ID training activations.

    Sun et al., "ReAct: Out-of-distribution Detection With Rectified Activations", NeurIPS
    2021 (the paper's threshold). pytorch-ood ``ReAct`` scores (clip, head, energy); the
    percentile is taken over the flattened training features as its ``fit_feature_maps``.
    """

    def __init__(self, percentile: float = REACT_PERCENTILE) -> None:
        self.percentile = percentile

    def _threshold(self, train: Evidence) -> float:
        return float(np.percentile(np.asarray(train.features), self.percentile))

    def _detector(self, train: Evidence, head: Head) -> Any:
        self.threshold_ = self._threshold(train)
        return pood_detectors().ReAct(
            backbone=None, head=feature_map_head(head), threshold=self.threshold_
        )


@register("react_release", "ReAct (clip 0.9, release)")
class ReActRelease(ReAct):
    """ReAct + Energy with the NERO release's absolute clip at 0.9 (spec §5 reference)."""

    def __init__(self, threshold: float = REACT_RELEASE_THRESHOLD) -> None:
        self.threshold = threshold

    def _threshold(self, train: Evidence) -> float:
        return float(self.threshold)


@register("ash", "ASH-S")
class ASH(_ShapedEnergy):
    """ASH-S + Energy: per sample, zero the lowest 90 % of the activations and multiply the
    rest by ``exp(Σ all / Σ kept)``.

    Djurisic et al., "Extremely Simple Activation Shaping for Out-of-Distribution
    Detection", ICLR 2023 (ASH-S@90, applied to the penultimate features). pytorch-ood ``ASH``.
    """

    def __init__(self, percentile: float = ASH_PERCENTILE) -> None:
        self.percentile = percentile

    def _detector(self, train: Evidence, head: Head) -> Any:
        return pood_detectors().ASH(
            backbone=None,
            head=feature_map_head(head),
            variant="ash-s",
            percentile=self.percentile / 100.0,
        )


@register("scale", "SCALE")
class SCALE(_ShapedEnergy):
    """SCALE + Energy: all activations multiplied by ``exp(Σ all / Σ top 15 %)``, no pruning.

    Xu et al., "Scaling for Training Time and Post-hoc Out-of-distribution Detection
    Enhancement", ICLR 2024 (p = 85). pytorch-ood ``SCALE``.
    """

    def __init__(self, percentile: float = SCALE_PERCENTILE) -> None:
        self.percentile = percentile

    def _detector(self, train: Evidence, head: Head) -> Any:
        return pood_detectors().SCALE(
            backbone=None, head=feature_map_head(head), percentile=self.percentile / 100.0
        )
