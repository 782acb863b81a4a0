"""What the baselines share: lazy pytorch-ood, chunked scoring, whitening, class Gaussians.

Bounded cost: scoring runs over row chunks. KNN and NNGuide keep their training bank and
compare one query block with it at a time (``PAIRWISE_BYTES``), never an N×N matrix;
covariances are accumulated over row chunks into D×D matrices, and the small dense
decompositions run single-threaded (:func:`serial_linalg`).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
from scipy.linalg import solve_triangular
from threadpoolctl import ThreadpoolController

from nero.detect.detector import NotFittedError
from nero.detect.registry import Evidence, capped_rows
from nero.detect.relevance import Head

# Rows scored at once: bounds the per-row temporaries (a few × chunk × D floats).
SCORE_CHUNK = 4096
# Bytes of one query-block × training-bank similarity matrix (KNN, NNGuide). Small enough
# that a scoring block of a few thousand rows already reaches it, so the temporaries are the
# same size for a training set of 4k rows or of 40k (bench/scale.py); still matrix-sized work.
PAIRWISE_BYTES = 32 << 20
# KNN and NNGuide compare queries with at most this many training rows (a seeded, class-
# stratified sample above it): memory stops growing with the training set, and their papers
# themselves use a random share of a large training set (1 % of ImageNet in both).
NEIGHBOUR_BANK_ROWS = 16384
# Entropy: probabilities are clipped from below before the logarithm (spec §5).
ENTROPY_MIN_P = 1e-6
# ReAct: the release clips at an absolute 0.9; the method's paper at the 90th percentile.
REACT_PERCENTILE = 90.0
REACT_RELEASE_THRESHOLD = 0.9
# ODIN (spec §5): temperature and the size of the signed-gradient step on the input.
ODIN_TEMPERATURE = 100.0
ODIN_EPSILON = 0.0005
# NECO: number of leading principal components in the numerator (spec §5).
NECO_COMPONENTS = 100
# KNN (Sun et al. 2022): k = 50 is the paper's choice for CIFAR-10 sized training sets.
KNN_K = 50
# NNGuide: pytorch-ood's default neighbourhood size.
NNGUIDE_K = 10
# ASH-S and SCALE: the pruning / top-k percentiles of their papers' ImageNet ResNet setting.
ASH_PERCENTILE = 90.0
SCALE_PERCENTILE = 85.0
# GEN: the paper's gamma and top-M classes.
GEN_GAMMA = 0.1
GEN_TOP_M = 100


def neighbour_bank(train: Evidence) -> np.ndarray:
    """The training features KNN and NNGuide search: all of them up to
    :data:`NEIGHBOUR_BANK_ROWS`, else a seeded sample of that many, each class in proportion."""
    n = train.features.shape[0]
    labels = train.labels if train.labels is not None else np.zeros(n, np.int64)
    rows = capped_rows(labels, NEIGHBOUR_BANK_ROWS)
    return train.features if rows.size == n else np.asarray(train.features[rows])


def pood_detectors() -> Any:
    """pytorch-ood's detector package, imported on first use (it pulls in torch)."""
    import pytorch_ood.detector

    return pytorch_ood.detector


def as_tensor(a: np.ndarray, dtype: Any = np.float64) -> Any:
    import torch

    return torch.tensor(np.asarray(a, dtype))  # a copy: inputs may be read-only memmaps


def shared_tensor(a: np.ndarray) -> Any:
    """``a`` as a float32 tensor that shares its memory when it already is C-contiguous float32
    (a run's training rows: no copy of N×D); otherwise a copy. Only for pytorch-ood fits,
    which read their input and never write it."""
    import torch

    a = np.ascontiguousarray(a, np.float32)
    with warnings.catch_warnings():  # read-only views of a run's maps: nothing writes them
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(a)


def to_numpy(t: Any) -> np.ndarray:
    return t.detach().cpu().numpy().astype(np.float64)


def row_chunks(n: int, size: int = SCORE_CHUNK) -> Iterator[slice]:
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


def by_chunk(fn: Callable[[slice], np.ndarray], n: int, size: int = SCORE_CHUNK) -> np.ndarray:
    """``fn`` on row chunks, concatenated (empty input → empty float64 array)."""
    parts = [np.asarray(fn(rows), np.float64) for rows in row_chunks(n, size)]
    return np.concatenate(parts) if parts else np.empty(0)


def as_f64(a: np.ndarray) -> np.ndarray:
    return np.asarray(a, np.float64)


def torch_linear(head: Head) -> Any:
    """The head as a float32 ``torch.nn.Linear`` (pytorch-ood detectors that call the head)."""
    import torch

    layer = torch.nn.Linear(head.n_features, head.n_classes)
    with torch.no_grad():
        layer.weight.copy_(as_tensor(head.weight, np.float32))
        layer.bias.copy_(as_tensor(head.bias, np.float32))
    return layer.eval()


def feature_map_head(head: Head) -> Callable[[Any], Any]:
    """Head applied to B×D×1×1 "feature maps", float64 (pytorch-ood's feature-map detectors)."""
    weight, bias = as_tensor(head.weight), as_tensor(head.bias)
    return lambda maps: maps.flatten(1) @ weight.T + bias


def as_maps(features: np.ndarray) -> Any:
    """Pooled features N×D as N×D×1×1, the shape pytorch-ood's feature-map detectors take."""
    return as_tensor(features)[:, :, None, None]


