"""Conformal p-values for every method, and ``fusion``: one calibrated score from several.

**The calibration set is the run's ID test images**, never its training images: the
classifier was trained on ``id_train``, so its training images look more normal to it than
new frames do, and p-values calibrated on them would be too small (more false alarms than
promised; ``bench/conformal.py`` measures by how much). ID test images were seen by neither the
model nor the detectors, so they are exchangeable with new frames of the same kind of
examination, which is all a conformal p-value needs.

- For a new image (``nero score``, uploads), the p-value of score ``s`` is
  ``(1 + #{ID test scores ≥ s}) / (n + 1)``: the share of normal frames at least as unusual.
  If the frame comes from the same distribution as the ID test images,
  ``P(p ≤ α) ≤ α`` for every α.
- For the run's own ID test images the same rule would count each image against itself, so
  they are **cross-fitted**: split in two class-stratified halves (seeded), each half's
  p-values come from the other half. The share of ID test images with ``p ≤ α`` is then an
  honest estimate of the false-alarm rate on new normal frames (``realised_fpr``).

**Fusion** combines members' p-values by one of :data:`COMBINATIONS` (large = unusual), and
that statistic is calibrated the same way:

- ``fisher``: ``−2 Σ log p`` — every member's evidence adds up; one very small p is enough;
- ``stouffer``: ``Σ Φ⁻¹(1 − p)`` — members vote on a common scale; one member alone moves it
  less, agreement moves it more;
- ``min-p`` (Tippett): ``−log min p`` — the most alarmed member decides.

The members *and* the combination are chosen from ID-only evidence by the recommendation
(:func:`nero.run.recommend.choose_fusion`): for each combination, the best single method on
the ID-only proxies, the partner that raises the fused proxy AUROC most, and a third only if
it adds half a point; the combination whose fusion does best on the proxies wins. fusion
competes with the single methods on proxy AUROCs cross-validated over the proxies. A run
without proxies falls back to :func:`choose_members` (the ranking's best, near-copies on ID
images skipped) and Fisher's method. No OOD image is read.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import norm, spearmanr

ALPHA = 0.05  # the default share of normal frames a threshold may flag
FUSION = "fusion"
P_PREFIX = "p:"  # p-value columns in scores.csv: "p:nero" beside "nero"
MAX_MEMBERS = 3
MAX_MEMBER_CORRELATION = 0.9


def p_values(calibration: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """``(1 + #{calibration ≥ s}) / (n + 1)`` for every score ``s`` (vectorised)."""
    cal = np.sort(np.asarray(calibration, np.float64))
    if cal.size == 0:
        raise ValueError("conformal p-values need some calibration (ID test) scores")
    above = cal.size - np.searchsorted(cal, np.asarray(scores, np.float64), side="left")
    return (1.0 + above) / (cal.size + 1.0)


def halves(labels: np.ndarray, seed: int) -> np.ndarray:
    """0/1 per ID test image: a class-stratified random split in two halves."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    fold = np.zeros(labels.size, np.int8)
    for label in np.unique(labels):
        rows = np.flatnonzero(labels == label)
        rows = rows[rng.permutation(rows.size)]
        fold[rows[1::2]] = 1
    return fold


@dataclass(frozen=True)
class Calibration:
    """The run's ID test rows and their cross-fitting halves."""

    test_rows: np.ndarray  # row indices of the ID test images
    fold: np.ndarray  # 0/1 per ID test row

    @classmethod
    def of_run(cls, test_rows: np.ndarray, labels: np.ndarray, seed: int) -> Calibration:
        test_rows = np.asarray(test_rows, np.int64)
        if test_rows.size < 4:
            raise ValueError(
                f"conformal p-values need at least 4 ID test images, the run has {test_rows.size}"
            )
        return cls(test_rows, halves(np.asarray(labels)[test_rows], seed))

    def run_p_values(self, scores: np.ndarray) -> np.ndarray:
        """p-values of every row of a run: ID test rows cross-fitted, the rest against all."""
        scores = np.asarray(scores, np.float64)
        out = p_values(scores[self.test_rows], scores)
        for half in (0, 1):
            mine = self.test_rows[self.fold == half]
            other = self.test_rows[self.fold != half]
            out[mine] = p_values(scores[other], scores[mine])
        return out

    def realised_fpr(self, p: np.ndarray, alpha: float = ALPHA) -> float:
        """Share of ID test images flagged at ``alpha`` (cross-fitted p-values), in %."""
        return float(100.0 * np.mean(np.asarray(p)[self.test_rows] <= alpha))


def _stacked(p_by_member: Sequence[np.ndarray]) -> np.ndarray:
    return np.stack([np.asarray(p, np.float64) for p in p_by_member])


def fisher(p_by_member: Sequence[np.ndarray]) -> np.ndarray:
    """Fisher's combination ``−2 Σ log p``: large when some member finds the image unusual."""
    return -2.0 * np.sum(np.log(_stacked(p_by_member)), 0)


# A p-value of 1 (the lowest score of all) would be z = −∞: one member could veto the rest.
_HIGHEST_P = 1.0 - 1e-6


def stouffer(p_by_member: Sequence[np.ndarray]) -> np.ndarray:
    """Stouffer's combination ``Σ Φ⁻¹(1 − p)``: large when the members agree it is unusual."""
    return np.sum(norm.isf(np.minimum(_stacked(p_by_member), _HIGHEST_P)), 0)


def min_p(p_by_member: Sequence[np.ndarray]) -> np.ndarray:
    """Tippett's combination ``−log min p``: as unusual as the most alarmed member says."""
    return -np.log(np.min(_stacked(p_by_member), 0))


COMBINATIONS = {"fisher": fisher, "stouffer": stouffer, "min-p": min_p}
COMBINATION_NAMES = {"fisher": "Fisher's method", "stouffer": "Stouffer's method",
                     "min-p": "the smallest p-value (Tippett)"}  # fmt: skip


def combine(p_by_member: Sequence[np.ndarray], combination: str = "fisher") -> np.ndarray:
    """Members' p-values combined by one of :data:`COMBINATIONS` (large = unusual)."""
    if combination not in COMBINATIONS:
        raise ValueError(f"unknown combination {combination!r}: one of {sorted(COMBINATIONS)}")
    return COMBINATIONS[combination](p_by_member)


def contributions(member_p: Mapping[str, float], combination: str = "fisher") -> dict[str, float]:
    """Each member's share of one fused score's evidence (sums to 1): its term of the
    combination (``−log p`` for Fisher, its positive ``z`` for Stouffer; min-p: the most
    alarmed member carries it all, ties shared)."""
    p = np.array([member_p[m] for m in member_p], np.float64)
    if combination == "stouffer":
        term = np.maximum(norm.isf(np.minimum(p, _HIGHEST_P)), 0.0)
    elif combination == "min-p":
        term = (p == p.min()).astype(np.float64)
    else:
        term = -np.log(p)
    total = term.sum()
    share = term / total if total > 0 else np.full(p.size, 1.0 / max(p.size, 1))
    return dict(zip(member_p, share.tolist(), strict=True))


def choose_members(
    ranking: Sequence[str], id_scores: Mapping[str, np.ndarray], limit: int = MAX_MEMBERS
) -> tuple[list[str], str]:
    """Members for ``fusion`` from ID-only evidence, and why, in one sentence.

    ``ranking``: methods best first on the ID-only proxies (the recommendation's);
    ``id_scores``: each method's scores on ID images (their correlation says which are
    near-copies of each other).
    """
    members: list[str] = []
    skipped: list[str] = []
    for name in ranking:
        if name not in id_scores or name == FUSION:
            continue
        twin = next(
            (
                m
                for m in members
                if abs(spearmanr(id_scores[name], id_scores[m]).statistic) > MAX_MEMBER_CORRELATION
            ),
            None,
        )
        if twin is not None:
            skipped.append(f"{name} (≈ {twin})")
            continue
        members.append(name)
        if len(members) == limit:
            break
    why = (
        f"the {len(members)} best methods on the ID-only proxies, skipping near-copies on ID "
        f"images (Spearman |ρ| > {MAX_MEMBER_CORRELATION})"
        + (f": {', '.join(skipped)}" if skipped else "")
        + "; combined by Fisher's method and calibrated on ID test images like every method"
    )
    return members, why


def fused_statistic(
    p_by_member: Mapping[str, np.ndarray], members: Sequence[str], combination: str = "fisher"
) -> np.ndarray:
    return combine([p_by_member[m] for m in members], combination)


def p_value_words(p: float) -> str:
    """A p-value as a clinician reads it: how many normal frames look this unusual."""
    if not np.isfinite(p):
        return "no calibration"
    if p <= 0.005:
        return "fewer than 1 in 200 normal frames look this unusual"
    if p <= 0.01:
        return "about 1 in 100 normal frames look this unusual, or fewer"
    if p <= 0.05:
        return f"about {max(1, round(100 * p))} in 100 normal frames look this unusual"
    return f"{round(100 * p)} in 100 normal frames look at least this unusual"


def new_image_p_values(
    id_test_scores: Mapping[str, np.ndarray],
    scores: Mapping[str, np.ndarray],
    members: Sequence[str] = (),
    combination: str = "fisher",
) -> dict[str, np.ndarray]:
    """p-values of new images against the run's ID test scores, and ``fusion`` (its
    statistic and p-value) when the run has members; keys ``p:METHOD`` and ``fusion``."""
    out = {
        P_PREFIX + m: p_values(id_test_scores[m], v)
        for m, v in scores.items()
        if m in id_test_scores
    }
    if members and all(m in scores and m in id_test_scores for m in members):
        fused = fused_statistic({m: out[P_PREFIX + m] for m in members}, members, combination)
        out[FUSION] = fused
        out[P_PREFIX + FUSION] = p_values(id_test_scores[FUSION], fused)
    return out


def conformal_threshold(calibration: np.ndarray, alpha: float = ALPHA) -> float:
    """The score above which a new frame's p-value is at most ``alpha`` (``inf``: with this
    few calibration images no frame can be flagged at ``alpha``)."""
    cal = np.sort(np.asarray(calibration, np.float64))[::-1]
    allowed = int(np.floor(alpha * (cal.size + 1))) - 1  # calibration scores ≥ s allowed
    if allowed < 0:
        return float("inf")
    return float(cal[min(allowed, cal.size - 1)])
