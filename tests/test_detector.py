"""NERO detector: the reference preset against an independent re-computation of spec §2–3."""

import json

import numpy as np
import pytest

from nero.detect.detector import NERO, NotFittedError
from nero.detect.params import norm_neuron_count
from nero.detect.relevance import Head, head_relevance


def make_data(n=120, d=24, c=3, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, c, n)
    centres = rng.normal(size=(c, d)) * 2
    feats = np.maximum(centres[labels] + rng.normal(size=(n, d)), 0)
    w = rng.normal(size=(c, d))
    b = rng.normal(size=c)
    return feats, head_relevance(feats, Head(w, b)), labels, Head(w, b)


def independent_reference(train_f, train_r, labels, test_f, test_r, k):
    """Spec §2–3 written out plainly, PCA by numpy SVD (sign-free: L1 is invariant)."""
    d = train_f.shape[1]
    x = train_r[:, :d]
    mean = x.mean(axis=0)
    _, _, vt = np.linalg.svd(x - mean, full_matrices=False)
    comps = vt[: int(2 * d / 3)]
    proj = lambda r: (r[:, :d] - mean) @ comps.T  # noqa: E731
    classes = np.unique(labels)
    mu = np.stack([proj(train_r)[labels == c].mean(axis=0) for c in classes])
    mu_raw = np.stack([train_r[labels == c].mean(axis=0) for c in classes])
    raw_dist = np.abs(train_r[:, None, :] - mu_raw[None]).sum(-1).min(axis=1)
    lam = raw_dist.mean() / np.abs(train_r[:, d]).mean()
    dist = np.abs(proj(test_r)[:, None, :] - mu[None]).sum(-1).min(axis=1)
    scores = []
    for f, r in zip(test_f, test_r, strict=True):
        order = np.argsort(r[:d], kind="stable")[: min(k, d)]
        ratio = np.abs(f[order]).sum() / np.abs(f).sum()
        scores.append(ratio)
    return (dist + lam * np.abs(test_r[:, d])) * np.array(scores), lam


@pytest.mark.parametrize("k", [7, 175])  # 175 ≥ D=24: the release then uses every neuron
def test_reference_preset_equals_independent_computation(k):
    f, r, y, _ = make_data()
    tf, tr, _, _ = make_data(n=40, seed=1)
    det = NERO.from_preset("reference", norm_neurons=k).fit(f, r, y)
    expected, lam = independent_reference(f, r, y, tf, tr, k)
    np.testing.assert_allclose(det.bias_scale_, lam, rtol=1e-10)
    np.testing.assert_allclose(det.score(tf, tr), expected, rtol=1e-9)
    if k >= f.shape[1]:
        np.testing.assert_allclose(det.explain(tf, tr).norm_ratio, 1.0)


def test_reference_preset_is_the_release():
    det = NERO.from_preset("reference")
    assert det.get_params()["n_components"] == "2/3"
    assert det.norm_neurons == 175 and det.epsilon == 0.0 and det.centroids_per_class == 1
    assert det.distance == "l1"


def test_default_preset_k_is_175_for_resnet18_width():
    assert norm_neuron_count(NERO.from_preset("default").norm_neurons, 512) == 175


def test_explain_parts_recompose_score():
    f, r, y, _ = make_data()
    det = NERO(norm_neurons=10).fit(f, r, y)
    e = det.explain(f, r)
    np.testing.assert_allclose(e.score, (e.distance + e.bias_term) * e.norm_ratio)
    assert e.deviation.shape == (f.shape[0], f.shape[1])
    assert e.norm_neurons.shape == (f.shape[0], 10)
    # deviation is from the nearest centroid's raw relevance
    np.testing.assert_allclose(e.deviation, r[:, :-1] - det.raw_centroids_[e.nearest_centroid, :-1])
    assert set(np.unique(e.nearest_class)) <= set(np.unique(y))


def test_save_load_roundtrip(tmp_path):
    f, r, y, _ = make_data()
    det = NERO(centroids_per_class=2, norm_neurons=0.25).fit(f, r, y)
    det.save(tmp_path / "detector.npz")
    back = NERO.load(tmp_path / "detector.npz")
    np.testing.assert_array_equal(back.score(f, r), det.score(f, r))
    assert back.get_params() == det.get_params()


