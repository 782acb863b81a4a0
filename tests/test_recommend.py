"""The per-run recommendation: chosen from ID data alone, never from the OOD sets."""

import shutil

import numpy as np
import pytest

from nero.cli import main
from nero.detect.metrics import auroc
from nero.detect.registry import Evidence, OODMethod
from nero.detect.relevance import Head
from nero.run.directory import read_run
from nero.run.recommend import proxy_aurocs, recommend
from tests.helpers import evaluate_args, make_folders


class Oracle(OODMethod):
    """Scores the distance to the nearest training class mean: finds held-out classes."""

    name = label = "oracle"

    def fit(self, train: Evidence, head: Head) -> "Oracle":
        self.means_ = np.stack(
            [train.features[train.labels == c].mean(0) for c in np.unique(train.labels)]
        )
        return self

    def score(self, data: Evidence) -> np.ndarray:
        gaps = data.features[:, None, :] - self.means_[None]
        return np.sqrt((gaps**2).sum(-1)).min(1)


class Coin(OODMethod):
    name = label = "coin"

    def score(self, data: Evidence) -> np.ndarray:
        return np.random.default_rng(0).random(data.features.shape[0])


def blobs(n_per_class: int, seed: int) -> Evidence:
    rng = np.random.default_rng(seed)
    labels = np.repeat([0, 1, 2], n_per_class)
    feats = rng.normal(size=(labels.size, 8)) + 6 * np.eye(3, 8)[labels]
    return Evidence(feats, np.zeros((labels.size, 3)), None, labels)


def test_the_method_that_finds_held_out_classes_is_recommended():
    make = {"oracle": Oracle, "coin": Coin}
    head = Head(np.zeros((3, 8)), np.zeros(3))
    results = proxy_aurocs(
        ["coin", "oracle"], lambda n: make[n](), blobs(30, 0), blobs(10, 1), {}, head
    )
    assert set(results["oracle"]) == {"held-out:0", "held-out:1", "held-out:2"}
    assert min(results["oracle"].values()) > 95 and max(results["coin"].values()) < 80
    rec = recommend(results, ["a", "b", "c"])
    assert rec.method == "oracle" and rec.runner_up == "coin" and rec.margin > 15
    assert set(rec.proxies["oracle"]) == {
        "held-out class a",
        "held-out class b",
        "held-out class c",
    }


def test_recommendation_is_the_same_whatever_the_ood_sets(tmp_path):
    data = make_folders(tmp_path / "data")
    other = tmp_path / "other"
    shutil.copytree(data, other)
    shutil.rmtree(other / "ood" / "noise")  # different evaluation OOD sets, same ID data
    recs = []
    for folder, out in ((data, tmp_path / "a"), (other, tmp_path / "b")):
        with pytest.warns(UserWarning):
            assert main(evaluate_args(folder, out, "--methods", "nero,msp,energy,knn")) == 0
        run = read_run(out)
        recs.append(run.recommendation)
        assert run.recommendation.record() == run.report["recommended"]  # typed = stored
    assert recs[0].method == recs[1].method
    assert recs[0].ranking == recs[1].ranking
    assert any(p.startswith("held-out class") for p in recs[0].proxies["nero"])
    assert "patch-shuffle" in recs[0].proxies["nero"]


def test_proxies_of_a_large_run_use_a_capped_sample_of_every_class():
    from nero.run.recommend import capped_rows

    labels = np.repeat([0, 1, 2], [6000, 3000, 1000])
    rows = capped_rows(labels, 1000, seed=0)
    assert np.array_equal(np.bincount(labels[rows]), [600, 300, 100])
    assert np.array_equal(rows, np.unique(rows))  # sorted, no repeats
    assert np.array_equal(rows, capped_rows(labels, 1000, seed=0))  # seeded
    assert np.array_equal(capped_rows(labels[:50], 1000), np.arange(50))  # small: all rows


def test_fusion_is_a_candidate_and_wins_where_its_members_complement_each_other():
    from nero.run.recommend import aurocs_of, fused_proxy_scores

    rng = np.random.default_rng(0)

    def sees(shift: float) -> tuple[np.ndarray, np.ndarray]:
        return rng.normal(0, 1, 200), rng.normal(shift, 1, 100)

    scores = {  # each member sees one proxy and is blind to the other
        "a": {"p1": sees(3.0), "p2": sees(0.0)},
        "b": {"p1": sees(0.0), "p2": sees(3.0)},
    }
    fused = fused_proxy_scores(scores, ["a", "b"])
    singles = aurocs_of(scores)
    fusion = aurocs_of({"fusion": fused})["fusion"]
    best_single = max(np.mean(list(r.values())) for r in singles.values())
    assert np.mean(list(fusion.values())) > best_single + 10
    assert set(fusion) == {"p1", "p2"} and all(v > 90 for v in fusion.values())
    rec = recommend({**singles, "fusion": fusion}, [])
    assert rec.method == "fusion" and list(rec.ranking)[0] == "fusion"


def _proxy(rng, shift: float) -> tuple[np.ndarray, np.ndarray]:
    return rng.normal(0, 1, 200), rng.normal(shift, 1, 100)


