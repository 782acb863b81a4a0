"""NERO's hyper-parameters: the presets, their ranges, and how counts are read from them."""

from __future__ import annotations

from typing import Any

import numpy as np

from nero.detect.space import DISTANCES

# The release keeps the 175 most negative-relevance neurons: 175/512 of ResNet-18's width.
RELEASE_NORM_NEURONS = 175
RELEASE_NORM_FRACTION = RELEASE_NORM_NEURONS / 512
BIAS_TERMS = ("release", "pca", "none")
# The space distances are measured in, after PCA: as is ("none", the release), each component
# scaled to unit variance ("total"), or the pooled within-class covariance whitened
# ("within": a Mahalanobis distance with one shared, Ledoit–Wolf-shrunk covariance).
WHITENINGS = ("none", "total", "within")
# When distances are divided by each centroid's spread (NERO's ``class_calibration``).
CALIBRATIONS = ("none", "choose", "score")

# The reference release, quirks included (spec §2–3).
REFERENCE: dict[str, Any] = dict(
    n_components="2/3",
    norm_neurons=RELEASE_NORM_NEURONS,
    centroids_per_class=1,
    epsilon=0.0,
    distance="l1",
)
PRESETS: dict[str, dict[str, Any]] = {
    "reference": REFERENCE,
    # Chosen by bench/select_default.py from ID data alone (each class held out in turn, and
    # corruptions of ID test images; the demo and the real development set), among settings
    # whose nearest centroid is the image's own class for >= 95 % of correctly classified ID
    # test images: PCA components at unit variance, L2, the nearest centroid chosen by plain
    # distance and the distance then read in units of that class's normal spread; LRP-ε, no
    # bias term, no norm ratio. Results: bench/results/select_default.md.
    "default": dict(
        REFERENCE,
        norm_neurons=RELEASE_NORM_FRACTION,
        epsilon=0.1,
        distance="l2",
        whiten="total",
        bias_term="none",
        norm_ratio=False,
        class_calibration="score",
    ),
}


def calibration_mode(calibration: bool | str) -> str:
    """``class_calibration`` as one of :data:`CALIBRATIONS` (``True``/``False``: choose/none)."""
    if isinstance(calibration, bool):
        return "choose" if calibration else "none"
    return calibration


def whitening_mode(whiten: bool | str) -> str:
    """``whiten`` as one of :data:`WHITENINGS` (``True``/``False`` of older runs: total/none)."""
    if isinstance(whiten, bool):
        return "total" if whiten else "none"
    return whiten


def norm_neuron_count(spec: int | float, n_features: int) -> int:
    """A count (int) or a fraction of D (float in (0, 1)); a count ≥ D means every neuron.

    The release hard-codes 175 and, when D ≤ 175, silently uses every neuron (ratio = 1).
    """
    if isinstance(spec, float) and 0 < spec < 1:
        return max(1, int(round(spec * n_features)))
    if spec < 1 or float(spec) != int(spec):
        raise ValueError(f"norm_neurons must be a count ≥ 1 or a fraction in (0, 1), got {spec}")
    return min(int(spec), n_features)


def _is_int(value: Any) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def check_params(params: dict[str, Any]) -> None:
    """Raise a ValueError naming the first parameter outside its range."""

    def bad(name: str, want: str) -> ValueError:
        return ValueError(f"NERO parameter {name}={params[name]!r}: {want}")

    spec = params["n_components"]
    if isinstance(spec, str):
        num, sep, den = spec.partition("/")
        if not (num.isdigit() and (not sep or den.isdigit()) and int(num) > 0):
            raise bad("n_components", 'expected a count or a fraction like "2/3"')
        if sep and int(den) == 0:
            raise bad("n_components", "the denominator must not be 0")
    elif not _is_int(spec) or spec < 1:
        raise bad("n_components", 'expected a count ≥ 1 or a fraction like "2/3"')
    norm = params["norm_neurons"]
    if isinstance(norm, bool) or not isinstance(norm, int | float | np.number):
        raise bad("norm_neurons", "expected a count ≥ 1 or a fraction in (0, 1)")
    if not (0 < norm < 1 or (norm >= 1 and float(norm) == int(norm))):
        raise bad("norm_neurons", "expected a count ≥ 1 or a fraction in (0, 1)")
    if not _is_int(params["centroids_per_class"]) or params["centroids_per_class"] < 1:
        raise bad("centroids_per_class", "expected an integer ≥ 1")
    eps = params["epsilon"]
    if isinstance(eps, bool) or not isinstance(eps, int | float) or not 0 <= eps < np.inf:
        raise bad("epsilon", "expected a finite number ≥ 0 (0 = LRP-0)")
    if params["distance"] not in DISTANCES:
        raise bad("distance", f"expected one of {DISTANCES}")
    if params["bias_term"] not in BIAS_TERMS:
        raise bad("bias_term", f"expected one of {BIAS_TERMS}")
    if not isinstance(params["whiten"], bool) and params["whiten"] not in WHITENINGS:
        raise bad("whiten", f"expected one of {WHITENINGS}")
    if not isinstance(params["norm_ratio"], bool):
        raise bad("norm_ratio", "expected true or false")
    calibration = params["class_calibration"]
    if not isinstance(calibration, bool) and calibration not in CALIBRATIONS:
        raise bad("class_calibration", f"expected one of {CALIBRATIONS}")
    if not _is_int(params["random_state"]):
        raise bad("random_state", "expected an integer")