def test_kmeans_centroids_per_class_and_seed():
    f, r, y, _ = make_data()
    a = NERO(centroids_per_class=3, random_state=3).fit(f, r, y)
    b = NERO(centroids_per_class=3, random_state=3).fit(f, r, y)
    assert a.centroids_.shape[0] == 9
    np.testing.assert_array_equal(a.centroids_, b.centroids_)
    assert np.bincount(a.centroid_classes_).tolist() == [3, 3, 3]


def test_unfitted_and_bad_inputs():
    f, r, y, _ = make_data()
    with pytest.raises(NotFittedError, match="fit"):
        NERO().score(f, r)
    with pytest.raises(ValueError, match="bias"):
        NERO().fit(f, r[:, :-1], y)
    bad = r.copy()
    bad[5, 0] = np.inf
    with pytest.raises(ValueError, match=r"relevance contain NaN/inf in 1 rows \(first: \[5\]\)"):
        NERO().fit(f, bad, y)
    with pytest.raises(ValueError, match="at least 2"):
        NERO().fit(f[:1], r[:1], y[:1])


def test_fewer_samples_than_components_clips_with_warning():
    f, r, y, _ = make_data(n=9, d=24)  # 2/3·24 = 16 components > 9 samples
    with pytest.warns(UserWarning, match="using 9"):
        det = NERO().fit(f, r, y)
    assert det.n_components_ == 9
    assert np.isfinite(det.score(f, r)).all()


def test_all_zero_activation_has_neutral_norm_ratio():
    f, r, y, head = make_data()
    det = NERO(norm_neurons=5).fit(f, r, y)
    zero = np.zeros((1, f.shape[1]))
    e = det.explain(zero, head_relevance(zero, head))
    assert e.norm_ratio[0] == 1.0 and np.isfinite(e.score).all()


def test_improvement_options_do_what_they_say():
    f, r, y, _ = make_data(n=300)
    whitened = NERO(whiten="total", n_components=10).fit(f, r, y)
    z = whitened._project(r[:, :-1])
    np.testing.assert_allclose(z.var(axis=0, ddof=1), 1.0, rtol=1e-6)
    no_bias = NERO(bias_term="none").fit(f, r, y)
    assert no_bias.bias_scale_ == 0.0
    e = NERO(norm_ratio=False, bias_term="pca").fit(f, r, y).explain(f, r)
    np.testing.assert_allclose(e.score, e.distance + e.bias_term)
    pca_bias = NERO(bias_term="pca").fit(f, r, y)
    np.testing.assert_allclose(
        pca_bias.bias_scale_,
        pca_bias.explain(f, r).distance.mean() / np.abs(r[:, -1]).mean(),
    )
    cal = NERO(class_calibration=True, norm_ratio=False, bias_term="none").fit(f, r, y)
    own = np.abs(cal._project(r[:, :-1]) - cal.centroids_[y]).sum(1) / cal.centroid_scale_[y]
    np.testing.assert_allclose([own[y == c].mean() for c in range(3)], 1.0)
    with pytest.raises(ValueError, match="bias_term"):
        NERO(bias_term="nope").fit(f, r, y)


def test_score_calibration_chooses_by_distance_then_divides_by_that_class_spread():
    (f, r, y), (tf, tr, ty), _ = separable()
    plain = NERO.from_preset("default", class_calibration="none").fit(f, r, y).nearest(tr)
    scored = NERO.from_preset("default", class_calibration="score").fit(f, r, y)
    nearest = scored.nearest(tr)
    np.testing.assert_array_equal(nearest.centroid, plain.centroid)  # the same choice
    np.testing.assert_allclose(
        nearest.distance, plain.distance / scored.centroid_scale_[nearest.centroid]
    )
    chosen = NERO.from_preset("default", class_calibration="choose").fit(f, r, y).nearest(tr)
    assert (chosen.centroid != plain.centroid).any()  # dividing first moves some samples


def test_options_survive_save_load(tmp_path):
    f, r, y, _ = make_data()
    det = NERO(whiten="within", bias_term="pca", class_calibration=True, norm_ratio=False)
    det.fit(f, r, y).save(tmp_path / "d.npz")
    back = NERO.load(tmp_path / "d.npz")
    assert back.get_params() == det.get_params()
    np.testing.assert_array_equal(back.score(f, r), det.score(f, r))