def test_fusion_pairs_the_best_method_with_the_partner_that_sees_what_it_misses():
    """a sees two proxies, b the two others, c nothing, d is a near-copy of a: the pair is a
    (or its copy) with b; no third member adds enough; each proxy's cross-validated AUROC
    comes from members chosen on the other three."""
    from nero.run.recommend import MIN_THIRD_GAIN, choose_fusion, cross_validated_fusion

    rng = np.random.default_rng(1)
    a = {
        "p1": _proxy(rng, 3.0),
        "p2": _proxy(rng, 3.0),
        "p3": _proxy(rng, 0.5),
        "p4": _proxy(rng, 0.0),
    }
    scores = {
        "a": a,
        "b": {
            "p1": _proxy(rng, 0.0),
            "p2": _proxy(rng, 0.0),
            "p3": _proxy(rng, 3.0),
            "p4": _proxy(rng, 3.0),
        },
        "c": {p: _proxy(rng, 0.0) for p in a},
        "d": {
            p: (i + rng.normal(0, 0.01, i.size), o + rng.normal(0, 0.01, o.size))
            for p, (i, o) in a.items()
        },
    }
    ranking = ["a", "d", "b", "c"]
    choice = choose_fusion(scores, ranking)
    assert choice.members[0] in ("a", "d") and choice.members[1:] == ["b"]  # d ≈ a
    assert choice.pair > choice.single + 10
    assert choice.third_gain is not None and choice.third_gain < MIN_THIRD_GAIN
    assert "no third member" in choice.why() and "cross-validated" in choice.why()
    cv = cross_validated_fusion(scores, ranking)
    assert set(cv) == {"p1", "p2", "p3", "p4"} and all(v > 90 for v in cv.values())
    # held out p1, the choice made on p2–p4 alone is the same pair: nothing of p1 went into it
    held_out = choose_fusion(scores, ranking, ["p2", "p3", "p4"]).members
    assert "b" in held_out and len(set(held_out) & {"a", "d"}) == 1 and len(held_out) == 2


def test_a_fusion_that_adds_nothing_is_not_recommended_over_its_best_member():
    """Two near-copies: the pair is no better than one alone, and the cross-validated fusion
    does not outrank the best single method."""
    from nero.run.recommend import aurocs_of, cross_validated_fusion

    rng = np.random.default_rng(2)
    base = {p: _proxy(rng, 1.5) for p in ("p1", "p2", "p3")}
    scores = {
        "a": base,
        "b": {
            p: (i + rng.normal(0, 0.3, i.size), o + rng.normal(0, 0.3, o.size))
            for p, (i, o) in base.items()
        },
    }
    singles = aurocs_of(scores)
    cv = cross_validated_fusion(scores, ["a", "b"])
    rec = recommend({**singles, "fusion": cv}, [])
    assert rec.method == "a"


def test_fusion_combination_is_the_one_that_does_best_on_the_proxies():
    """Every combination gets its own members; the winner is the best fused mean proxy AUROC,
    and the others' figures are in the reason."""
    from nero.run.conformal import COMBINATION_NAMES, COMBINATIONS
    from nero.run.recommend import choose_fusion, fused_proxy_scores

    rng = np.random.default_rng(3)
    scores = {name: {f"p{k}": _proxy(rng, shift) for k in range(4)}
              for name, shift in (("a", 1.0), ("b", 0.8), ("c", 0.6))}  # fmt: skip
    choice = choose_fusion(scores, ["a", "b", "c"])
    assert choice.combination in COMBINATIONS and set(choice.others) == set(COMBINATIONS) - {
        choice.combination
    }
    fused = fused_proxy_scores(scores, choice.members, None, choice.combination)
    assert np.isclose(np.mean([auroc(i, o) for i, o in fused.values()]), choice.fused)
    assert all(choice.fused >= v for v in choice.others.values())
    assert COMBINATION_NAMES[choice.combination] in choice.why()


def test_a_choice_made_on_some_proxies_never_looks_at_the_held_out_one():
    """Cross-validation without a leak: whatever the held-out proxy holds — here it makes the
    worst method perfect — and whatever ranking the caller made, the members, pool and
    combination chosen on the other proxies stay."""
    from nero.run.recommend import choose_fusion

    rng = np.random.default_rng(4)
    names = [f"m{k}" for k in range(10)]
    scores = {n: {f"p{k}": _proxy(rng, 0.2 * j) for k in range(4)} for j, n in enumerate(names)}
    before = choose_fusion(scores, names[::-1], ["p1", "p2", "p3"])
    worst = names[0]
    scores[worst]["p0"] = (rng.normal(0, 1, 200), rng.normal(50, 1, 100))
    after = choose_fusion(scores, names[::-1], ["p1", "p2", "p3"])
    assert (after.members, after.combination, after.fused) == (
        before.members, before.combination, before.fused
    )  # fmt: skip
    # the caller's ranking (made on all proxies, the held-out one too) only breaks ties
    shuffled = choose_fusion(scores, names, ["p1", "p2", "p3"])
    assert (shuffled.members, shuffled.combination) == (before.members, before.combination)
