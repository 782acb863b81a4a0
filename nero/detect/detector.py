"""NERO: nearest relevance centroid distance, bias term and feature-norm ratio (spec §2–3).

A scikit-learn-style estimator: hyper-parameters in ``__init__``, ``fit`` learns attributes
ending in ``_``, ``score`` returns one number per sample (higher = more out-of-distribution),
``explain`` returns the parts of that number.
"""

from __future__ import annotations

import inspect
import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA

from nero.files import save_npz

# The release keeps the 175 most negative-relevance neurons: 175/512 of ResNet-18's width.
RELEASE_NORM_NEURONS = 175
RELEASE_NORM_FRACTION = RELEASE_NORM_NEURONS / 512

PRESETS: dict[str, dict[str, Any]] = {
    # The reference release, quirks included (spec §2–3).
    "reference": dict(
        n_components="2/3",
        norm_neurons=RELEASE_NORM_NEURONS,
        centroids_per_class=1,
        epsilon=0.0,
        distance="l1",
    ),
    # Chosen by bench/ablation.py on in-distribution data only (ID-val vs generic corruptions
    # of ID-val), never on an evaluation OOD set: whitened PCA space, LRP-ε, no bias term,
    # no norm ratio, per-centroid calibration. Results: bench/results/ablation.md.
    "default": dict(
        n_components="2/3",
        norm_neurons=RELEASE_NORM_FRACTION,
        centroids_per_class=1,
        epsilon=0.1,
        distance="l1",
        whiten=True,
        bias_term="none",
        norm_ratio=False,
        class_calibration=True,
    ),
}
# A whitened component whose variance is below this share of the largest is a null direction.
NULL_VARIANCE = 1e-10
DISTANCES = ("l1", "l2")
BIAS_TERMS = ("release", "pca", "none")


class NotFittedError(RuntimeError):
    """The detector was used before ``fit``."""


class DegenerateFitError(ValueError):
    """The training data cannot define a detector (e.g. every image gives the same relevance)."""


class DegenerateFitWarning(UserWarning):
    """The fit worked around thin training data (a run records these warnings)."""


# Training relevance whose total variance is below this share of its mean square is constant
# up to float rounding: whitening it would turn rounding noise into astronomically large scores.
MIN_RELATIVE_SPREAD = 1e-12


def _check_spread(neuron_rel: np.ndarray) -> None:
    """Refuse training relevance that does not vary (identical images, a constant model)."""
    total = float(neuron_rel.var(axis=0).sum())
    power = float((neuron_rel**2).sum(axis=1).mean())
    if total <= MIN_RELATIVE_SPREAD * power or total == 0.0:
        raise DegenerateFitError(
            f"the {neuron_rel.shape[0]} training samples have (nearly) identical relevance "
            f"vectors (total variance {total:.3g}): NERO cannot learn what normal variation "
            "looks like. Are the training images copies of one image, or is the model constant?"
        )


@dataclass(frozen=True)
class Explanation:
    """The parts of NERO's score, one row per sample."""

    score: np.ndarray  # (distance + bias_term) * norm_ratio
    distance: np.ndarray  # min over centroids of the PCA-space distance
    bias_term: np.ndarray  # λ·|R_bias|
    norm_ratio: np.ndarray  # share of |activation| held by the most negative-relevance neurons
    nearest_centroid: np.ndarray  # index into centroids_
    nearest_class: np.ndarray  # class of that centroid
    deviation: np.ndarray  # N×D: raw neuron relevance minus the nearest centroid's
    norm_neurons: np.ndarray  # N×k indices of the neurons in the norm ratio


def n_components_for(spec: int | str, n_features: int) -> int:
    """``"2/3"`` → ``int(2·D/3)`` (the release); an int is taken as is."""
    if isinstance(spec, str):
        num, _, den = spec.partition("/")
        return int(int(num) * n_features / int(den or 1))
    return int(spec)


