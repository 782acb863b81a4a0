"""NERO: nearest relevance centroid distance, bias term and feature-norm ratio (spec §2–3).

A scikit-learn-style estimator: hyper-parameters in ``__init__``, ``fit`` learns attributes
ending in ``_``, ``score`` returns one number per sample (higher = more out-of-distribution),
``explain`` returns the parts of that number. The detector alone answers "which centroid, how
far, which neurons" (:meth:`NERO.nearest`, :meth:`NERO.deviation`,
:meth:`NERO.distance_shares`): heatmaps, maps and pages ask it rather than re-deriving them.

Every distance lives in one space (:mod:`nero.detect.space`): neuron relevance without the
bias column, centred and mapped by one linear ``transform_``, compared with one norm.
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

from nero.detect.params import (
    PRESETS,
    RELEASE_NORM_NEURONS,
    calibration_mode,
    check_params,
    norm_neuron_count,
    whitening_mode,
)
from nero.detect.space import (
    DegenerateFitWarning,
    check_spread,
    fit_space,
    moments,
    norm,
    norm_gradient,
    row_blocks,
)
from nero.files import save_npz


class NotFittedError(RuntimeError):
    """A detector was used before ``fit`` (every method of the registry raises this one)."""


@dataclass(frozen=True)
class Nearest:
    """The centroid each sample is scored against."""

    centroid: np.ndarray  # index into centroids_
    label: np.ndarray  # class of that centroid
    distance: np.ndarray  # the (calibrated) distance to it


@dataclass(frozen=True)
class Explanation:
    """The parts of NERO's score, one row per sample."""

    score: np.ndarray  # (distance + bias_term) * norm_ratio
    distance: np.ndarray  # to the nearest centroid, in the detector's space
    bias_term: np.ndarray  # λ·|R_bias|
    norm_ratio: np.ndarray  # share of |activation| held by the most negative-relevance neurons
    nearest_centroid: np.ndarray  # index into centroids_
    nearest_class: np.ndarray  # class of that centroid
    deviation: np.ndarray  # N×D: raw neuron relevance minus the nearest centroid's
    norm_neurons: np.ndarray  # N×k indices of the neurons in the norm ratio