@pytest.mark.parametrize("whiten", ["total", "within"])
def test_whitening_never_magnifies_directions_the_training_data_do_not_vary_along(whiten):
    """n ≤ k leaves a null PCA direction; dividing by its ~0 spread would magnify rounding
    noise ~1e6×. Total whitening drops it; within-class whitening's Ledoit–Wolf shrinkage
    gives every direction a floor."""
    rng = np.random.default_rng(0)
    features = rng.gamma(2.0, 1.0, (12, 40))
    head = Head(weight=rng.normal(size=(3, 40)), bias=np.zeros(3))
    relevance = head_relevance(features, head, 0.1)
    labels = np.repeat([0, 1, 2], 4)
    detector = NERO.from_preset("default", whiten=whiten)
    if whiten == "total":
        with pytest.warns(UserWarning, match="dropping 1 of 12 PCA components"):
            detector.fit(features, relevance, labels)
        assert detector.n_components_ == 11 == detector.centroids_.shape[1]
    else:
        with pytest.warns(UserWarning, match="using 12"):  # 2/3·40 = 26 > 12 samples
            detector.fit(features, relevance, labels)
    # A float32 round trip (what a run stores) barely moves the scores.
    scores = detector.score(features, relevance)
    again = detector.score(
        features.astype(np.float32).astype(np.float64),
        relevance.astype(np.float32).astype(np.float64),
    )
    np.testing.assert_allclose(again, scores, rtol=1e-4)


def test_within_class_whitening_is_mahalanobis_under_the_shrunk_pooled_covariance():
    """Independent computation: PCA by SVD, scikit-learn's Ledoit–Wolf on the class-centred
    coordinates, scipy's Mahalanobis distance to each class mean."""
    from scipy.spatial.distance import mahalanobis
    from sklearn.covariance import LedoitWolf

    f, r, y, _ = make_data(n=300, d=12)
    det = NERO(whiten="within", n_components=8, distance="l2", norm_ratio=False).fit(f, r, y)
    x = r[:, :-1]
    mean = x.mean(axis=0)
    _, _, vt = np.linalg.svd(x - mean, full_matrices=False)
    coords = (x - mean) @ vt[:8].T
    means = np.stack([coords[y == c].mean(axis=0) for c in range(3)])
    inverse = np.linalg.inv(LedoitWolf(assume_centered=True).fit(coords - means[y]).covariance_)
    expected = [min(mahalanobis(z, m, inverse) for m in means) for z in coords[:20]]
    np.testing.assert_allclose(det.nearest(r[:20]).distance, expected, rtol=1e-8)


def separable(n_per_class=60, d=30, c=4, spreads=(0.3, 1.0, 2.0, 4.0), sample_seed=1):
    """Classes of very different spread and a head that tells them apart (a trained model):
    the case where total whitening and per-class calibration sent every sample to the
    widest class. Returns train (features, relevance, labels), test (the same), the head."""
    world = np.random.default_rng(0)
    centres = world.normal(size=(c, d)) * 6 + 8
    head = Head(centres - centres.mean(axis=0), np.zeros(c))

    def draw(seed: int) -> tuple[np.ndarray, ...]:
        rng = np.random.default_rng(seed)
        labels = np.repeat(np.arange(c), n_per_class)
        noise = rng.normal(size=(labels.size, d)) * np.asarray(spreads)[labels, None]
        feats = np.maximum(centres[labels] + noise, 0)
        return feats, head_relevance(feats, head, 0.1), labels

    return draw(sample_seed), draw(sample_seed + 100), head


def test_default_nearest_centroid_is_the_samples_own_class():
    (f, r, y), (tf, tr, ty), head = separable()
    right = head.logits(tf).argmax(axis=1) == ty  # correctly classified test samples
    assert right.mean() > 0.9
    default = NERO.from_preset("default").fit(f, r, y).nearest(tr[right]).label
    assert np.mean(default == ty[right]) >= 0.95
    # the old geometry (total whitening + per-centroid calibration) fails this
    old = NERO.from_preset("default", whiten="total", distance="l1", class_calibration=True)
    assert np.mean(old.fit(f, r, y).nearest(tr[right]).label == ty[right]) < 0.5


@pytest.mark.parametrize("distance", ["l1", "l2"])
@pytest.mark.parametrize("whiten", ["none", "total", "within"])
@pytest.mark.parametrize("calibration", ["choose", "score"])
def test_distance_shares_sum_to_the_distance(distance, whiten, calibration):
    f, r, y, _ = make_data(n=200)
    det = NERO(distance=distance, whiten=whiten, class_calibration=calibration).fit(f, r, y)
    nearest = det.nearest(r)
    shares = det.distance_shares(r)
    np.testing.assert_allclose(shares.sum(axis=1), nearest.distance, rtol=1e-9)
    # to another class's centroid: the shares sum to that distance instead
    other = det.nearest(r, target_class=1)
    np.testing.assert_allclose(det.distance_shares(r, other.centroid).sum(1), other.distance)
    assert (other.label == 1).all() and (other.distance >= nearest.distance - 1e-12).all()
    np.testing.assert_allclose(
        det.deviation(r, nearest.centroid)[0],
        r[0, :-1] - det.centroid_relevance(nearest.centroid[0]),
    )
    with pytest.raises(ValueError, match="no centroid of class 7"):
        det.nearest(r, target_class=7)


