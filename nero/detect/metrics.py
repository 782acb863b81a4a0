"""OOD metrics with one sign convention: scores are higher for OOD, ID is class 0, OOD class 1.

All percentages are ×100, as the paper reports them.
"""

from __future__ import annotations

import math

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

# FPR95 keeps 95 % of in-distribution samples below the threshold (spec §4).
TPR_LEVEL = 0.95


def _split(id_scores: np.ndarray, ood_scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    id_scores = np.asarray(id_scores, np.float64).ravel()
    ood_scores = np.asarray(ood_scores, np.float64).ravel()
    if id_scores.size == 0 or ood_scores.size == 0:
        raise ValueError(
            f"need ID and OOD scores, got {id_scores.size} ID and {ood_scores.size} OOD"
        )
    for name, s in (("ID", id_scores), ("OOD", ood_scores)):
        if not np.isfinite(s).all():
            raise ValueError(f"{name} scores contain {int((~np.isfinite(s)).sum())} NaN/inf values")
    return id_scores, ood_scores


def fpr_at_95_tpr_threshold(id_scores: np.ndarray) -> float:
    """The release's threshold: ``sort(s_ID)[floor(0.95·N_ID)]`` (clipped to the last score)."""
    s = np.sort(np.asarray(id_scores, np.float64))
    return float(s[min(math.floor(TPR_LEVEL * s.size), s.size - 1)])


def fpr95(id_scores: np.ndarray, ood_scores: np.ndarray) -> float:
    """Share of OOD samples scored ≤ the threshold that keeps 95 % of ID (release definition)."""
    id_scores, ood_scores = _split(id_scores, ood_scores)
    t = fpr_at_95_tpr_threshold(id_scores)
    return float(np.mean(ood_scores <= t))


def ood_metrics(id_scores: np.ndarray, ood_scores: np.ndarray) -> dict[str, float]:
    """AUROC, FPR95, AUPR-In (ID positive) and AUPR-Out (OOD positive), ×100, 2 decimals."""
    id_scores, ood_scores = _split(id_scores, ood_scores)
    y = np.concatenate([np.zeros(id_scores.size), np.ones(ood_scores.size)])
    s = np.concatenate([id_scores, ood_scores])
    values = {
        "auroc": roc_auc_score(y, s),
        "fpr95": fpr95(id_scores, ood_scores),
        "aupr_in": average_precision_score(1 - y, -s),
        "aupr_out": average_precision_score(y, s),
    }
    return {k: round(100.0 * float(v), 2) for k, v in values.items()}


def auroc(id_scores: np.ndarray, ood_scores: np.ndarray) -> float:
    """AUROC ×100 (OOD positive), unrounded: for curves and live views."""
    id_scores, ood_scores = _split(id_scores, ood_scores)
    y = np.concatenate([np.zeros(id_scores.size), np.ones(ood_scores.size)])
    return 100.0 * float(roc_auc_score(y, np.concatenate([id_scores, ood_scores])))


def roc(id_scores: np.ndarray, ood_scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The ROC curve (false positive rate = ID flagged, true positive rate = OOD caught)."""
    id_scores, ood_scores = _split(id_scores, ood_scores)
    y = np.concatenate([np.zeros(id_scores.size), np.ones(ood_scores.size)])
    fpr, tpr, _ = roc_curve(y, np.concatenate([id_scores, ood_scores]))
    return fpr, tpr


def accuracy(labels: np.ndarray, predictions: np.ndarray) -> float:
    """Top-1 accuracy ×100 (2 decimals)."""
    labels = np.asarray(labels)
    if labels.size == 0:
        raise ValueError("accuracy of an empty set is undefined")
    return round(100.0 * float(np.mean(labels == np.asarray(predictions))), 2)


def rates_at_threshold(
    id_scores: np.ndarray, ood_scores: np.ndarray, threshold: float
) -> dict[str, float]:
    """Flag ``score > threshold`` as OOD: TPR (OOD caught), FPR (ID flagged), precision, counts."""
    id_scores = np.asarray(id_scores, np.float64)
    ood_scores = np.asarray(ood_scores, np.float64)
    tp = int((ood_scores > threshold).sum())
    fn = int(ood_scores.size - tp)
    fp = int((id_scores > threshold).sum())
    tn = int(id_scores.size - fp)
    return {
        "tpr": tp / max(tp + fn, 1),
        "fpr": fp / max(fp + tn, 1),
        "precision": tp / (tp + fp) if tp + fp else float("nan"),
        "tp": tp,
        "fp": fp,
        "tn": tn,
        "fn": fn,
    }


def precision_at(tpr: float, fpr: float, prevalence: float) -> float:
    """Precision at an OOD prevalence other than the test set's: of the images flagged, the
    share truly OOD when a share ``prevalence`` of all images is OOD (NaN: nothing flagged)."""
    if not 0.0 <= prevalence <= 1.0:
        raise ValueError(f"prevalence must lie in [0, 1], got {prevalence}")
    flagged = prevalence * tpr + (1.0 - prevalence) * fpr
    return float("nan") if flagged <= 0 else prevalence * tpr / flagged
