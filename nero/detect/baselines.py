"""Baseline OOD detectors behind the common method interface (higher = more OOD).

Every method is fitted on the in-distribution training evidence of the single forward pass
(penultimate features, logits, labels) plus the classifier head ``W`` (C×D), ``b`` (C), and
scores any evidence. Definitions follow NERO spec §5 where it states them, otherwise the
method's paper. Where pytorch-ood (0.4.0) implements a method with the same semantics and
sign (higher = more OOD), its detector does the work through ``fit_features`` /
``predict_features`` / ``predict_feature_maps`` / static ``score`` on cached arrays; where it
lacks the method or differs, the method is ours and its docstring says why. pytorch-ood and
torch are imported lazily, so listing the methods stays cheap; pytorch-ood downloads nothing
for these detectors.

Bounded cost: scoring runs over row chunks. KNN and NNGuide keep their training bank and
compare one query block with it at a time (``PAIRWISE_BYTES``), never an N×N matrix;
covariances are accumulated over row chunks into D×D matrices, and the small dense
decompositions run single-threaded (:func:`_serial_linalg`).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np
from scipy.linalg import solve_triangular
from threadpoolctl import ThreadpoolController

from nero.detect.registry import Evidence, OODMethod, register
from nero.detect.relevance import Head, softmax

# Rows scored at once: bounds the per-row temporaries (a few × chunk × D floats).
SCORE_CHUNK = 4096
# Bytes of one query-block × training-bank similarity matrix (KNN, NNGuide).
PAIRWISE_BYTES = 128 << 20
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


# ---------------------------------------------------------------------------------------------
# helpers


def _pood() -> Any:
    """pytorch-ood's detector package, imported on first use (it pulls in torch)."""
    import pytorch_ood.detector

    return pytorch_ood.detector


def _tensor(a: np.ndarray, dtype: Any = np.float64) -> Any:
    import torch

    return torch.tensor(np.asarray(a, dtype))  # a copy: inputs may be read-only memmaps


def _numpy(t: Any) -> np.ndarray:
    return t.detach().cpu().numpy().astype(np.float64)


def _chunks(n: int, size: int = SCORE_CHUNK) -> Iterator[slice]:
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


def _by_chunk(fn: Callable[[slice], np.ndarray], n: int, size: int = SCORE_CHUNK) -> np.ndarray:
    """``fn`` on row chunks, concatenated (empty input → empty float64 array)."""
    parts = [np.asarray(fn(rows), np.float64) for rows in _chunks(n, size)]
    return np.concatenate(parts) if parts else np.empty(0)


def _f64(a: np.ndarray) -> np.ndarray:
    return np.asarray(a, np.float64)


def _torch_linear(head: Head) -> Any:
    """The head as a float32 ``torch.nn.Linear`` (pytorch-ood detectors that call the head)."""
    import torch

    layer = torch.nn.Linear(head.n_features, head.n_classes)
    with torch.no_grad():
        layer.weight.copy_(_tensor(head.weight, np.float32))
        layer.bias.copy_(_tensor(head.bias, np.float32))
    return layer.eval()


def _feature_map_head(head: Head) -> Callable[[Any], Any]:
    """Head applied to B×D×1×1 "feature maps", float64 (pytorch-ood's feature-map detectors)."""
    weight, bias = _tensor(head.weight), _tensor(head.bias)
    return lambda maps: maps.flatten(1) @ weight.T + bias


def _as_maps(features: np.ndarray) -> Any:
    """Pooled features N×D as N×D×1×1, the shape pytorch-ood's feature-map detectors take."""
    return _tensor(features)[:, :, None, None]


class _Fitted:
    """Clear error when ``score`` is called before ``fit``."""

    def _require(self, *attrs: str) -> None:
        missing = [a for a in attrs if getattr(self, a, None) is None]
        if missing:
            raise RuntimeError(f"{type(self).__name__} is not fitted: call fit() first")

    def _pood_feature_scores(self, data: Evidence) -> np.ndarray:
        """pytorch-ood's ``predict_features`` of the fitted ``detector_``, chunk by chunk."""
        self._require("detector_")
        return _by_chunk(
            lambda rows: _numpy(
                self.detector_.predict_features(_tensor(data.features[rows], np.float32))
            ),
            data.features.shape[0],
        )


