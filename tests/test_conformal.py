"""Conformal p-values and ``fusion``: valid on a known distribution, cross-fitted on the
run's own ID test images, and chosen without reading any OOD image."""

from __future__ import annotations

import shutil
import warnings

import numpy as np
import pytest
from PIL import Image

from nero.cli import main
from nero.run.conformal import (
    COMBINATIONS,
    Calibration,
    choose_members,
    combine,
    contributions,
    fisher,
    new_image_p_values,
    p_value_words,
    p_values,
)
from nero.run.directory import read_run
from tests.helpers import evaluate_args, make_folders, tiny_checkpoint


def test_p_values_count_the_calibration_scores_at_least_as_unusual():
    cal = np.array([0.1, 0.5, 0.5, 2.0])
    got = p_values(cal, np.array([-1.0, 0.5, 1.0, 3.0]))
    brute = [(1 + np.sum(cal >= s)) / (cal.size + 1) for s in (-1.0, 0.5, 1.0, 3.0)]
    np.testing.assert_allclose(got, brute)
    with pytest.raises(ValueError, match="calibration"):
        p_values(np.array([]), np.array([1.0]))


@pytest.mark.parametrize("alpha", [0.01, 0.05, 0.2])
def test_on_a_known_distribution_the_false_alarm_rate_is_alpha(alpha):
    """Calibration and new normal frames from one distribution: P(p ≤ α) ≈ α (≤ α + 1/(n+1))."""
    rng = np.random.default_rng(0)
    flagged = []
    for _ in range(200):  # over calibration draws: the guarantee is on average
        cal = rng.standard_normal(400)
        new = rng.standard_normal(500)
        flagged.append(np.mean(p_values(cal, new) <= alpha))
    assert abs(np.mean(flagged) - alpha) < 0.01 + alpha * 0.1
    # and images from elsewhere get small p-values
    assert np.median(p_values(rng.standard_normal(400), rng.normal(3, 1, 500))) < 0.01


def test_the_runs_own_test_images_are_cross_fitted_not_counted_against_themselves():
    rng = np.random.default_rng(1)
    scores = rng.standard_normal(1000)
    test_rows = np.arange(600)
    labels = np.repeat([0, 1, 2], 200)
    calibration = Calibration.of_run(test_rows, np.r_[labels, np.zeros(400, int)], seed=3)
    assert {int(np.sum(calibration.fold == f)) for f in (0, 1)} == {300}
    for label in range(3):  # stratified: each class split in half
        assert np.sum(calibration.fold[labels == label]) == 100
    scores[5] = 50.0  # the most unusual ID test image: against the other half only
    p = calibration.run_p_values(scores)
    other = np.sum(calibration.fold != calibration.fold[5])
    assert p[5] == pytest.approx(1 / (other + 1))
    assert 3.0 <= calibration.realised_fpr(p, 0.05) <= 7.0
    outside = p_values(scores[test_rows], scores[600:])  # the rest: against all ID test
    np.testing.assert_allclose(p[600:], outside)
    with pytest.raises(ValueError, match="at least 4 ID test images"):
        Calibration.of_run(np.arange(3), np.zeros(3, int), seed=0)


def test_members_skip_near_copies_and_fisher_grows_with_evidence():
    rng = np.random.default_rng(2)
    base = rng.standard_normal(300)
    id_scores = {
        "energy": base,
        "maxlogit": base + 1e-3 * rng.standard_normal(300),  # a near-copy
        "knn": rng.standard_normal(300),
        "vim": rng.standard_normal(300),
    }
    members, why = choose_members(["energy", "maxlogit", "knn", "vim"], id_scores)
    assert members == ["energy", "knn", "vim"]
    assert "maxlogit (≈ energy)" in why
    assert (
        fisher([np.array([0.5]), np.array([0.5])])[0]
        < fisher([np.array([0.01]), np.array([0.5])])[0]
    )


@pytest.mark.parametrize("combination", sorted(COMBINATIONS))
def test_every_combination_calibrated_on_normal_images_keeps_its_promise(combination):
    """Three dependent members on a known distribution: each fused statistic, calibrated like
    a method, flags about α of new normal images, and more of shifted ones."""
    rng = np.random.default_rng(5)
    shared = rng.standard_normal((3000, 1))
    members = shared + 0.7 * rng.standard_normal((3000, 3))  # correlated, as detectors are
    cal, new = members[:1000], members[1000:]
    shifted = new + np.array([2.0, 0.0, 0.0])  # one member sees it
    p_of = lambda x: [p_values(cal[:, k], x[:, k]) for k in range(3)]  # noqa: E731
    fused_cal = combine([p_values(cal[:500, k], cal[500:, k]) for k in range(3)], combination)

    fused_new = combine([p_values(cal[:500, k], new[:, k]) for k in range(3)], combination)
    fpr = np.mean(p_values(fused_cal, fused_new) <= 0.05)
    assert 0.035 <= fpr <= 0.065
    assert np.median(combine(p_of(shifted), combination)) > np.median(
        combine(p_of(new), combination)
    )
    with pytest.raises(ValueError, match="unknown combination"):
        combine(p_of(new), "mean")


