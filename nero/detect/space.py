"""The space NERO measures distances in, and the one distance it measures there.

Neuron relevance (bias column dropped) is centred and mapped by one linear map: PCA, then the
chosen whitening (:data:`nero.detect.params.WHITENINGS`). Distances are L1 or L2 norms of the
gap to a centroid in that space (:func:`norm`).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from sklearn.covariance import LedoitWolf
from sklearn.decomposition import PCA

# The distances NERO can measure, and what UMAP calls the same metric (the relevance map).
DISTANCES = ("l1", "l2")
UMAP_METRICS = {"l1": "manhattan", "l2": "euclidean"}
# A whitened direction whose variance is below this share of the largest is a null direction.
NULL_VARIANCE = 1e-10
# Training relevance whose total variance is below this share of its mean square is constant
# up to float rounding: whitening it would turn rounding noise into astronomically large scores.
MIN_RELATIVE_SPREAD = 1e-12
# Training rows handled at once while fitting (float64 blocks of this many rows).
FIT_CHUNK = 8192
# Up to this many training values (N·D) PCA is scikit-learn's full SVD of the data (64 MB in
# float64); above it, the eigendecomposition of the streamed covariance (memory D×D).
EXACT_SVD_VALUES = 1 << 23


class DegenerateFitError(ValueError):
    """The training data cannot define a detector (e.g. every image gives the same relevance)."""


class DegenerateFitWarning(UserWarning):
    """The fit worked around thin training data (a run records these warnings)."""


def norm(gap: np.ndarray, metric: str) -> np.ndarray:
    """Row norms of ``gap``: the one distance every part of NERO uses (L1 or L2)."""
    return np.abs(gap).sum(axis=-1) if metric == "l1" else np.sqrt((gap * gap).sum(axis=-1))


def norm_gradient(gap: np.ndarray, metric: str) -> np.ndarray:
    """∂‖gap‖/∂gap, so that ``gap · gradient = ‖gap‖`` (the norms are 1-homogeneous)."""
    if metric == "l1":
        return np.sign(gap)
    length = np.sqrt((gap * gap).sum(axis=-1, keepdims=True))
    return gap / np.maximum(length, np.finfo(np.float64).tiny)


def n_components_for(spec: int | str, n_features: int) -> int:
    """``"2/3"`` → ``int(2·D/3)`` (the release); an int is taken as is."""
    if isinstance(spec, str):
        num, _, den = spec.partition("/")
        return int(int(num) * n_features / int(den or 1))
    return int(spec)


@dataclass(frozen=True)
class Moments:
    """First and second moments of training relevance, accumulated over row blocks."""

    n: int
    mean: np.ndarray  # (D,)
    total_variance: float  # Σ_j var(x_j)
    power: float  # mean squared row norm
    scatter: np.ndarray | None  # D×D, Σ (x − mean)ᵀ(x − mean); only where PCA needs it


def row_blocks(array: np.ndarray, columns: int) -> Iterator[tuple[slice, np.ndarray]]:
    """``array[rows, :columns]`` in float64, :data:`FIT_CHUNK` rows at a time (maps stay on
    disk)."""
    n = array.shape[0]
    for start in range(0, n, FIT_CHUNK):
        rows = slice(start, min(start + FIT_CHUNK, n))
        yield rows, np.asarray(array[rows, :columns], np.float64)


def exact_svd(n: int, columns: int) -> bool:
    """Whether PCA of ``n`` × ``columns`` training values is the SVD of the data itself."""
    return n * columns <= EXACT_SVD_VALUES


def moments(array: np.ndarray, columns: int) -> Moments:
    """Mean, total variance and power of ``array[:, :columns]`` in two streamed passes, and
    the centred scatter when PCA will come from it (:func:`exact_svd` is false)."""
    n = array.shape[0]
    total = np.zeros(columns)
    power = 0.0
    for _, block in row_blocks(array, columns):
        total += block.sum(axis=0)
        power += float(np.einsum("ij,ij->", block, block))
    mean = total / n
    spread = 0.0
    scatter = None if exact_svd(n, columns) else np.zeros((columns, columns))
    for _, block in row_blocks(array, columns):
        centred = block - mean
        spread += float(np.einsum("ij,ij->", centred, centred))
        if scatter is not None:
            scatter += centred.T @ centred
    return Moments(n, mean, spread / n, power / n, scatter)


def check_spread(stats: Moments) -> None:
    """Refuse training relevance that does not vary (identical images, a constant model)."""
    total = stats.total_variance
    if total <= MIN_RELATIVE_SPREAD * stats.power or total == 0.0:
        raise DegenerateFitError(
            f"the {stats.n} training samples have (nearly) identical relevance "
            f"vectors (total variance {total:.3g}): NERO cannot learn what normal variation "
            "looks like. Are the training images copies of one image, or is the model constant?"
        )


def principal_axes(
    array: np.ndarray, columns: int, stats: Moments, n_comp: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """PCA of ``array[:, :columns]``: mean (D,), components (D×k), explained variance (k,).

    Up to :data:`EXACT_SVD_VALUES` values, scikit-learn's full SVD of the data (the release's
    PCA, to the last digit). Above, the same PCA from the eigendecomposition of the streamed
    covariance, so memory is D×D whatever N; components get scikit-learn's signs (largest
    entry positive) and agree with the SVD's to float64 rounding of the covariance.
    """
    if stats.scatter is None:  # exact_svd: small enough for the data's own SVD
        # "full" SVD: deterministic for any data size (the randomized solver is not).
        pca = PCA(n_components=n_comp, svd_solver="full")
        pca.fit(np.asarray(array[:, :columns], np.float64))
        return pca.mean_, pca.components_.T, pca.explained_variance_
    variance, vectors = np.linalg.eigh(stats.scatter / (stats.n - 1))
    order = np.argsort(variance)[::-1][:n_comp]
    variance, vectors = np.maximum(variance[order], 0.0), vectors[:, order]
    largest = vectors[np.argmax(np.abs(vectors), axis=0), np.arange(n_comp)]
    return stats.mean, vectors * np.where(largest < 0, -1.0, 1.0), variance


def keep_varying(variance: np.ndarray, what: str, n: int) -> np.ndarray:
    """Mask of directions the training data vary along (whitening divides by their spread)."""
    keep = variance > variance.max() * NULL_VARIANCE
    keep[np.argmax(variance)] = True
    if not keep.all():
        warnings.warn(
            f"dropping {int((~keep).sum())} of {keep.size} {what} along which the {n} training "
            "samples do not vary (whitening would magnify noise there)",
            DegenerateFitWarning,
            stacklevel=4,
        )
    return keep


def fit_space(
    array: np.ndarray,
    columns: int,
    labels: np.ndarray,
    n_components: int | str,
    whiten: str,
    stats: Moments,
) -> tuple[np.ndarray, np.ndarray]:
    """PCA mean (D,) and the D×k map into the space distances are measured in.

    ``array[:, :columns]`` is the training relevance (rows may be memory-mapped); ``stats``
    its :func:`moments`.
    """
    n, d = stats.n, columns
    wanted = n_components_for(n_components, d)
    n_comp = min(wanted, n, d)
    if n_comp < wanted:
        warnings.warn(
            f"n_components={wanted} exceeds what {n} training samples × {d} features allow; "
            f"using {n_comp}",
            stacklevel=3,
        )
    mean, components, variance = principal_axes(array, columns, stats, n_comp)
    mean = np.asarray(mean, np.float64)
    transform = np.asarray(components, np.float64)  # D×k
    if whiten == "total":
        variance = np.asarray(variance, np.float64)
        keep = keep_varying(variance, "PCA components", n)
        transform = transform[:, keep] / np.sqrt(variance[keep])
    elif whiten == "within":
        coords = np.empty((n, transform.shape[1]))
        for rows, block in row_blocks(array, columns):
            coords[rows] = (block - mean) @ transform
        classes, index = np.unique(labels, return_inverse=True)
        means = np.stack([coords[index == c].mean(axis=0) for c in range(classes.size)])
        within = LedoitWolf(assume_centered=True).fit(coords - means[index]).covariance_
        variance, vectors = np.linalg.eigh(within)
        keep = keep_varying(variance, "within-class directions", n)
        transform = transform @ (vectors[:, keep] / np.sqrt(variance[keep]))
    return mean, transform