def _labels(train: Evidence, method: str) -> np.ndarray:
    if train.labels is None:
        raise ValueError(f"{method} needs the class labels of the training data")
    return np.asarray(train.labels, np.int64)


_THREADPOOLS: list[ThreadpoolController] = []  # found once: a lookup costs milliseconds


def _serial_linalg() -> Any:
    """One BLAS/LAPACK/OpenMP thread for the small dense decompositions (D×D eigh, Cholesky,
    SVD): they are latency-bound, and multi-threaded LAPACK on a busy CPU was measured up to
    30× slower (2.4 s instead of 0.07 s for a 512×512 eigh)."""
    if not _THREADPOOLS:
        _THREADPOOLS.append(ThreadpoolController())
    return _THREADPOOLS[0].limit(limits=1)


def _column_mean(features: np.ndarray) -> np.ndarray:
    """Mean over rows, accumulated over row chunks in float64."""
    n = features.shape[0]
    return sum(_f64(features[rows]).sum(axis=0) for rows in _chunks(n)) / max(n, 1)


def _whitener(features: np.ndarray, centre: Callable[[slice], np.ndarray]) -> np.ndarray:
    """``A`` (D×r) with ``A·Aᵀ = Σ⁺``, Σ = ``Σ_i (x_i − c_i)(x_i − c_i)ᵀ / N``, so that
    ``(x − μ)ᵀ Σ⁺ (x − μ) = ‖(x − μ)·A‖²``.

    N > D: Σ is accumulated over row chunks; Cholesky when it is positive definite, else its
    eigendecomposition. N ≤ D (Σ singular): the SVD of the N×D centred data, cheaper than any
    D×D decomposition. Either way, directions with variance ≤ ``D·eps·λ_max`` are dropped —
    the pseudo-inverse cut-off of ``scipy.linalg.pinvh``.
    """
    n, d = features.shape
    cutoff = d * np.finfo(np.float64).eps
    with _serial_linalg():
        if n <= d:
            centred = np.concatenate([_f64(features[r]) - centre(r) for r in _chunks(n)])
            _, sv, vt = np.linalg.svd(centred / np.sqrt(max(n, 1)), full_matrices=False)
            keep = sv**2 > sv.max(initial=0.0) ** 2 * cutoff
            return vt[keep].T / sv[keep]
        cov = np.zeros((d, d))
        for rows in _chunks(n):
            xc = _f64(features[rows]) - centre(rows)
            cov += xc.T @ xc
        cov /= n
        try:
            lower = np.linalg.cholesky(cov)
            return solve_triangular(lower, np.eye(d), lower=True, check_finite=False).T
        except np.linalg.LinAlgError:  # singular: e.g. a unit that is never active
            values, vectors = np.linalg.eigh(cov)
            keep = values > values.max(initial=0.0) * cutoff
            return vectors[:, keep] / np.sqrt(values[keep])


class _Gaussians:
    """Class means and one shared covariance of class-centred features (Lee et al. 2018).

    Squared Mahalanobis distances ``(x − μ_c)ᵀ Σ⁺ (x − μ_c)`` to every class mean. The
    covariance is normalised by N (``sklearn.covariance.EmpiricalCovariance``, as the
    original code) and pseudo-inverted (see :func:`_whitener`), so it also works when N ≤ D.
    """

    def __init__(self, features: np.ndarray, labels: np.ndarray) -> None:
        n = features.shape[0]
        self.classes = np.unique(labels)
        index = np.searchsorted(self.classes, labels)
        sums = np.zeros((self.classes.size, features.shape[1]))
        one_hot = np.eye(self.classes.size)
        for rows in _chunks(n):
            sums += one_hot[index[rows]].T @ _f64(features[rows])
        self.means = sums / np.bincount(index, minlength=self.classes.size)[:, None]
        self.whitener = _whitener(features, lambda rows: self.means[index[rows]])
        # Distances are computed around the grand mean: smaller numbers, less cancellation.
        self.origin = self.means.mean(axis=0)
        self.white_means = (self.means - self.origin) @ self.whitener  # C×r
        self.mean_terms = np.einsum("cr,cr->c", self.white_means, self.white_means)

    def distances(self, x: np.ndarray) -> np.ndarray:
        """N×C squared Mahalanobis distances of rows of ``x`` (one chunk)."""
        z = (_f64(x) - self.origin) @ self.whitener
        quad = np.einsum("nr,nr->n", z, z)
        return np.maximum(quad[:, None] - 2.0 * z @ self.white_means.T + self.mean_terms, 0.0)