class NERO:
    """Neuron-level relevance OOD detector.

    Parameters
    ----------
    n_components : PCA size, an int or ``"num/den"`` of D (release: ``"2/3"``).
    norm_neurons : neurons in the feature-norm ratio, a count (release: 175) or a fraction of D.
    centroids_per_class : 1 = class means (release); >1 = k-means inside each class.
    epsilon : LRP-ε stabiliser used when relevance is computed by this package (0 = LRP-0).
    distance : ``"l1"`` (release) or ``"l2"``.
    whiten : the space after PCA (:data:`nero.detect.params.WHITENINGS`): ``"none"``
        (release), ``"total"`` (unit variance per component) or ``"within"`` (the pooled
        within-class covariance whitened, Ledoit–Wolf shrinkage).
    bias_term : how the bias relevance enters: ``"release"`` (λ from raw-space distances, a
        scale the PCA distance does not share), ``"pca"`` (λ from the same distances the
        score uses) or ``"none"``.
    norm_ratio : multiply by the feature-norm ratio (release: yes).
    class_calibration : divide distances by each centroid's spread (its training members' mean
        distance to it): ``"choose"`` before choosing the nearest centroid (the widest class
        then attracts samples), ``"score"`` after choosing it by plain distance (the score is
        "how far, in units of that class's normal spread"), ``"none"``. ``True``/``False`` of
        older runs mean ``"choose"``/``"none"``.
    random_state : seed for k-means.
    """

    def __init__(
        self,
        n_components: int | str = "2/3",
        norm_neurons: int | float = RELEASE_NORM_NEURONS,
        centroids_per_class: int = 1,
        epsilon: float = 0.0,
        distance: str = "l1",
        whiten: bool | str = "none",
        bias_term: str = "release",
        norm_ratio: bool = True,
        class_calibration: bool | str = "none",
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
        check_params(self.get_params())
        return self

    # ------------------------------------------------------------------ fit
    def fit(self, features: np.ndarray, relevance: np.ndarray, labels: np.ndarray) -> NERO:
        """Learn the space, class centroids and the bias scale λ from ID training data.

        The training arrays are read in row blocks (they may be memory-mapped), so the fit
        holds D×D statistics and N-long vectors, never an N×D copy.
        """
        self.check_params()
        features, relevance = np.asarray(features), np.asarray(relevance)  # no copy of maps
        self._check_shapes(features, relevance)
        labels = np.asarray(labels)
        if labels.shape != (relevance.shape[0],):
            raise ValueError(f"labels have shape {labels.shape}, expected ({relevance.shape[0]},)")
        n, d = features.shape
        if n < 2:
            raise ValueError(f"NERO needs at least 2 training samples, got {n}")
        for name, array in (("features", features), ("relevance", relevance)):
            _check_finite(name, array)
        stats = moments(relevance, d)
        check_spread(stats)
        self.n_features_in_ = d
        self.pca_mean_, self.transform_ = fit_space(
            relevance, d, labels, self.n_components, whitening_mode(self.whiten), stats
        )
        cluster = self._fit_centroids(relevance, labels)
        if calibration_mode(self.class_calibration) != "none":
            self._fit_calibration(relevance, cluster)

        mean_bias = np.abs(np.asarray(relevance[:, d], np.float64)).mean()
        if self.bias_term == "release":
            # λ: raw relevance incl. bias against the centroids it built (release §2), L1;
            # one centroid at a time, so memory stays one block.
            reference = np.concatenate(
                [
                    np.min([norm(block - c, "l1") for c in self.raw_centroids_], axis=0)
                    for _, block in row_blocks(relevance, d + 1)
                ]
            )
        elif self.bias_term == "pca":  # the distances the score itself uses
            reference = np.concatenate(
                [self.nearest(block).distance for _, block in row_blocks(relevance, d + 1)]
            )
        else:
            reference = np.zeros(1)
        self.bias_scale_ = float(reference.mean() / mean_bias) if mean_bias > 0 else 0.0
        self.norm_neurons_ = norm_neuron_count(self.norm_neurons, d)
        return self

    def _fit_centroids(self, relevance: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """Class means (or k-means inside each class); returns each sample's centroid."""
        d = self.n_features_in_
        n = labels.shape[0]
        cluster = np.empty(n, np.int64)
        centroid_class: list[int] = []
        for c in np.unique(labels):  # one block per class, vectorised inside
            members = np.flatnonzero(labels == c)
            k = min(self.centroids_per_class, members.size)
            if k <= 1:
                assign = np.zeros(members.size, np.int64)
            else:
                km = KMeans(n_clusters=k, n_init=10, random_state=self.random_state)
                block = np.asarray(relevance[members, :d], np.float64)
                assign = km.fit_predict(self._project(block))
            cluster[members] = assign + len(centroid_class)
            centroid_class.extend([int(c)] * (int(assign.max()) + 1))
        n_centroids = len(centroid_class)
        counts = np.bincount(cluster, minlength=n_centroids)[:, None]
        centroids = np.zeros((n_centroids, self.transform_.shape[1]))
        raw = np.zeros((n_centroids, d + 1))
        for rows, block in row_blocks(relevance, d + 1):  # add.at keeps the row order
            np.add.at(centroids, cluster[rows], self._project(block[:, :d]))
            np.add.at(raw, cluster[rows], block)
        self.centroids_ = centroids / counts
        self.raw_centroids_ = raw / counts
        self.centroid_classes_ = np.asarray(centroid_class, np.int64)
        self.centroid_scale_ = np.ones(n_centroids)
        return cluster

    def _fit_calibration(self, relevance: np.ndarray, cluster: np.ndarray) -> None:
        """Each centroid's scale: its training members' mean distance to it."""
        n_centroids = self.centroids_.shape[0]
        d = self.n_features_in_
        own = np.concatenate(
            [
                norm(self._project(block) - self.centroids_[cluster[rows]], self.distance)
                for rows, block in row_blocks(relevance, d)
            ]
        )
        counts = np.bincount(cluster, minlength=n_centroids)
        spread = np.bincount(cluster, weights=own, minlength=n_centroids) / counts
        alone = spread <= 0  # one member (or identical ones): no spread of its own
        if alone.any():
            warnings.warn(
                f"{int(alone.sum())} centroid(s) (classes "
                f"{sorted({int(c) for c in self.centroid_classes_[alone]})}) have a single "
                "distinct training sample, so no spread of their own: they use the median "
                "spread of the others. Add training images of those classes.",
                DegenerateFitWarning,
                stacklevel=3,
            )
        fallback = float(np.median(spread[~alone])) if (~alone).any() else 1.0
        self.centroid_scale_ = np.where(alone, fallback, spread)

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
        nearest = self.nearest(relevance)
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

        score = (nearest.distance + bias_term) * (norm_ratio if self.norm_ratio else 1.0)
        return Explanation(
            score=score,
            distance=nearest.distance,
            bias_term=bias_term,
            norm_ratio=norm_ratio,
            nearest_centroid=nearest.centroid,
            nearest_class=nearest.label,
            deviation=self.deviation(relevance, nearest.centroid),
            norm_neurons=np.asarray(selected),
        )

    # ------------------------------------------------- centroids and neurons
    def nearest(self, relevance: np.ndarray, target_class: int | None = None) -> Nearest:
        """Each sample's nearest centroid (of ``target_class`` only, if given) and the distance.

        One centroid at a time, so memory stays N×k rather than N×M×k.
        """
        projected = self.project(relevance)
        candidates = np.arange(self.centroids_.shape[0])
        if target_class is not None:
            candidates = np.flatnonzero(self.centroid_classes_ == int(target_class))
            if candidates.size == 0:
                raise ValueError(f"the detector has no centroid of class {target_class}")
        # Calibrated before choosing ("choose"), or only once the centroid is chosen.
        choose_by = (
            self.centroid_scale_ if calibration_mode(self.class_calibration) == "choose" else None
        )
        best = np.full(projected.shape[0], np.inf)
        arg = np.zeros(projected.shape[0], np.int64)
        for m in candidates:
            dist = norm(projected - self.centroids_[m], self.distance)
            if choose_by is not None:
                dist = dist / choose_by[m]
            closer = dist < best
            best = np.where(closer, dist, best)
            arg = np.where(closer, m, arg)
        if choose_by is None:
            best = best / self.centroid_scale_[arg]
        return Nearest(arg, self.centroid_classes_[arg], best)

    def deviation(self, relevance: np.ndarray, centroid: np.ndarray | int) -> np.ndarray:
        """N×D: each neuron's relevance minus that of the given centroid (one per sample)."""
        d = self.n_features_in_
        neuron_rel = np.asarray(relevance, np.float64)[:, :d]
        return neuron_rel - self.raw_centroids_[np.asarray(centroid), :d]

    def distance_shares(
        self, relevance: np.ndarray, centroid: np.ndarray | int | None = None
    ) -> np.ndarray:
        """N×D: each neuron's exact share of the distance to ``centroid`` (default: nearest).

        The map into the detector's space is linear, so the gap to a centroid is
        ``deviation · T``, and because the norm is 1-homogeneous
        ``‖gap‖ = Σ_j deviation_j · (T · ∂‖gap‖/∂gap)_j``: the shares sum to the distance.
        """
        self._check_fitted()
        if centroid is None:
            centroid = self.nearest(relevance).centroid
        centroid = np.broadcast_to(np.asarray(centroid), (np.asarray(relevance).shape[0],))
        deviation = self.deviation(relevance, centroid)
        direction = norm_gradient(deviation @ self.transform_, self.distance)
        return deviation * (direction @ self.transform_.T) / self.centroid_scale_[centroid, None]

    def space_distance(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """The detector's distance between points already in its space (rows, broadcast)."""
        return norm(np.asarray(a) - np.asarray(b), self.distance)

    def centroid_relevance(self, centroid: int) -> np.ndarray:
        """The mean neuron relevance (D,) of a centroid's training images."""
        self._check_fitted()
        return np.asarray(self.raw_centroids_[int(centroid), : self.n_features_in_])

    def project(self, relevance: np.ndarray, chunk: int = 65536) -> np.ndarray:
        """Relevance (N×D, or N×(D+1) with the bias column) in the space distances live in."""
        self._check_fitted()
        d = self.n_features_in_
        relevance = np.asarray(relevance) if not hasattr(relevance, "shape") else relevance
        if relevance.ndim != 2 or relevance.shape[1] not in (d, d + 1):
            raise ValueError(
                f"relevance has shape {relevance.shape}, the detector expects N×{d + 1}"
            )
        out = np.empty((relevance.shape[0], self.transform_.shape[1]))
        for start in range(0, relevance.shape[0], chunk):  # memory-mapped runs stay on disk
            block = np.asarray(relevance[start : start + chunk, :d], np.float64)
            out[start : start + chunk] = self._project(block)
        return out

    @property
    def n_components_(self) -> int:
        """Dimensions of the space distances are measured in."""
        return int(self.transform_.shape[1])

    # ------------------------------------------------------------ save/load
    def save(self, path: str | Path) -> None:
        """Write the fitted state to ``detector.npz`` (no pickles)."""
        self._check_fitted()
        save_npz(
            path,
            params=np.array(json.dumps(self.get_params())),
            pca_mean=self.pca_mean_,
            transform=self.transform_,
            centroid_scale=self.centroid_scale_,
            centroids=self.centroids_,
            raw_centroids=self.raw_centroids_,
            centroid_classes=self.centroid_classes_,
            bias_scale=np.array(self.bias_scale_),
            norm_neurons=np.array(self.norm_neurons_),
        )

    @classmethod
    def load(cls, path: str | Path) -> NERO:
        """A fitted detector from ``detector.npz`` (this version's, or the first format's)."""
        with np.load(path, allow_pickle=False) as z:
            detector = cls(**json.loads(str(z["params"])))
            detector.pca_mean_ = z["pca_mean"]
            if "transform" in z:
                detector.transform_ = z["transform"]
            else:  # first format: PCA components and a per-component scale
                detector.transform_ = z["pca_components"].T / z["pca_scale"]
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
        return (neuron_rel - self.pca_mean_) @ self.transform_

    def _check_fitted(self) -> None:
        if not hasattr(self, "centroids_"):
            raise NotFittedError("this NERO detector is not fitted yet: call fit() first")

    @staticmethod
    def _check_shapes(features: np.ndarray, relevance: np.ndarray) -> None:
        if features.ndim != 2 or relevance.ndim != 2:
            raise ValueError("features and relevance must be 2-D (samples × neurons)")
        if relevance.shape != (features.shape[0], features.shape[1] + 1):
            raise ValueError(
                f"relevance has shape {relevance.shape}; expected {features.shape[0]}×"
                f"{features.shape[1] + 1} (one column per neuron plus the bias)"
            )

    @classmethod
    def _check(cls, features: np.ndarray, relevance: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        features = np.asarray(features, np.float64)
        relevance = np.asarray(relevance, np.float64)
        cls._check_shapes(features, relevance)
        for name, arr in (("features", features), ("relevance", relevance)):
            _check_finite(name, arr)
        return features, relevance


def _check_finite(name: str, array: np.ndarray) -> None:
    """Refuse NaN/inf, naming how many rows and the first ones (read in row blocks)."""
    bad = [
        rows.start + np.flatnonzero(~np.isfinite(block).all(axis=1))
        for rows, block in row_blocks(array, array.shape[1])
    ]
    bad_rows = np.concatenate(bad) if bad else np.empty(0, np.int64)
    if bad_rows.size:
        raise ValueError(
            f"{name} contain NaN/inf in {bad_rows.size} rows (first: {bad_rows[:10].tolist()})"
        )
