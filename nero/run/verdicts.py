"""A score read as a verdict, with thresholds calibrated on the run's normal test images.

Three states, so that a score just above the usual operating point is not presented with the
same certainty as one far beyond anything normal images reach:

- **in-distribution**: at or below the score that flags :data:`BORDERLINE_FLAGS` of normal
  images (the FPR95 operating point: 95 % of normal test images score at or below it);
- **borderline**: between that and the score that flags :data:`OOD_FLAGS` of them;
- **out-of-distribution**: above it — fewer than 1 in 100 normal images score that high.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from nero.run.directory import Run

# Share of normal (ID test) images each threshold flags.
BORDERLINE_FLAGS = 0.05
OOD_FLAGS = 0.01
IN_DISTRIBUTION, BORDERLINE, OUT_OF_DISTRIBUTION = "in-distribution", "borderline", "OOD"
VERDICTS = (IN_DISTRIBUTION, BORDERLINE, OUT_OF_DISTRIBUTION)


def _quantile_threshold(scores: np.ndarray, flags: float) -> float:
    """The release's threshold rule (spec §4) at ``1 − flags``: ``sort(s)[floor(q·N)]``."""
    s = np.sort(np.asarray(scores, np.float64))
    return float(s[min(math.floor((1.0 - flags) * s.size), s.size - 1)])


@dataclass(frozen=True)
class Thresholds:
    """One method's two thresholds, and the normal scores they came from."""

    borderline: float  # flags BORDERLINE_FLAGS of normal images
    ood: float  # flags OOD_FLAGS of them
    normal: np.ndarray  # the ID test scores (sorted)

    @classmethod
    def from_normal(cls, scores: np.ndarray) -> Thresholds:
        scores = np.sort(np.asarray(scores, np.float64))
        if scores.size == 0:
            raise ValueError("thresholds need the scores of some normal (ID test) images")
        return cls(
            _quantile_threshold(scores, BORDERLINE_FLAGS),
            _quantile_threshold(scores, OOD_FLAGS),
            scores,
        )

    def verdict(self, scores: np.ndarray) -> np.ndarray:
        """One of :data:`VERDICTS` per score."""
        scores = np.asarray(scores, np.float64)
        out = np.full(scores.shape, IN_DISTRIBUTION, dtype=object)
        out[scores > self.borderline] = BORDERLINE
        out[scores > self.ood] = OUT_OF_DISTRIBUTION
        return out

    def percentile(self, scores: np.ndarray) -> np.ndarray:
        """% of normal test images scoring lower (0–100)."""
        ranks = np.searchsorted(self.normal, np.asarray(scores, np.float64), side="left")
        return 100.0 * ranks / self.normal.size

    def describe(self) -> str:
        return (
            f"borderline above {self.borderline:.4g} (flags {BORDERLINE_FLAGS:.0%} of normal "
            f"images), OOD above {self.ood:.4g} (flags {OOD_FLAGS:.0%})"
        )


def run_thresholds(run: Run, method: str) -> Thresholds:
    """The thresholds of one of the run's methods, from its ID test scores."""
    if method not in run.methods:
        raise ValueError(f"the run has no scores of {method!r}; it has {run.methods}")
    return Thresholds.from_normal(run.scores[method].to_numpy()[run.rows("id_test")])


def verdict_table(run: Run, scores: dict[str, float]) -> list[dict]:
    """One image's score by each method, with the method's verdict and how many normal test
    images score lower, every method at its own cut-offs: ``[{method, score, percentile,
    verdict}]`` in the order given."""
    rows = []
    for method, value in scores.items():
        thr = run_thresholds(run, method)
        array = np.asarray([value], np.float64)
        rows.append(
            {
                "method": method,
                "score": float(value),
                "percentile": round(float(thr.percentile(array)[0])),
                "verdict": str(thr.verdict(array)[0]),
            }
        )
    return rows


def telling_samples(run: Run, method: str) -> dict[str, int]:
    """The run's samples worth a first look by ``method``: its most OOD-like OOD image, the
    OOD image it misses most, and the normal test image it finds most unusual."""
    scores = run.scores[method].to_numpy(np.float64)
    splits = run.samples["split"].to_numpy().astype(str)
    ood, test = np.flatnonzero(np.char.startswith(splits, "ood:")), run.rows("id_test")
    picks = {}
    if ood.size:
        picks["Most OOD-like image"] = int(ood[np.argmax(scores[ood])])
        picks["Missed OOD image"] = int(ood[np.argmin(scores[ood])])
    if test.size:
        picks["Closest false alarm"] = int(test[np.argmax(scores[test])])
    return picks