# ---------------------------------------------------------------------------------------------
# logit-based methods


@register("msp", "MSP")
class MSP(OODMethod):
    """Maximum softmax probability, negated: ``−max_k p_k``.

    Hendrycks & Gimpel, "A Baseline for Detecting Misclassified and Out-of-Distribution
    Examples in Neural Networks", ICLR 2017. pytorch-ood ``MaxSoftmax.score`` (T = 1).
    """

    def score(self, data: Evidence) -> np.ndarray:
        return _numpy(_pood().MaxSoftmax.score(_tensor(data.logits)))


@register("maxlogit", "MaxLogit")
class MaxLogit(OODMethod):
    """Maximum logit, negated: ``−max_k y_k``.

    Hendrycks et al., "Scaling Out-of-Distribution Detection for Real-World Settings",
    ICML 2022. pytorch-ood ``MaxLogit.score``.
    """

    def score(self, data: Evidence) -> np.ndarray:
        return _numpy(_pood().MaxLogit.score(_tensor(data.logits)))


@register("energy", "Energy")
class Energy(OODMethod):
    """Free energy ``−T·logsumexp(y / T)`` at T = 1.

    Liu et al., "Energy-based Out-of-distribution Detection", NeurIPS 2020. pytorch-ood
    ``EnergyBased.score``.
    """

    def score(self, data: Evidence) -> np.ndarray:
        return _numpy(_pood().EnergyBased.score(_tensor(data.logits), t=1.0))


@register("entropy", "Entropy")
class Entropy(OODMethod):
    """Predictive entropy ``−Σ_k p_k log p_k`` with ``p`` clipped to ≥ 1e-6 (spec §5).

    Ours: pytorch-ood's ``Entropy`` clips at 1e-7, spec §5 at 1e-6.
    """

    def __init__(self, min_p: float = ENTROPY_MIN_P) -> None:
        self.min_p = min_p

    def score(self, data: Evidence) -> np.ndarray:
        def block(rows: slice) -> np.ndarray:
            p = np.clip(softmax(_f64(data.logits[rows])), self.min_p, 1.0)
            return -(p * np.log(p)).sum(axis=1)

        return _by_chunk(block, data.logits.shape[0])


@register("gen", "GEN")
class GEN(OODMethod):
    """Generalized entropy over the top-M probabilities, ``mean_top-M p^γ (1 − p)^γ``.

    Liu et al., "GEN: Pushing the Limits of Softmax-Based Out-of-Distribution Detection",
    CVPR 2023; γ = 0.1, M = min(100, C). pytorch-ood ``GEN.score`` (a mean instead of the
    paper's sum: a constant factor, same ranking).
    """

    def __init__(self, gamma: float = GEN_GAMMA, top_m: int = GEN_TOP_M) -> None:
        self.gamma = gamma
        self.top_m = top_m

    def score(self, data: Evidence) -> np.ndarray:
        m = min(self.top_m, data.logits.shape[1])
        return _numpy(_pood().GEN.score(_tensor(data.logits), gamma=self.gamma, M=m))


@register("gradnorm", "GradNorm")
class GradNorm(OODMethod):
    """GradNorm on the head, negated: ``−Σ|∂L/∂W|`` with ``L = −Σ_k log softmax(y)_k``.

    Huang et al., "On the Importance of Gradients for Detecting Distributional Shifts in the
    Wild", NeurIPS 2021 (T = 1, weight of the final layer only, as the paper). Ours, in
    closed form from the cached arrays: ``∂L/∂y_k = C·p_k − 1`` and ``∂L/∂W_kj = (C·p_k − 1)·a_j``,
    so ``Σ|∂L/∂W| = (Σ_k |C·p_k − 1|)·(Σ_j |a_j|)`` — no backward pass. (pytorch-ood's
    ``GradNorm`` needs the model and per-sample backward passes.)
    """

    def score(self, data: Evidence) -> np.ndarray:
        def block(rows: slice) -> np.ndarray:
            p = softmax(_f64(data.logits[rows]))
            logit_grad = np.abs(p.shape[1] * p - 1.0).sum(axis=1)
            return -logit_grad * np.abs(_f64(data.features[rows])).sum(axis=1)

        return _by_chunk(block, data.features.shape[0])


