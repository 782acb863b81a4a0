"""The space NERO measures distances in, and the one distance it measures there.

Neuron relevance (bias column dropped) is centred and mapped by one linear map: PCA, then the
chosen whitening (:data:`nero.detect.params.WHITENINGS`). Distances are L1 or L2 norms of the
gap to a centroid in that space (:func:`norm`).
"""

from __future__ import annotations

import warnings

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


def check_spread(neuron_rel: np.ndarray) -> None:
    """Refuse training relevance that does not vary (identical images, a constant model)."""
    total = float(neuron_rel.var(axis=0).sum())
    power = float((neuron_rel**2).sum(axis=1).mean())
    if total <= MIN_RELATIVE_SPREAD * power or total == 0.0:
        raise DegenerateFitError(
            f"the {neuron_rel.shape[0]} training samples have (nearly) identical relevance "
            f"vectors (total variance {total:.3g}): NERO cannot learn what normal variation "
            "looks like. Are the training images copies of one image, or is the model constant?"
        )


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
    neuron_rel: np.ndarray, labels: np.ndarray, n_components: int | str, whiten: str
) -> tuple[np.ndarray, np.ndarray]:
    """PCA mean (D,) and the D×k map into the space distances are measured in."""
    n, d = neuron_rel.shape
    wanted = n_components_for(n_components, d)
    n_comp = min(wanted, n, d)
    if n_comp < wanted:
        warnings.warn(
            f"n_components={wanted} exceeds what {n} training samples × {d} features allow; "
            f"using {n_comp}",
            stacklevel=3,
        )
    # "full" SVD: deterministic for any data size (the randomized solver is not).
    pca = PCA(n_components=n_comp, svd_solver="full").fit(neuron_rel)
    mean = pca.mean_.astype(np.float64)
    transform = pca.components_.T.astype(np.float64)  # D×k
    if whiten == "total":
        variance = pca.explained_variance_.astype(np.float64)
        keep = keep_varying(variance, "PCA components", n)
        transform = transform[:, keep] / np.sqrt(variance[keep])
    elif whiten == "within":
        coords = (neuron_rel - mean) @ transform
        classes, index = np.unique(labels, return_inverse=True)
        means = np.stack([coords[index == c].mean(axis=0) for c in range(classes.size)])
        within = LedoitWolf(assume_centered=True).fit(coords - means[index]).covariance_
        variance, vectors = np.linalg.eigh(within)
        keep = keep_varying(variance, "within-class directions", n)
        transform = transform @ (vectors[:, keep] / np.sqrt(variance[keep]))
    return mean, transform
