"""The relevance map: what it embeds, where it is stored, when it is recomputed, its fallbacks."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from nero.run import embedding as emb
from nero.run.directory import read_run
from tests.dashboard_fixtures import runs_root, tiny_data, tiny_run  # noqa: F401


@pytest.fixture
def run_copy(tmp_path: Path, tiny_run: Path) -> Path:  # noqa: F811
    out = tmp_path / "run"
    shutil.copytree(tiny_run, out)
    for name in (emb.POINTS_FILE, emb.CENTROIDS_FILE, emb.INFO_FILE, emb.REDUCER_FILE):
        (out / name).unlink(missing_ok=True)
    return out


def test_the_map_embeds_the_detectors_own_space_bias_column_optional(tiny_run: Path) -> None:  # noqa: F811
    run = read_run(tiny_run)
    det = run.detector
    rel = np.asarray(run.relevance, np.float64)
    d = det.n_features_in_
    space = det.project(rel)
    np.testing.assert_allclose(space, det._project(rel[:, :d]))  # the detector's own space
    np.testing.assert_allclose(det.project(rel[:, :d]), space)  # bias optional
    with pytest.raises(ValueError, match="expects"):
        det.project(rel[:, :5])


def test_pca_map_is_stored_in_the_run_and_reloaded(run_copy: Path) -> None:
    made = emb.compute_embedding(run_copy, method="pca")
    run = read_run(run_copy)
    n, m = len(run.samples), run.detector.centroids_.shape[0]
    assert made.method == "pca" and made.points.shape == (n, 2) and made.centroids.shape == (m, 2)
    assert made.points.dtype == np.float32
    space = run.detector.project(run.relevance)
    np.testing.assert_allclose(made.points, space[:, :2], rtol=1e-5, atol=1e-5)
    info = json.loads((run_copy / emb.INFO_FILE).read_text())
    assert info["method"] == "pca" and info["n_samples"] == n
    assert not (run_copy / emb.REDUCER_FILE).exists()
    loaded = emb.load_embedding(run)
    np.testing.assert_array_equal(loaded.points, made.points)
    assert not list(run_copy.glob(".*tmp*"))  # atomic writes leave no temporary files


def test_ensure_embedding_is_idempotent(run_copy: Path) -> None:
    emb.ensure_embedding(run_copy, method="pca")
    stamp = (run_copy / emb.INFO_FILE).stat().st_mtime_ns
    again = emb.ensure_embedding(run_copy, method="pca")
    assert (run_copy / emb.INFO_FILE).stat().st_mtime_ns == stamp
    assert again.method == "pca"


def test_a_map_of_another_detector_fit_is_stale(run_copy: Path) -> None:
    emb.compute_embedding(run_copy, method="pca")
    with np.load(run_copy / "detector.npz") as z:
        state = dict(z)
    state["pca_mean"] = state["pca_mean"] + 1.0  # any change of the fit
    np.savez(run_copy / "detector.npz", **state)
    assert emb.load_embedding(run_copy) is None


def test_missing_map_is_none(run_copy: Path) -> None:
    assert emb.load_embedding(run_copy) is None


def test_too_few_samples_fall_back_to_pca(run_copy: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(emb, "MIN_UMAP_SAMPLES", 10_000)
    made = emb.compute_embedding(run_copy)
    assert made.method == "pca"
    assert "too few" in made.info["fallback_reason"]
    assert made.info["requested"] == "umap"


def test_a_umap_failure_falls_back_to_pca(run_copy: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*_args, **_kwargs):
        raise RuntimeError("numba exploded")

    monkeypatch.setattr(emb, "_fit_umap", broken)
    made = emb.compute_embedding(run_copy)
    assert made.method == "pca" and "numba exploded" in made.info["fallback_reason"]


def test_unknown_method_is_refused(run_copy: Path) -> None:
    with pytest.raises(ValueError, match="umap"):
        emb.compute_embedding(run_copy, method="tsne")


@pytest.mark.slow
def test_umap_map_places_centroids_and_is_reproducible(run_copy: Path) -> None:
    """The real thing: numba compiles once (30–40 s on a cold process)."""
    first = emb.compute_embedding(run_copy, seed=3)
    assert first.method == "umap", first.info
    run = read_run(run_copy)
    assert first.points.shape == (len(run.samples), 2)
    assert first.centroids.shape == (run.detector.centroids_.shape[0], 2)
    assert np.isfinite(first.points).all() and np.isfinite(first.centroids).all()
    assert (run_copy / emb.REDUCER_FILE).is_file()
    reducer = emb.load_reducer(run)
    assert reducer.transform(run.detector.project(run.relevance[:2])).shape == (2, 2)
    second = emb.compute_embedding(run_copy, seed=3)
    np.testing.assert_allclose(second.points, first.points, rtol=1e-5, atol=1e-5)
    assert emb.ensure_embedding(run_copy, seed=3).method == "umap"


@pytest.mark.slow
def test_a_large_run_is_fitted_on_a_sample_and_the_rest_placed(
    run_copy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = read_run(run_copy)
    n = len(run.samples)
    monkeypatch.setattr(emb, "UMAP_FIT_SAMPLES", n // 2)
    monkeypatch.setattr(emb, "PLACE_CHUNK", 7)  # several chunks
    sampled = emb.compute_embedding(run_copy, seed=3)
    assert sampled.method == "umap" and sampled.info["fitted_on"] == n // 2
    assert sampled.points.shape == (n, 2) and np.isfinite(sampled.points).all()
    # the placed rows are where the stored reducer puts them
    fit_rows = np.sort(np.random.default_rng(3).choice(n, n // 2, replace=False))
    rest = np.setdiff1d(np.arange(n), fit_rows)
    reducer = emb.load_reducer(read_run(run_copy))
    again = reducer.transform(run.detector.project(run.relevance[rest[:5]]))
    np.testing.assert_allclose(sampled.points[rest[:5]], again, atol=1e-3)