# ---------------------------------------------------------------------------------------------
# feature-distance methods


@register("mahalanobis", "Mahalanobis")
class Mahalanobis(OODMethod, _Fitted):
    """Minimum squared Mahalanobis distance to a class mean (shared covariance).

    Lee et al., "A Simple Unified Framework for Detecting Out-of-Distribution Samples and
    Adversarial Attacks", NeurIPS 2018; spec §5: class means + one shared covariance of
    class-centred training features, min over classes. Ours: pytorch-ood's ``Mahalanobis``
    inverts the unnormalised scatter plus a 1e-6 ridge with ``inv`` in float32, which breaks
    when N ≤ D; here the covariance is normalised and pseudo-inverted (see ``_Gaussians``).
    """

    def fit(self, train: Evidence, head: Head) -> Mahalanobis:
        self.gaussians_ = _Gaussians(train.features, _labels(train, "Mahalanobis"))
        return self

    def score(self, data: Evidence) -> np.ndarray:
        self._require("gaussians_")
        return _by_chunk(
            lambda rows: self.gaussians_.distances(data.features[rows]).min(axis=1),
            data.features.shape[0],
        )


@register("rmds", "RMDS")
class RMDS(OODMethod, _Fitted):
    """Relative Mahalanobis distance ``min_c (d_c(x) − d_0(x))``.

    Ren et al., "A Simple Fix to Mahalanobis Distance for Improving Near-OOD Detection",
    2021: ``d_c`` as in :class:`Mahalanobis`, ``d_0`` under one background Gaussian fitted to
    all training features. Same sign and formula as pytorch-ood's ``RMD``; ours for the same
    numerical reason as :class:`Mahalanobis`.
    """

    def fit(self, train: Evidence, head: Head) -> RMDS:
        self.gaussians_ = _Gaussians(train.features, _labels(train, "RMDS"))
        self.background_mean_ = _column_mean(train.features)
        self.background_whitener_ = _whitener(train.features, lambda rows: self.background_mean_)
        return self

    def score(self, data: Evidence) -> np.ndarray:
        self._require("gaussians_", "background_whitener_")

        def block(rows: slice) -> np.ndarray:
            x = _f64(data.features[rows])
            z = (x - self.background_mean_) @ self.background_whitener_
            return self.gaussians_.distances(x).min(axis=1) - np.einsum("nr,nr->n", z, z)

        return _by_chunk(block, data.features.shape[0])


