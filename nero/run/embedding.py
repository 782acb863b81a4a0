"""A 2-D map of the NERO relevance vectors with the class centroids placed in it.

The map embeds the space NERO measures distances in: the neuron relevance (bias column
dropped) projected by the detector's PCA. UMAP is fitted on every sample of the run (on a
seeded random sample of :data:`UMAP_FIT_SAMPLES` of a larger run, the others then placed with
``reducer.transform`` in chunks) and the centroids are placed with ``reducer.transform``.
Fitting compiles numba code (30–40 s the first time in a process), so the engine computes the
map once, next to the run:

``embedding.npy`` (N×2 float32), ``embedding_centroids.npy`` (M×2 float32),
``umap_reducer.joblib`` (the fitted reducer, our own file) and ``embedding.json`` (how it was
made). ``embedding.json`` is written last: it marks the other files as complete.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nero.detect.space import UMAP_METRICS
from nero.files import atomic_path, save_npy, write_json
from nero.run.directory import Run, read_run

POINTS_FILE = "embedding.npy"
CENTROIDS_FILE = "embedding_centroids.npy"
REDUCER_FILE = "umap_reducer.joblib"
INFO_FILE = "embedding.json"
# umap-learn's default neighbourhood: local structure at the scale of a few dozen samples.
N_NEIGHBORS = 15
# Below this many samples UMAP's neighbour graph is degenerate: PCA 2-D instead.
MIN_UMAP_SAMPLES = 10
METHODS = ("umap", "pca")
# A larger run fits UMAP on this many samples and places the rest: the fit grows
# super-linearly, placing is linear (a 100k run's map in minutes, not hours).
UMAP_FIT_SAMPLES = 20_000
PLACE_CHUNK = 10_000


@dataclass(frozen=True)
class Embedding:
    """Where every sample and every centroid sits on the map."""

    points: np.ndarray  # N×2 float32, rows follow samples.csv
    centroids: np.ndarray  # M×2 float32, rows follow detector.centroids_
    method: str  # "umap" or "pca"
    info: dict[str, Any]


def _detector_digest(run: Run) -> str:
    return hashlib.sha256((run.path / "detector.npz").read_bytes()).hexdigest()


def _pca_2d(space: np.ndarray, centroids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The first two NERO PCA axes (already ordered by explained variance)."""

    def first_two(x: np.ndarray) -> np.ndarray:
        out = np.zeros((x.shape[0], 2))
        k = min(2, x.shape[1])
        out[:, :k] = x[:, :k]
        return out

    return first_two(space), first_two(centroids)


def _fit_umap(
    space: np.ndarray, centroids: np.ndarray, seed: int, metric: str, fit_rows: np.ndarray
):
    """UMAP fitted on ``space[fit_rows]``; every other row and the centroids placed after."""
    import umap  # numba compiles on first use

    reducer = umap.UMAP(
        n_components=2,
        n_neighbors=min(N_NEIGHBORS, fit_rows.size - 1),
        metric=metric,
        random_state=seed,
        n_jobs=1,  # a seed makes UMAP single-threaded anyway; saying so silences its warning
    )
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        fitted = reducer.fit_transform(space[fit_rows])
        points = np.empty((space.shape[0], 2), np.float32)
        points[fit_rows] = fitted
        rest = np.setdiff1d(np.arange(space.shape[0]), fit_rows)
        for start in range(0, rest.size, PLACE_CHUNK):
            rows = rest[start : start + PLACE_CHUNK]
            points[rows] = reducer.transform(space[rows])
        placed = reducer.transform(centroids)
    return reducer, points, placed