def norm_neuron_count(spec: int | float, n_features: int) -> int:
    """A count (int) or a fraction of D (float in (0, 1)); a count ≥ D means every neuron.

    The release hard-codes 175 and, when D ≤ 175, silently uses every neuron (ratio = 1).
    """
    if isinstance(spec, float) and 0 < spec < 1:
        return max(1, int(round(spec * n_features)))
    if spec < 1 or float(spec) != int(spec):
        raise ValueError(f"norm_neurons must be a count ≥ 1 or a fraction in (0, 1), got {spec}")
    return min(int(spec), n_features)


def _pairwise_min(
    x: np.ndarray, centres: np.ndarray, metric: str, scale: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Distance to the nearest centre (each divided by its scale) and the centre's index.

    One pass per centre (a handful), so memory stays N×D rather than N×M×D.
    """
    best = np.full(x.shape[0], np.inf)
    arg = np.zeros(x.shape[0], np.int64)
    for m, centre in enumerate(centres):
        diff = x - centre
        d = np.abs(diff).sum(axis=1) if metric == "l1" else np.sqrt((diff * diff).sum(axis=1))
        if scale is not None:
            d = d / scale[m]
        closer = d < best
        best = np.where(closer, d, best)
        arg = np.where(closer, m, arg)
    return best, arg


class NERO:
    """Neuron-level relevance OOD detector.

    Parameters
    ----------
    n_components : PCA size, an int or ``"num/den"`` of D (release: ``"2/3"``).
    norm_neurons : neurons in the feature-norm ratio, a count (release: 175) or a fraction of D.
    centroids_per_class : 1 = class means (release); >1 = k-means inside each class.
    epsilon : LRP-ε stabiliser used when relevance is computed by this package (0 = LRP-0).
    distance : ``"l1"`` (release) or ``"l2"`` in PCA space.
    whiten : scale PCA components to unit variance (a Mahalanobis-like distance); release: no.
    bias_term : how the bias relevance enters: ``"release"`` (λ from raw-space distances, a
        scale the PCA distance does not share), ``"pca"`` (λ from the same PCA-space distances
        the score uses) or ``"none"``.
    norm_ratio : multiply by the feature-norm ratio (release: yes).
    class_calibration : divide each centroid's distance by its training members' mean distance.
    random_state : seed for k-means.
    """

    def __init__(
        self,
        n_components: int | str = "2/3",
        norm_neurons: int | float = RELEASE_NORM_NEURONS,
        centroids_per_class: int = 1,
        epsilon: float = 0.0,
        distance: str = "l1",
        whiten: bool = False,
        bias_term: str = "release",
        norm_ratio: bool = True,
        class_calibration: bool = False,
        random_state: int = 42,
    ) -> None:
        self.n_components = n_components
        self.norm_neurons = norm_neurons
        self.centroids_per_class = centroids_per_class
        self.epsilon = epsilon
        self.distance = distance
        self.whiten = whiten
        self.bias_term = bias_term
        self.norm_ratio = norm_ratio
        self.class_calibration = class_calibration
        self.random_state = random_state

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> NERO:
        """A preset's parameters with ``overrides``, validated (unknown names are refused)."""
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; choose from {sorted(PRESETS)}")
        unknown = sorted(set(overrides) - set(cls.param_names()))
        if unknown:
            raise ValueError(
                f"unknown NERO parameter(s) {unknown}; NERO's parameters are "
                f"{', '.join(cls.param_names())}"
            )
        return cls(**{**PRESETS[name], **overrides}).check_params()

    @classmethod
    def param_names(cls) -> list[str]:
        """The constructor's arguments, as scikit-learn derives them."""
        return [p for p in inspect.signature(cls.__init__).parameters if p != "self"]

    def get_params(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.param_names()}

    def check_params(self) -> NERO:
        """Raise a ValueError naming the first parameter outside its range; returns self."""

        def bad(name: str, want: str) -> ValueError:
            return ValueError(f"NERO parameter {name}={getattr(self, name)!r}: {want}")

        spec = self.n_components
        if isinstance(spec, str):
            num, sep, den = spec.partition("/")
            if not (num.isdigit() and (not sep or den.isdigit()) and int(num) > 0):
                raise bad("n_components", 'expected a count or a fraction like "2/3"')
            if sep and int(den) == 0:
                raise bad("n_components", "the denominator must not be 0")
        elif isinstance(spec, bool) or not isinstance(spec, int | np.integer) or spec < 1:
            raise bad("n_components", 'expected a count ≥ 1 or a fraction like "2/3"')
        norm = self.norm_neurons
        if isinstance(norm, bool) or not isinstance(norm, int | float | np.number):
            raise bad("norm_neurons", "expected a count ≥ 1 or a fraction in (0, 1)")
        if not (0 < norm < 1 or (norm >= 1 and float(norm) == int(norm))):
            raise bad("norm_neurons", "expected a count ≥ 1 or a fraction in (0, 1)")
        k = self.centroids_per_class
        if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
            raise bad("centroids_per_class", "expected an integer ≥ 1")
        eps = self.epsilon
        if isinstance(eps, bool) or not isinstance(eps, int | float) or not 0 <= eps < np.inf:
            raise bad("epsilon", "expected a finite number ≥ 0 (0 = LRP-0)")
        if self.distance not in DISTANCES:
            raise bad("distance", f"expected one of {DISTANCES}")
        if self.bias_term not in BIAS_TERMS:
            raise bad("bias_term", f"expected one of {BIAS_TERMS}")
        for flag in ("whiten", "norm_ratio", "class_calibration"):
            if not isinstance(getattr(self, flag), bool):
                raise bad(flag, "expected true or false")
        seed = self.random_state
        if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
            raise bad("random_state", "expected an integer")
        return self

    # ------------------------------------------------------------------ fit
    def fit(self, features: np.ndarray, relevance: np.ndarray, labels: np.ndarray) -> NERO:
        """Learn PCA, class centroids and the bias scale λ from in-distribution training data."""
        self.check_params()
        features, relevance = self._check(features, relevance)
        labels = np.asarray(labels)
        if labels.shape != (relevance.shape[0],):
            raise ValueError(f"labels have shape {labels.shape}, expected ({relevance.shape[0]},)")
        n, d = features.shape
        if n < 2:
            raise ValueError(f"NERO needs at least 2 training samples, got {n}")
        neuron_rel = relevance[:, :d]
        _check_spread(neuron_rel)

        wanted = n_components_for(self.n_components, d)
        n_comp = min(wanted, n, d)
        if n_comp < wanted:
            warnings.warn(
                f"n_components={wanted} exceeds what {n} training samples × {d} features allow; "
                f"using {n_comp}",
                stacklevel=2,
            )
        # "full" SVD: deterministic for any data size (the randomized solver is not).
        pca = PCA(n_components=n_comp, svd_solver="full").fit(neuron_rel)
        self.pca_mean_ = pca.mean_.astype(np.float64)
        self.pca_components_ = pca.components_.astype(np.float64)
        variance = pca.explained_variance_.astype(np.float64)
        if self.whiten:
            # Whitening divides by each component's spread: a direction the training data do
            # not vary along (n ≤ k leaves at least one) would magnify rounding noise ~1e6×.
            null = variance <= variance.max() * NULL_VARIANCE
            null[0] = False  # keep at least the leading component
            if null.any():
                warnings.warn(
                    f"dropping {int(null.sum())} of {n_comp} PCA components along which the "
                    f"{n} training samples do not vary (whitening would magnify noise there)",
                    stacklevel=2,
                )
                self.pca_components_ = self.pca_components_[~null]
                variance, n_comp = variance[~null], int((~null).sum())
            floor = np.finfo(np.float64).tiny  # an all-constant training set
            self.pca_scale_ = np.sqrt(np.maximum(variance, floor))
        else:
            self.pca_scale_ = np.ones(n_comp)
        projected = self._project(neuron_rel)

        classes = np.unique(labels)
        cluster = np.empty(n, np.int64)
        centroid_class: list[int] = []
        for c in classes:  # one block per class, vectorised inside
            members = np.flatnonzero(labels == c)
            k = min(self.centroids_per_class, members.size)
            if k <= 1:
                assign = np.zeros(members.size, np.int64)
            else:
                km = KMeans(n_clusters=k, n_init=10, random_state=self.random_state)
                assign = km.fit_predict(projected[members])
            cluster[members] = assign + len(centroid_class)
            centroid_class.extend([int(c)] * (int(assign.max()) + 1))
        n_centroids = len(centroid_class)
        counts = np.bincount(cluster, minlength=n_centroids)[:, None]
        self.centroids_ = np.zeros((n_centroids, n_comp))
        np.add.at(self.centroids_, cluster, projected)
        self.centroids_ /= counts
        raw = np.zeros((n_centroids, d + 1))
        np.add.at(raw, cluster, relevance)
        self.raw_centroids_ = raw / counts
        self.centroid_classes_ = np.asarray(centroid_class, np.int64)
        self.centroid_scale_ = np.ones(n_centroids)
        if self.class_calibration:
            diff = projected - self.centroids_[cluster]
            own = np.abs(diff).sum(1) if self.distance == "l1" else np.sqrt((diff * diff).sum(1))
            spread = np.bincount(cluster, weights=own, minlength=n_centroids) / counts[:, 0]
            alone = spread <= 0  # one member (or identical ones): no spread of its own
            if alone.any():
                warnings.warn(
                    f"{int(alone.sum())} centroid(s) (classes "
                    f"{sorted({int(c) for c in self.centroid_classes_[alone]})}) have a single "
                    "distinct training sample, so no spread of their own: they use the median "
                    "spread of the others. Add training images of those classes.",
                    DegenerateFitWarning,
                    stacklevel=2,
                )
            fallback = float(np.median(spread[~alone])) if (~alone).any() else 1.0
            self.centroid_scale_ = np.where(alone, fallback, spread)

        mean_bias = np.abs(relevance[:, d]).mean()
        if self.bias_term == "release":
            # λ: raw relevance incl. bias, scored against the centroids it built (release §2).
            reference, _ = _pairwise_min(relevance, self.raw_centroids_, "l1")
        elif self.bias_term == "pca":  # the distances the score itself uses
            reference, _ = self._nearest(projected)
        else:
            reference = np.zeros(1)
        self.bias_scale_ = float(reference.mean() / mean_bias) if mean_bias > 0 else 0.0
        self.n_features_in_ = d
        self.norm_neurons_ = norm_neuron_count(self.norm_neurons, d)
        return self

    # ---------------------------------------------------------------- score
    def score(self, features: np.ndarray, relevance: np.ndarray) -> np.ndarray:
        """One OOD score per sample, higher = more out-of-distribution."""
        return self.explain(features, relevance).score

    def explain(self, features: np.ndarray, relevance: np.ndarray) -> Explanation:
        """The score and its parts for every sample (spec §3, §8)."""
        self._check_fitted()
        features, relevance = self._check(features, relevance)
        d = self.n_features_in_
        if features.shape[1] != d:
            raise ValueError(f"detector was fit on D={d} features, got D={features.shape[1]}")
        neuron_rel = relevance[:, :d]
        distance, nearest = self._nearest(self._project(neuron_rel))
        bias_term = self.bias_scale_ * np.abs(relevance[:, d])

        k = self.norm_neurons_
        if k < d:
            selected = np.argpartition(neuron_rel, k - 1, axis=1)[:, :k]
        else:  # every neuron: the release's behaviour when D ≤ k
            selected = np.broadcast_to(np.arange(d), (features.shape[0], d))
        abs_a = np.abs(features)
        total = abs_a.sum(axis=1)
        part = np.take_along_axis(abs_a, selected, axis=1).sum(axis=1)
        # All-zero activations: no norm to share out, so the ratio is neutral.
        norm_ratio = np.divide(part, total, out=np.ones_like(total), where=total > 0)

        score = (distance + bias_term) * (norm_ratio if self.norm_ratio else 1.0)
        deviation = neuron_rel - self.raw_centroids_[nearest, :d]
        return Explanation(
            score=score,
            distance=distance,
            bias_term=bias_term,
            norm_ratio=norm_ratio,
            nearest_centroid=nearest,
            nearest_class=self.centroid_classes_[nearest],
            deviation=deviation,
            norm_neurons=np.asarray(selected),
        )

    def project(self, relevance: np.ndarray, chunk: int = 65536) -> np.ndarray:
        """Relevance (N×D, or N×(D+1) with the bias column) in the space distances live in."""
        self._check_fitted()
        d = self.n_features_in_
        relevance = np.asarray(relevance)
        if relevance.ndim != 2 or relevance.shape[1] not in (d, d + 1):
            raise ValueError(
                f"relevance has shape {relevance.shape}, the detector expects N×{d + 1}"
            )
        out = np.empty((relevance.shape[0], self.pca_components_.shape[0]))
        for start in range(0, relevance.shape[0], chunk):  # memory-mapped runs stay on disk
            block = np.asarray(relevance[start : start + chunk, :d], np.float64)
            out[start : start + chunk] = self._project(block)
        return out

    # ------------------------------------------------------------ save/load
    def save(self, path: str | Path) -> None:
        """Write the fitted state to ``detector.npz`` (no pickles)."""
        self._check_fitted()
        save_npz(
            path,
            params=np.array(json.dumps(self.get_params())),
            pca_mean=self.pca_mean_,
            pca_components=self.pca_components_,
            pca_scale=self.pca_scale_,
            centroid_scale=self.centroid_scale_,
            centroids=self.centroids_,
            raw_centroids=self.raw_centroids_,
            centroid_classes=self.centroid_classes_,
            bias_scale=np.array(self.bias_scale_),
            norm_neurons=np.array(self.norm_neurons_),
        )

    @classmethod
    def load(cls, path: str | Path) -> NERO:
        with np.load(path, allow_pickle=False) as z:
            detector = cls(**json.loads(str(z["params"])))
            detector.pca_mean_ = z["pca_mean"]
            detector.pca_components_ = z["pca_components"]
            detector.pca_scale_ = z["pca_scale"]
            detector.centroid_scale_ = z["centroid_scale"]
            detector.centroids_ = z["centroids"]
            detector.raw_centroids_ = z["raw_centroids"]
            detector.centroid_classes_ = z["centroid_classes"]
            detector.bias_scale_ = float(z["bias_scale"])
            detector.norm_neurons_ = int(z["norm_neurons"])
        detector.n_features_in_ = detector.pca_mean_.shape[0]
        return detector

    # -------------------------------------------------------------- helpers
    def _project(self, neuron_rel: np.ndarray) -> np.ndarray:
        return ((neuron_rel - self.pca_mean_) @ self.pca_components_.T) / self.pca_scale_

    def _nearest(self, projected: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Calibrated distance to the nearest centroid, and its index."""
        return _pairwise_min(projected, self.centroids_, self.distance, self.centroid_scale_)

    def _check_fitted(self) -> None:
        if not hasattr(self, "centroids_"):
            raise NotFittedError("this NERO detector is not fitted yet: call fit() first")

    @staticmethod
    def _check(features: np.ndarray, relevance: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        features = np.asarray(features, np.float64)
        relevance = np.asarray(relevance, np.float64)
        if features.ndim != 2 or relevance.ndim != 2:
            raise ValueError("features and relevance must be 2-D (samples × neurons)")
        if relevance.shape != (features.shape[0], features.shape[1] + 1):
            raise ValueError(
                f"relevance has shape {relevance.shape}; expected {features.shape[0]}×"
                f"{features.shape[1] + 1} (one column per neuron plus the bias)"
            )
        for name, arr in (("features", features), ("relevance", relevance)):
            finite = np.isfinite(arr).all(axis=1)
            if not finite.all():
                rows = np.flatnonzero(~finite)
                raise ValueError(
                    f"{name} contain NaN/inf in {rows.size} rows (first: {rows[:10].tolist()})"
                )
        return features, relevance