@register("knn", "KNN")
class KNN(OODMethod, _Fitted):
    """Distance to the k-th nearest training neighbour of the L2-normalised features.

    Sun et al., "Out-of-Distribution Detection with Deep Nearest Neighbors", ICML 2022;
    k = 50 (clipped to the training size). Same score as pytorch-ood's ``KNN``; ours because
    that one goes through scikit-learn's ``NearestNeighbors`` and refuses k > N. Here queries
    are processed in blocks: one matrix product with the training bank, an in-place partition
    for the k-th largest similarity, ``‖u − v‖ = √(2 − 2 u·v)`` for unit vectors — memory is
    the bank (N×D float64) plus one block × N (``PAIRWISE_BYTES``), whatever the number of
    queries.
    """

    def __init__(self, k: int = KNN_K) -> None:
        self.k = k

    @staticmethod
    def _normalise(x: np.ndarray) -> np.ndarray:
        x = _f64(x)
        return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)

    def fit(self, train: Evidence, head: Head) -> KNN:
        if self.k < 1:
            raise ValueError(f"k must be at least 1, got {self.k}")
        n = train.features.shape[0]
        self.bank_ = np.empty(train.features.shape, np.float64)
        for rows in _chunks(n):
            self.bank_[rows] = self._normalise(train.features[rows])
        self.k_ = min(self.k, n)
        return self

    def score(self, data: Evidence) -> np.ndarray:
        self._require("bank_")
        block_rows = max(1, PAIRWISE_BYTES // (8 * self.bank_.shape[0]))

        def block(rows: slice) -> np.ndarray:
            similarity = self._normalise(data.features[rows]) @ self.bank_.T
            # the k-th nearest neighbour has the k-th largest similarity; in-place partition
            kth = similarity.shape[1] - self.k_
            similarity.partition(kth, axis=1)
            return np.sqrt(np.maximum(2.0 - 2.0 * similarity[:, kth], 0.0))

        return _by_chunk(block, data.features.shape[0], block_rows)


@register("nnguide", "NNGuide")
class NNGuide(OODMethod, _Fitted):
    """Energy guided by the nearest energy-scaled training features, negated.

    Park et al., "Nearest Neighbor Guidance for Out-of-Distribution Detection", ICCV 2023:
    ``−mean_topk⟨f̂(x), E(z) f̂(z)⟩ · E(x)`` with ``E = logsumexp(y)``. pytorch-ood
    ``NNGuide`` (k = 10, clipped to the training size), called on query blocks so the
    similarity matrix stays bounded.
    """

    def __init__(self, k: int = NNGUIDE_K) -> None:
        self.k = k

    def fit(self, train: Evidence, head: Head) -> NNGuide:
        n = train.features.shape[0]
        self.detector_ = _pood().NNGuide(encoder=None, head=_torch_linear(head), k=min(self.k, n))
        self.detector_.fit_features(
            _tensor(train.features, np.float32), _tensor(np.zeros(n), np.int64)
        )
        self.bank_rows_ = n
        return self

    def score(self, data: Evidence) -> np.ndarray:
        self._require("detector_")
        bank_block = max(1, min(self.bank_rows_, 32768))
        query_block = max(1, PAIRWISE_BYTES // (4 * bank_block))
        return _by_chunk(
            lambda rows: _numpy(
                self.detector_.predict_features(
                    _tensor(data.features[rows], np.float32), batch_size=bank_block
                )
            ),
            data.features.shape[0],
            query_block,
        )


# ---------------------------------------------------------------------------------------------
# feature-subspace methods


def vim_principal_dim(n_features: int) -> int:
    """ViM's principal-space dimension (spec §5, the ViM code): D/2, 512 for D ≥ 768, 1000
    for D ≥ 2048."""
    if n_features >= 2048:
        return 1000
    if n_features >= 768:
        return 512
    return n_features // 2


@register("vim", "ViM")
class ViM(OODMethod, _Fitted):
    """Virtual-logit matching: ``α‖x^{P⊥}‖ − logsumexp(y)``.

    Wang et al., "ViM: Out-Of-Distribution with Virtual-logit Matching", CVPR 2022. Origin
    ``u = −pinv(W) b``; principal space of the centred training features of dimension
    :func:`vim_principal_dim`; ``α`` = mean training max-logit / mean training residual norm.
    pytorch-ood ``ViM`` (same definition and sign; float32).
    """

    def fit(self, train: Evidence, head: Head) -> ViM:
        pood = _pood()
        self.principal_dim_ = vim_principal_dim(head.n_features)
        n = train.features.shape[0]
        with _serial_linalg():  # pinv(W) and a D×D eigh
            self.detector_ = pood.ViM(
                encoder=None,
                d=self.principal_dim_,
                w=_tensor(head.weight, np.float32),
                b=_tensor(head.bias, np.float32),
            )
            self.detector_.fit_features(
                _tensor(train.features, np.float32), _tensor(np.zeros(n), np.int64)
            )
        if not self.detector_.alpha > 0:
            warnings.warn(
                f"ViM: alpha = {self.detector_.alpha:.4g} ≤ 0 (the mean training max-logit is "
                "not positive, e.g. an untrained model): the virtual logit counts with the "
                "wrong sign and the score is not meaningful",
                stacklevel=2,
            )
        return self

    def score(self, data: Evidence) -> np.ndarray:
        return self._pood_feature_scores(data)


@register("neco", "NECO")
class NECO(OODMethod, _Fitted):
    """Neural-collapse-inspired score ``−‖PCA(z)[:k]‖ / ‖z‖``, z the standardised features.

    Ammar et al., "NECO: NEural Collapse Based Out-of-distribution Detection", ICLR 2024;
    spec §5: StandardScaler + PCA fitted on the training features, k = 100 leading
    components (clipped to D and N). Ours (pytorch-ood has no NECO). The PCA of standardised
    data is the eigendecomposition of its covariance, accumulated over row chunks (or, when
    N ≤ D, the SVD of the standardised samples), which gives the same score as
    ``StandardScaler`` + ``PCA`` (tested). The NECO code multiplies the
    score by the max logit for vision transformers: ``scale_by_max_logit=True``; the spec's
    plain ratio is the default.
    """

    def __init__(
        self, n_components: int = NECO_COMPONENTS, scale_by_max_logit: bool = False
    ) -> None:
        self.n_components = n_components
        self.scale_by_max_logit = scale_by_max_logit

    def fit(self, train: Evidence, head: Head) -> NECO:
        x = train.features
        n, d = x.shape
        self.mean_ = _column_mean(x)
        variance = sum(((_f64(x[r]) - self.mean_) ** 2).sum(axis=0) for r in _chunks(n)) / n
        self.scale_ = np.sqrt(variance)
        self.scale_[self.scale_ == 0] = 1.0  # StandardScaler leaves constant features as is
        k = min(self.n_components, d, n)
        with _serial_linalg():
            if n <= d:  # PCA through the SVD of the (few) standardised samples
                z = np.concatenate([(_f64(x[r]) - self.mean_) / self.scale_ for r in _chunks(n)])
                _, sv, vt = np.linalg.svd(z, full_matrices=False)
                real = sv**2 > sv.max(initial=0.0) ** 2 * d * np.finfo(np.float64).eps
                self.components_ = vt[real][:k].T  # rank ≤ N − 1: no zero-variance directions
            else:  # eigenvectors of the covariance of the standardised features
                cov = np.zeros((d, d))
                for rows in _chunks(n):
                    z = (_f64(x[rows]) - self.mean_) / self.scale_
                    cov += z.T @ z
                self.components_ = np.linalg.eigh(cov / n)[1][:, ::-1][:, :k]  # leading first
        return self

    def score(self, data: Evidence) -> np.ndarray:
        self._require("components_")

        def block(rows: slice) -> np.ndarray:
            z = (_f64(data.features[rows]) - self.mean_) / self.scale_
            ratio = np.linalg.norm(z @ self.components_, axis=1) / np.maximum(
                np.linalg.norm(z, axis=1), 1e-12
            )
            if self.scale_by_max_logit:
                ratio = ratio * _f64(data.logits[rows]).max(axis=1)
            return -ratio

        return _by_chunk(block, data.features.shape[0])


@register("fdbd", "fDBD")
class FDBD(OODMethod, _Fitted):
    """Mean distance to the decision boundaries, relative to the distance to the train mean,
    negated: ``−1/(C−1) Σ_{c≠ŷ} |y_ŷ − y_c| / (‖w_ŷ − w_c‖ · ‖a − μ‖)``.

    Liu & Qin, "Fast Decision Boundary based Out-of-Distribution Detector", ICML 2024. Same
    formula as pytorch-ood's ``fDBD``; ours because that one builds a C×C×D tensor for the
    weight differences (8 GB for ImageNet-1k on ResNet-50) where a C×C Gram matrix suffices.
    """

    def fit(self, train: Evidence, head: Head) -> FDBD:
        self.train_mean_ = _column_mean(train.features)
        w = _f64(head.weight)
        gram = w @ w.T
        sq = np.diag(gram)
        dist = np.sqrt(np.maximum(sq[:, None] + sq[None, :] - 2.0 * gram, 0.0))
        np.fill_diagonal(dist, 1.0)  # the predicted class itself contributes |0| / 1
        self.weight_distances_ = dist
        return self

    def score(self, data: Evidence) -> np.ndarray:
        self._require("weight_distances_")

        def block(rows: slice) -> np.ndarray:
            y = _f64(data.logits[rows])
            pred = y.argmax(axis=1)
            gaps = np.abs(y - y[np.arange(y.shape[0]), pred][:, None])
            boundary = (gaps / self.weight_distances_[pred]).sum(axis=1)
            spread = np.linalg.norm(_f64(data.features[rows]) - self.train_mean_, axis=1)
            return -boundary / ((y.shape[1] - 1) * np.maximum(spread, 1e-8))

        return _by_chunk(block, data.features.shape[0])


@register("nci", "NCI")
class NCI(OODMethod, _Fitted):
    """Neural-collapse-inspired score, negated: ``−cos(a − μ_G, w_ŷ) − α‖a‖₁``.

    Liu & Qin, "Detecting Out-of-Distribution Through the Lens of Neural Collapse", CVPR
    2025. pytorch-ood ``NCI`` (α = 0 by default: the norm filter needs tuning on OOD data).
    """

    def __init__(self, alpha: float = 0.0) -> None:
        self.alpha = alpha

    def fit(self, train: Evidence, head: Head) -> NCI:
        self.detector_ = _pood().NCI(encoder=None, head=_torch_linear(head), alpha=self.alpha)
        self.detector_.fit_features(_tensor(train.features, np.float32))
        return self

    def score(self, data: Evidence) -> np.ndarray:
        return self._pood_feature_scores(data)


# ---------------------------------------------------------------------------------------------
# activation-shaping methods (features changed, then energy through the head)


class _ShapedEnergy(OODMethod, _Fitted):
    """Energy of the head applied to shaped features; ``_detector`` builds the pytorch-ood
    feature-map detector once the head (and any threshold) is known."""

    def _detector(self, train: Evidence, head: Head) -> Any:
        raise NotImplementedError

    def fit(self, train: Evidence, head: Head) -> _ShapedEnergy:
        self.detector_ = self._detector(train, head)
        return self

    def score(self, data: Evidence) -> np.ndarray:
        self._require("detector_")
        return _by_chunk(
            lambda rows: _numpy(self.detector_.predict_feature_maps(_as_maps(data.features[rows]))),
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
        return _pood().ReAct(backbone=None, head=_feature_map_head(head), threshold=self.threshold_)


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
        return _pood().ASH(
            backbone=None,
            head=_feature_map_head(head),
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
        return _pood().SCALE(
            backbone=None, head=_feature_map_head(head), percentile=self.percentile / 100.0
        )


# ---------------------------------------------------------------------------------------------
# input-gradient methods (need the images, scored by the pipeline with ``score_inputs``)


@register("odin", "ODIN")
class ODIN(OODMethod):
    """ODIN: one signed-gradient step on the input, then ``−max softmax(f(x′)/T)``.

    Liang et al., "Enhancing The Reliability of Out-of-distribution Image Detection in
    Neural Networks", ICLR 2018; spec §5: T = 100, ε = 0.0005, the step taken in the
    normalised input space (``norm_std`` rescales it per channel, as the ODIN code does).
    pytorch-ood ``ODIN``, run on whole batches (one forward, one input-gradient backward and
    one forward per batch).
    """

    needs_inputs = True

    def __init__(
        self,
        temperature: float = ODIN_TEMPERATURE,
        epsilon: float = ODIN_EPSILON,
        norm_std: list[float] | None = None,
    ) -> None:
        self.temperature = temperature
        self.epsilon = epsilon
        self.norm_std = norm_std

    def score(self, data: Evidence) -> np.ndarray:
        raise RuntimeError("ODIN needs the images: score it with score_inputs(model, ...)")

    def score_inputs(
        self, model: Any, head: Any, loader: Iterable, device: Any = "cpu"
    ) -> np.ndarray:
        """Scores of every sample the loader yields, in the order of its ``index``.

        ``loader`` yields ``(images, index, ...)`` batches (``nero.model.extract.make_loader``).
        """
        model = model.to(device).eval()
        detector = _pood().ODIN(
            model, eps=self.epsilon, temperature=self.temperature, norm_std=self.norm_std
        )
        scores: dict[int, float] = {}
        for batch in loader:
            images, index = batch[0], np.asarray(batch[1])
            values = _numpy(detector.predict(images.to(device)))
            scores.update(zip(index.tolist(), values.tolist(), strict=True))
        out = np.full(max(scores, default=-1) + 1, np.nan)
        out[list(scores)] = list(scores.values())
        return out