def test_detectors_saved_in_the_first_format_still_load(tmp_path):
    """Runs made before the one-transform format stored PCA components and a scale."""
    f, r, y, _ = make_data()
    det = NERO(whiten="total", n_components=10).fit(f, r, y)
    scale = np.sqrt(np.var((r[:, :-1] - det.pca_mean_) @ np.linalg.pinv(det.transform_).T, 0))
    components = (det.transform_ * scale).T
    old = {
        "params": np.array(json.dumps({**det.get_params(), "whiten": True})),
        "pca_mean": det.pca_mean_,
        "pca_components": components,
        "pca_scale": scale,
        **{k: getattr(det, f"{k}_") for k in ("centroid_scale", "centroids", "raw_centroids")},
        "centroid_classes": det.centroid_classes_,
        "bias_scale": np.array(det.bias_scale_),
        "norm_neurons": np.array(det.norm_neurons_),
    }
    np.savez(tmp_path / "old.npz", **old)
    back = NERO.load(tmp_path / "old.npz")
    np.testing.assert_allclose(back.score(f, r), det.score(f, r), rtol=1e-9)


@pytest.fixture
def streamed_fit(monkeypatch):
    """Force the large-N path on small data: covariance PCA, blocks of 64 rows."""
    import nero.detect.space as space

    monkeypatch.setattr(space, "EXACT_SVD_VALUES", 0)
    monkeypatch.setattr(space, "FIT_CHUNK", 64)


@pytest.mark.parametrize("preset", ["reference", "default"])
@pytest.mark.parametrize("extra", [{}, {"whiten": "within"}, {"bias_term": "pca"}])
def test_streamed_fit_of_large_sets_equals_the_exact_svd_fit(preset, extra, request):
    f, r, y, _ = make_data(n=300, d=24)
    tf, tr, _, _ = make_data(n=50, seed=1)
    exact = NERO.from_preset(preset, **extra).fit(f, r, y)
    request.getfixturevalue("streamed_fit")
    streamed = NERO.from_preset(preset, **extra).fit(f, r, y)
    # same components with the same signs (scikit-learn's: each one's largest entry positive)
    np.testing.assert_allclose(streamed.transform_, exact.transform_, rtol=1e-7, atol=1e-10)
    np.testing.assert_allclose(streamed.centroids_, exact.centroids_, rtol=1e-7, atol=1e-10)
    np.testing.assert_allclose(streamed.bias_scale_, exact.bias_scale_, rtol=1e-9)
    np.testing.assert_allclose(streamed.score(tf, tr), exact.score(tf, tr), rtol=1e-8)


def test_streamed_fit_holds_no_copy_of_the_training_set(streamed_fit, tmp_path):
    import tracemalloc

    f, r, y, _ = make_data(n=6000, d=64)
    np.save(tmp_path / "r.npy", r.astype(np.float32))
    np.save(tmp_path / "f.npy", f.astype(np.float32))
    maps = np.load(tmp_path / "f.npy", mmap_mode="r"), np.load(tmp_path / "r.npy", mmap_mode="r")
    tracemalloc.start()
    try:
        det = NERO.from_preset("reference").fit(*maps, y)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    one_copy = r.shape[0] * r.shape[1] * 8  # the training relevance in float64
    assert peak < one_copy / 4, f"fit peaked at {peak / 2**20:.1f} MiB"
    np.testing.assert_allclose(
        det.score(f[:50], r[:50]),
        NERO.from_preset("reference")
        .fit(f.astype(np.float32), r.astype(np.float32), y)
        .score(f[:50], r[:50]),
        rtol=1e-6,
    )


def test_nan_rows_are_named_whatever_the_block_they_fall_in(streamed_fit):
    f, r, y, _ = make_data(n=300)
    r[[3, 150, 299], 5] = np.nan
    with pytest.raises(
        ValueError, match=r"relevance contain NaN/inf in 3 rows \(first: \[3, 150, 299\]\)"
    ):
        NERO.from_preset("default").fit(f, r, y)