def test_a_fused_scores_contributions_share_its_evidence():
    fisher_share = contributions({"a": 0.001, "b": 0.5}, "fisher")
    assert np.isclose(sum(fisher_share.values()), 1.0) and fisher_share["a"] > 0.9
    assert contributions({"a": 0.001, "b": 0.5}, "min-p") == {"a": 1.0, "b": 0.0}
    stouffer_share = contributions({"a": 0.01, "b": 0.9}, "stouffer")  # b's z < 0 adds nothing
    assert stouffer_share == {"a": 1.0, "b": 0.0}
    assert contributions({"a": 1.0, "b": 1.0}, "fisher") == {"a": 0.5, "b": 0.5}


def test_p_values_in_words():
    assert p_value_words(0.004) == "fewer than 1 in 200 normal frames look this unusual"
    assert p_value_words(0.03) == "about 3 in 100 normal frames look this unusual"
    assert p_value_words(0.4) == "40 in 100 normal frames look at least this unusual"


def _evaluate(data, out, ckpt):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        methods = "nero,msp,energy,maxlogit,knn,vim"
        assert main(evaluate_args(data, out, "--model", str(ckpt), "--methods", methods)) == 0
    return read_run(out)


def test_fusion_is_chosen_from_id_data_alone(tmp_path):
    """The OOD sets' images replaced by others and their names swapped: the same members, the
    same ID p-values; the run records why, and new images get p-values and a fused score."""
    data = make_folders(tmp_path / "data", n_train=12, n_test=10)
    ckpt = tiny_checkpoint(tmp_path / "m.pt")
    run = _evaluate(data, tmp_path / "run", ckpt)
    other = tmp_path / "other"
    shutil.copytree(data, other)
    shutil.rmtree(other / "ood")
    rng = np.random.default_rng(9)
    for name, n in (("gray", 6), ("noise", 5)):  # names swapped, contents new, sizes changed
        (other / "ood" / name).mkdir(parents=True)
        for i in range(n):
            pixels = rng.integers(0, 255, (24, 24, 3), dtype=np.uint8) // (i + 1)
            Image.fromarray(pixels).save(other / "ood" / name / f"x{i}.png")
    again = _evaluate(other, tmp_path / "again", ckpt)
    assert run.report["fusion"] == again.report["fusion"]
    assert run.manifest["fusion"]["members"] == run.report["fusion"]["members"]
    assert len(run.report["fusion"]["members"]) >= 2 and "fusion" in run.methods
    test = run.rows("id_test")
    for m in run.methods:
        np.testing.assert_array_equal(run.p_value(m)[test], again.p_value(m)[again.rows("id_test")])
        assert set(run.report["conformal"]["realised_fpr"]) == set(run.methods)
    assert all("fusion" in metrics for metrics in run.report["results"].values())
    # new images: p-values against the ID test scores, and the fused score
    ids = {m: run.scores[m].to_numpy()[test] for m in run.methods}
    new = {m: ids[m][:3] for m in run.methods if m != "fusion"}
    got = new_image_p_values(ids, new, run.report["fusion"]["members"])
    assert set(got) == {f"p:{m}" for m in run.methods} | {"fusion"}
    assert np.all((got["p:fusion"] > 0) & (got["p:fusion"] <= 1))


@pytest.mark.parametrize("alpha", [0.01, 0.05, 0.1, 0.5])
def test_the_conformal_threshold_is_where_the_p_value_drops_to_alpha(alpha):
    from nero.run.conformal import conformal_threshold

    cal = np.random.default_rng(4).standard_normal(199)
    cut = conformal_threshold(cal, alpha)
    assert p_values(cal, np.array([np.nextafter(cut, np.inf)]))[0] <= alpha
    assert p_values(cal, np.array([cut]))[0] > alpha
    assert conformal_threshold(cal[:10], 0.05) == np.inf  # 10 frames cannot promise 5 %