def compute_embedding(run_path: str | Path, seed: int = 42, method: str = "umap") -> Embedding:
    """Fit the map for a run and store it in the run folder (replacing any previous one).

    ``method="umap"`` falls back to PCA 2-D (recorded in ``embedding.json``) when the run is
    too small for UMAP or UMAP fails; ``method="pca"`` asks for PCA directly (fast, no numba).
    """
    if method not in METHODS:
        raise ValueError(f"embedding method must be one of {METHODS}, got {method!r}")
    run = read_run(run_path)
    detector = run.detector
    space = detector.project(run.relevance)
    centroids = np.asarray(detector.centroids_, np.float64)
    metric = UMAP_METRICS[detector.distance]
    n = space.shape[0]
    reason = "asked for PCA"
    reducer = None
    used = "pca"
    fit_rows = np.arange(n)
    if n > UMAP_FIT_SAMPLES:
        fit_rows = np.sort(np.random.default_rng(seed).choice(n, UMAP_FIT_SAMPLES, replace=False))
    if method == "umap":
        if n < MIN_UMAP_SAMPLES:
            reason = f"{n} samples are too few for UMAP (needs {MIN_UMAP_SAMPLES})"
        else:
            try:
                reducer, points, placed = _fit_umap(space, centroids, seed, metric, fit_rows)
                used, reason = "umap", ""
            except Exception as exc:  # umap/numba failures of any kind: the map still works
                reason = f"UMAP failed ({type(exc).__name__}: {exc})"
    if used == "pca":
        points, placed = _pca_2d(space, centroids)

    info = {
        "method": used,
        "requested": method,
        "fallback_reason": reason,
        "seed": seed,
        "n_neighbors": min(N_NEIGHBORS, fit_rows.size - 1) if used == "umap" else None,
        "fitted_on": int(fit_rows.size) if used == "umap" else int(n),  # the rest are placed
        "metric": metric if used == "umap" else None,
        "space_dims": int(space.shape[1]),
        "n_samples": int(n),
        "n_centroids": int(centroids.shape[0]),
        "detector_sha256": _detector_digest(run),
    }
    out = run.path
    save_npy(out / POINTS_FILE, np.asarray(points, np.float32))
    save_npy(out / CENTROIDS_FILE, np.asarray(placed, np.float32))
    reducer_path = out / REDUCER_FILE
    if reducer is not None:
        import joblib

        with atomic_path(reducer_path) as tmp:
            joblib.dump(reducer, tmp)
    elif reducer_path.exists():
        reducer_path.unlink()  # a PCA map must not be paired with an older UMAP reducer
    write_json(out / INFO_FILE, info)
    return Embedding(np.asarray(points, np.float32), np.asarray(placed, np.float32), used, info)


def load_embedding(run: Run | str | Path) -> Embedding | None:
    """The stored map, or ``None`` when there is none or it belongs to another fit."""
    if not isinstance(run, Run):
        run = read_run(run)
    info_path = run.path / INFO_FILE
    if not info_path.is_file():
        return None
    try:
        info = json.loads(info_path.read_text())
        points = np.load(run.path / POINTS_FILE)
        centroids = np.load(run.path / CENTROIDS_FILE)
    except (OSError, ValueError):  # missing or torn files: treat as absent
        return None
    n_centroids = np.asarray(run.detector.centroids_).shape[0]
    if (
        points.shape != (len(run.samples), 2)
        or centroids.shape != (n_centroids, 2)
        or info.get("detector_sha256") != _detector_digest(run)
    ):
        return None
    return Embedding(points, centroids, str(info.get("method", "umap")), info)


def ensure_embedding(run_path: str | Path, seed: int = 42, method: str = "umap") -> Embedding:
    """The stored map if it matches the run (and seed and method), else a freshly fitted one."""
    found = load_embedding(run_path)
    if found is not None and (found.info.get("requested"), found.info.get("seed")) == (
        method,
        seed,
    ):
        return found
    return compute_embedding(run_path, seed=seed, method=method)


def load_reducer(run: Run) -> Any | None:
    """The fitted UMAP reducer (to place new samples), or ``None`` for a PCA map."""
    path = run.path / REDUCER_FILE
    if not path.is_file():
        return None
    import joblib

    return joblib.load(path)