class Fitted:
    """Clear error when ``score`` is called before ``fit``."""

    def _require(self, *attrs: str) -> None:
        missing = [a for a in attrs if getattr(self, a, None) is None]
        if missing:
            raise NotFittedError(f"{type(self).__name__} is not fitted: call fit() first")

    def _pood_feature_scores(self, data: Evidence) -> np.ndarray:
        """pytorch-ood's ``predict_features`` of the fitted ``detector_``, chunk by chunk."""
        self._require("detector_")
        return by_chunk(
            lambda rows: to_numpy(
                self.detector_.predict_features(as_tensor(data.features[rows], np.float32))
            ),
            data.features.shape[0],
        )


def train_labels(train: Evidence, method: str) -> np.ndarray:
    if train.labels is None:
        raise ValueError(f"{method} needs the class labels of the training data")
    return np.asarray(train.labels, np.int64)


_THREADPOOLS: list[ThreadpoolController] = []  # found once: a lookup costs milliseconds


def serial_linalg() -> Any:
    """One BLAS/LAPACK/OpenMP thread for the small dense decompositions (D×D eigh, Cholesky,
    SVD): they are latency-bound, and multi-threaded LAPACK on a busy CPU was measured up to
    30× slower (2.4 s instead of 0.07 s for a 512×512 eigh)."""
    if not _THREADPOOLS:
        _THREADPOOLS.append(ThreadpoolController())
    return _THREADPOOLS[0].limit(limits=1)


def column_mean(features: np.ndarray) -> np.ndarray:
    """Mean over rows, accumulated over row chunks in float64."""
    n = features.shape[0]
    return sum(as_f64(features[rows]).sum(axis=0) for rows in row_chunks(n)) / max(n, 1)


def whitener(features: np.ndarray, centre: Callable[[slice], np.ndarray]) -> np.ndarray:
    """``A`` (D×r) with ``A·Aᵀ = Σ⁺``, Σ = ``Σ_i (x_i − c_i)(x_i − c_i)ᵀ / N``, so that
    ``(x − μ)ᵀ Σ⁺ (x − μ) = ‖(x − μ)·A‖²``.

    N > D: Σ is accumulated over row chunks; Cholesky when it is positive definite, else its
    eigendecomposition. N ≤ D (Σ singular): the SVD of the N×D centred data, cheaper than any
    D×D decomposition. Either way, directions with variance ≤ ``D·eps·λ_max`` are dropped —
    the pseudo-inverse cut-off of ``scipy.linalg.pinvh``.
    """
    n, d = features.shape
    cutoff = d * np.finfo(np.float64).eps
    with serial_linalg():
        if n <= d:
            centred = np.concatenate([as_f64(features[r]) - centre(r) for r in row_chunks(n)])
            _, sv, vt = np.linalg.svd(centred / np.sqrt(max(n, 1)), full_matrices=False)
            keep = sv**2 > sv.max(initial=0.0) ** 2 * cutoff
            return vt[keep].T / sv[keep]
        cov = np.zeros((d, d))
        for rows in row_chunks(n):
            xc = as_f64(features[rows]) - centre(rows)
            cov += xc.T @ xc
        cov /= n
        try:
            lower = np.linalg.cholesky(cov)
            return solve_triangular(lower, np.eye(d), lower=True, check_finite=False).T
        except np.linalg.LinAlgError:  # singular: e.g. a unit that is never active
            values, vectors = np.linalg.eigh(cov)
            keep = values > values.max(initial=0.0) * cutoff
            return vectors[:, keep] / np.sqrt(values[keep])


class ClassGaussians:
    """Class means and one shared covariance of class-centred features (Lee et al. 2018).

    Squared Mahalanobis distances ``(x − μ_c)ᵀ Σ⁺ (x − μ_c)`` to every class mean. The
    covariance is normalised by N (``sklearn.covariance.EmpiricalCovariance``, as the
    original code) and pseudo-inverted (see :func:`whitener`), so it also works when N ≤ D.
    """

    def __init__(self, features: np.ndarray, labels: np.ndarray) -> None:
        n = features.shape[0]
        self.classes = np.unique(labels)
        index = np.searchsorted(self.classes, labels)
        sums = np.zeros((self.classes.size, features.shape[1]))
        one_hot = np.eye(self.classes.size)
        for rows in row_chunks(n):
            sums += one_hot[index[rows]].T @ as_f64(features[rows])
        self.means = sums / np.bincount(index, minlength=self.classes.size)[:, None]
        self.whitener = whitener(features, lambda rows: self.means[index[rows]])
        # Distances are computed around the grand mean: smaller numbers, less cancellation.
        self.origin = self.means.mean(axis=0)
        self.white_means = (self.means - self.origin) @ self.whitener  # C×r
        self.mean_terms = np.einsum("cr,cr->c", self.white_means, self.white_means)

    def distances(self, x: np.ndarray) -> np.ndarray:
        """N×C squared Mahalanobis distances of rows of ``x`` (one chunk)."""
        z = (as_f64(x) - self.origin) @ self.whitener
        quad = np.einsum("nr,nr->n", z, z)
        return np.maximum(quad[:, None] - 2.0 * z @ self.white_means.T + self.mean_terms, 0.0)
