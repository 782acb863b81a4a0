"""Baselines that measure distances in feature space: Mahalanobis, RMDS, KNN, NNGuide."""

from __future__ import annotations

import numpy as np

from nero.detect.baselines.common import (
    KNN_K,
    NNGUIDE_K,
    PAIRWISE_BYTES,
    ClassGaussians,
    Fitted,
    as_f64,
    as_tensor,
    by_chunk,
    column_mean,
    neighbour_bank,
    pood_detectors,
    row_chunks,
    shared_tensor,
    to_numpy,
    torch_linear,
    train_labels,
    whitener,
)
from nero.detect.registry import Evidence, OODMethod, register
from nero.detect.relevance import Head


@register("mahalanobis", "Mahalanobis")
class Mahalanobis(OODMethod, Fitted):
    """Minimum squared Mahalanobis distance to a class mean (shared covariance).

    Lee et al., "A Simple Unified Framework for Detecting Out-of-Distribution Samples and
    Adversarial Attacks", NeurIPS 2018; spec §5: class means + one shared covariance of
    class-centred training features, min over classes. Ours: pytorch-ood's ``Mahalanobis``
    inverts the unnormalised scatter plus a 1e-6 ridge with ``inv`` in float32, which breaks
    when N ≤ D; here the covariance is normalised and pseudo-inverted (see ``ClassGaussians``).
    """

    def fit(self, train: Evidence, head: Head) -> Mahalanobis:
        self.gaussians_ = ClassGaussians(train.features, train_labels(train, "Mahalanobis"))
        return self

    def score(self, data: Evidence) -> np.ndarray:
        self._require("gaussians_")
        return by_chunk(
            lambda rows: self.gaussians_.distances(data.features[rows]).min(axis=1),
            data.features.shape[0],
        )


@register("rmds", "RMDS")
class RMDS(OODMethod, Fitted):
    """Relative Mahalanobis distance ``min_c (d_c(x) − d_0(x))``.

    Ren et al., "A Simple Fix to Mahalanobis Distance for Improving Near-OOD Detection",
    2021: ``d_c`` as in :class:`Mahalanobis`, ``d_0`` under one background Gaussian fitted to
    all training features. Same sign and formula as pytorch-ood's ``RMD``; ours for the same
    numerical reason as :class:`Mahalanobis`.
    """

    def fit(self, train: Evidence, head: Head) -> RMDS:
        self.gaussians_ = ClassGaussians(train.features, train_labels(train, "RMDS"))
        self.background_mean_ = column_mean(train.features)
        self.background_whitener_ = whitener(train.features, lambda rows: self.background_mean_)
        return self

    def score(self, data: Evidence) -> np.ndarray:
        self._require("gaussians_", "background_whitener_")

        def block(rows: slice) -> np.ndarray:
            x = as_f64(data.features[rows])
            z = (x - self.background_mean_) @ self.background_whitener_
            return self.gaussians_.distances(x).min(axis=1) - np.einsum("nr,nr->n", z, z)

        return by_chunk(block, data.features.shape[0])


@register("knn", "KNN")
class KNN(OODMethod, Fitted):
    """Distance to the k-th nearest training neighbour of the L2-normalised features.

    Sun et al., "Out-of-Distribution Detection with Deep Nearest Neighbors", ICML 2022;
    k = 50 (clipped to the training size); the bank is at most ``NEIGHBOUR_BANK_ROWS``
    training rows (a seeded class-stratified sample of larger sets). Same score as
    pytorch-ood's ``KNN``; ours because that one goes through scikit-learn's
    ``NearestNeighbors`` and refuses k > N. Here queries are processed in blocks: one matrix
    product with the training bank, an in-place partition for the k-th largest similarity,
    ``‖u − v‖ = √(2 − 2 u·v)`` for unit vectors — memory is the bank (N×D float64) plus one
    block × N (``PAIRWISE_BYTES``), whatever the number of queries.
    """

    def __init__(self, k: int = KNN_K) -> None:
        self.k = k

    @staticmethod
    def _normalise(x: np.ndarray) -> np.ndarray:
        x = as_f64(x)
        return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)

    def fit(self, train: Evidence, head: Head) -> KNN:
        if self.k < 1:
            raise ValueError(f"k must be at least 1, got {self.k}")
        features = neighbour_bank(train)
        n = features.shape[0]
        self.bank_ = np.empty(features.shape, np.float64)
        for rows in row_chunks(n):
            self.bank_[rows] = self._normalise(features[rows])
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

        return by_chunk(block, data.features.shape[0], block_rows)


@register("nnguide", "NNGuide")
class NNGuide(OODMethod, Fitted):
    """Energy guided by the nearest energy-scaled training features, negated.

    Park et al., "Nearest Neighbor Guidance for Out-of-Distribution Detection", ICCV 2023:
    ``−mean_topk⟨f̂(x), E(z) f̂(z)⟩ · E(x)`` with ``E = logsumexp(y)``. pytorch-ood
    ``NNGuide`` (k = 10, clipped to the training size), called on query blocks so the
    similarity matrix stays bounded; the bank is at most ``NEIGHBOUR_BANK_ROWS`` training rows
    (the paper's own bank is a random 1 % of ImageNet's training set).
    """

    def __init__(self, k: int = NNGUIDE_K) -> None:
        self.k = k

    def fit(self, train: Evidence, head: Head) -> NNGuide:
        features = neighbour_bank(train)
        n = features.shape[0]
        self.detector_ = pood_detectors().NNGuide(
            encoder=None, head=torch_linear(head), k=min(self.k, n)
        )
        self.detector_.fit_features(shared_tensor(features), as_tensor(np.zeros(n), np.int64))
        self.bank_rows_ = n
        return self

    def score(self, data: Evidence) -> np.ndarray:
        self._require("detector_")
        bank_block = max(1, self.bank_rows_)  # at most NEIGHBOUR_BANK_ROWS: one block
        # float32 similarities, and pytorch-ood concatenates them with the running top-k: 2 copies
        query_block = max(1, PAIRWISE_BYTES // (8 * bank_block))
        return by_chunk(
            lambda rows: to_numpy(
                self.detector_.predict_features(
                    as_tensor(data.features[rows], np.float32), batch_size=bank_block
                )
            ),
            data.features.shape[0],
            query_block,
        )
