"""NERO detector: the reference preset against an independent re-computation of spec §2–3."""

import numpy as np
import pytest

from nero.detect.detector import NERO, NotFittedError, norm_neuron_count
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
    assert det.pca_components_.shape[0] == 9
    assert np.isfinite(det.score(f, r)).all()


def test_all_zero_activation_has_neutral_norm_ratio():
    f, r, y, head = make_data()
    det = NERO(norm_neurons=5).fit(f, r, y)
    zero = np.zeros((1, f.shape[1]))
    e = det.explain(zero, head_relevance(zero, head))
    assert e.norm_ratio[0] == 1.0 and np.isfinite(e.score).all()


def test_improvement_options_do_what_they_say():
    f, r, y, _ = make_data(n=300)
    whitened = NERO(whiten=True, n_components=10).fit(f, r, y)
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


def test_options_survive_save_load(tmp_path):
    f, r, y, _ = make_data()
    det = NERO(whiten=True, bias_term="pca", class_calibration=True, norm_ratio=False)
    det.fit(f, r, y).save(tmp_path / "d.npz")
    back = NERO.load(tmp_path / "d.npz")
    assert back.get_params() == det.get_params()
    np.testing.assert_array_equal(back.score(f, r), det.score(f, r))


def test_whitening_drops_directions_the_training_data_do_not_vary_along():
    """n ≤ k leaves a null PCA direction; whitening it would magnify rounding noise ~1e6×."""
    rng = np.random.default_rng(0)
    features = rng.gamma(2.0, 1.0, (12, 40))
    head = Head(weight=rng.normal(size=(3, 40)), bias=np.zeros(3))
    relevance = head_relevance(features, head, 0.1)
    labels = np.repeat([0, 1, 2], 4)
    with pytest.warns(UserWarning, match="dropping 1 of 12 PCA components"):
        detector = NERO.from_preset("default").fit(features, relevance, labels)
    assert detector.pca_components_.shape[0] == 11 == detector.centroids_.shape[1]
    # A float32 round trip (what a run stores) barely moves the scores.
    scores = detector.score(features, relevance)
    again = detector.score(
        features.astype(np.float32).astype(np.float64),
        relevance.astype(np.float32).astype(np.float64),
    )
    np.testing.assert_allclose(again, scores, rtol=1e-4)
