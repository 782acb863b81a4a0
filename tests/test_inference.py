"""Scoring new images with a run, nearest training neighbours, neuron prototypes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from nero.data.images import read_image
from nero.run.directory import read_run
from nero.run.scoring import (
    RunScorer,
    feature_methods,
    nearest_train,
    neuron_prototypes,
    plain_explanation,
)
from tests.dashboard_fixtures import METHODS, runs_root, tiny_data, tiny_run  # noqa: F401


@pytest.fixture(scope="module")
def run(tiny_run: Path):  # noqa: F811
    return read_run(tiny_run)


@pytest.fixture(scope="module")
def scorer(run):
    return RunScorer(run)


def test_scoring_the_runs_own_images_reproduces_its_scores(run, scorer) -> None:
    rows = [0, 13, 30, 40, 47]
    images = [read_image(run.samples["path"].iloc[i]) for i in rows]
    result = scorer.score_images(images)
    fused = ["fusion"] if "fusion" in run.report else []  # fused as the run fuses its images
    assert list(result.scores.columns) == [*METHODS, *fused]
    expected = run.scores.loc[rows, METHODS].to_numpy()
    np.testing.assert_allclose(result.scores[METHODS].to_numpy(), expected, rtol=1e-3, atol=1e-4)
    ood = [k for k, i in enumerate(rows) if run.samples["split"].iat[i].startswith("ood:")]
    if fused and ood:  # an OOD image's p-values are against all ID test scores, as the run's
        np.testing.assert_allclose(
            result.scores["fusion"].to_numpy()[ood],
            run.scores["fusion"].to_numpy()[np.asarray(rows)[ood]],
            rtol=1e-3,
        )
    np.testing.assert_allclose(result.explanation.score, result.scores["nero"], rtol=1e-9)
    np.testing.assert_allclose(result.features, run.features[rows], rtol=1e-4, atol=1e-5)
    assert result.relevance.shape == (5, run.features.shape[1] + 1)
    assert result.relevance.dtype == np.float32


def test_scorer_fits_only_the_methods_asked_for(run) -> None:
    only = RunScorer(run, methods=["nero"])
    assert list(only.methods) == ["nero"]
    assert only.methods["nero"].detector is run.detector  # the stored fit, not a refit
    with pytest.raises(ValueError, match="cannot score new images"):
        RunScorer(run, methods=["odin"])
    assert feature_methods(run) == METHODS


def test_scoring_nothing_is_an_error(scorer) -> None:
    with pytest.raises(ValueError, match="no images"):
        scorer.score_images([])


def test_nearest_train_matches_brute_force_and_skips_itself(run) -> None:
    det = run.detector
    train = run.rows("id_train")
    space = det.project(run.relevance[train])
    query = int(train[3])
    near, dist = nearest_train(run, run.relevance[query], k=4, exclude=query)
    assert query not in near and len(near) == 4
    assert np.all(np.diff(dist) >= 0)
    gaps = space - space[3]
    brute = np.abs(gaps).sum(1) if det.distance == "l1" else np.linalg.norm(gaps, axis=1)
    brute[3] = np.inf
    # The distances of the 4 nearest (a whitened space with few training images puts many of
    # them at nearly the same distance: the order of near-ties is rounding, not meaning).
    np.testing.assert_allclose(dist, np.sort(brute)[:4], rtol=1e-9)
    np.testing.assert_allclose(brute[np.searchsorted(train, near)], dist, rtol=1e-9)
    again, again_dist = nearest_train(run, run.relevance[query], k=4, exclude=query, space=space)
    np.testing.assert_allclose(again_dist, dist, rtol=1e-9)


def test_neuron_prototypes_by_activation_and_by_relevance(run) -> None:
    train = run.rows("id_train")
    feats = np.asarray(run.features[train])
    neuron = int(np.argmax(feats.var(axis=0)))
    top, act = neuron_prototypes(run, neuron, k=3, by="activation")
    assert set(top) <= set(train)
    np.testing.assert_allclose(act, np.sort(feats[:, neuron])[::-1][:3])
    rel = np.asarray(run.relevance[train, neuron])
    top, values = neuron_prototypes(run, neuron, k=3)  # relevance maximisation
    np.testing.assert_allclose(values, np.sort(rel)[::-1][:3], rtol=1e-6)
    labels = run.samples["label"].to_numpy()
    one_class, _ = neuron_prototypes(run, neuron, k=3, label=1)
    assert (labels[one_class] == 1).all()
    with pytest.raises(ValueError, match="out of range"):
        neuron_prototypes(run, feats.shape[1])


def test_the_plain_explanation_names_the_neurons_that_make_up_half_the_distance(run) -> None:
    from nero.run.scoring import driving_neurons

    ood = run.rows(next(s for s in run.samples["split"].unique() if s.startswith("ood:")))
    relevance = np.asarray(run.relevance[ood[0]], np.float64)
    label = int(run.detector.nearest(relevance[None]).label[0])
    neurons, deviation = driving_neurons(run, relevance, label)
    shares = run.detector.distance_shares(relevance[None])[0]
    assert shares[neurons].sum() >= 0.5 * shares.sum()  # they make up half the distance
    assert shares[neurons[:-1]].sum() < 0.5 * shares.sum()  # and no fewer would
    sentence = plain_explanation(run, relevance, label, "OOD")
    assert sentence.startswith(
        f"Unusual for a **{run.class_names[label]}** image: {neurons.size} of"
    )
    assert f"{int((deviation > 0).sum())} carry more relevance" in sentence
    assert "normal" in plain_explanation(run, relevance, label, "in-distribution")
