"""The baseline suite: every registered method separates an obvious OOD set, the simple scores
equal independent numpy computations, GradNorm equals autograd, ODIN runs batched."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from nero.data.folders import make_loader
from nero.data.preprocess import Preprocessing
from nero.detect.baselines import distances
from nero.detect.baselines.subspace import vim_principal_dim
from nero.detect.metrics import ood_metrics
from nero.detect.registry import Evidence, available_methods, create_method
from nero.detect.relevance import Head, head_relevance
from tests.helpers import random_pngs


@pytest.fixture(autouse=True, scope="module")
def no_network():
    """pytorch-ood must neither download at import nor when its detectors run."""

    def refuse(*_args, **_kwargs):
        raise AssertionError("a baseline tried to open a network connection")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(socket.socket, "connect", refuse)
        mp.setattr(socket, "create_connection", refuse)
        yield


def _evidence(x: np.ndarray, head: Head, labels: np.ndarray | None = None) -> Evidence:
    return Evidence(
        x.astype(np.float32),
        head.logits(x).astype(np.float32),
        head_relevance(x, head).astype(np.float32),
        labels,
    )


def _clusters(seed: int = 0, d: int = 256, c: int = 4, rank: int = 12):
    """ID: non-negative features of C classes around low-rank class manifolds (like pooled
    ReLU features, 90th percentile ≈ 1), a head that classifies them with large logits.
    OOD: samples of unseen classes on another manifold — obviously OOD for every method."""
    rng = np.random.default_rng(seed)
    basis = rng.normal(0, 1, (rank, d)) / np.sqrt(rank)

    def sample(means: np.ndarray, n: int, basis: np.ndarray):
        y = rng.integers(0, len(means), n)
        pre = 1.0 + 2 * means[y] + rng.normal(0, 1, (n, rank)) @ basis
        pre += 0.05 * rng.normal(size=(n, d))
        return 0.3 * np.maximum(pre, 0), y

    class_means = rng.normal(0, 1, (c, d))
    x_train, y_train = sample(class_means, 100 * c, basis)
    x_test, _ = sample(class_means, 60, basis)
    other = rng.normal(0, 1, (rank, d)) / np.sqrt(rank)
    x_ood, _ = sample(rng.normal(0, 1, (3, d)), 60, other)
    centres = np.stack([x_train[y_train == k].mean(0) for k in range(c)])
    weight = 0.5 * (centres - centres.mean(0))
    head = Head(weight, -weight @ centres.mean(0))
    return (
        _evidence(x_train, head, y_train),
        _evidence(x_test, head),
        _evidence(x_ood, head),
        head,
    )


@pytest.fixture(scope="module")
def clusters():
    return _clusters()


@pytest.fixture(scope="module")
def gaussian():
    """Small D, N ≫ D (full-rank covariance), for exact comparisons."""
    rng = np.random.default_rng(1)
    d, c, n = 16, 3, 300
    head = Head(rng.normal(0, 1, (c, d)), rng.normal(0, 1, c))
    labels = rng.integers(0, c, n)
    x = rng.normal(0, 1, (n, d)) + 3 * rng.normal(0, 1, (c, d))[labels]
    queries = rng.normal(0, 2, (40, d))
    return _evidence(x, head, labels), _evidence(queries, head), head


def _linear_model(head: Head) -> nn.Sequential:
    """A model whose input *is* the penultimate feature vector and whose head is ``head``."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(head.n_features, head.n_classes))
    with torch.no_grad():
        model[1].weight.copy_(torch.tensor(head.weight))
        model[1].bias.copy_(torch.tensor(head.bias))
    return model.eval()


def _batches(features: np.ndarray, size: int = 16):
    x = torch.tensor(np.asarray(features, np.float32))
    return [
        (x[i : i + size], torch.arange(i, min(i + size, len(x))), [""] * len(x[i : i + size]))
        for i in range(0, len(x), size)
    ]


def _scores(name: str, train: Evidence, head: Head, *sets: Evidence) -> list[np.ndarray]:
    method = create_method(name).fit(train, head)
    if method.needs_inputs:
        model = _linear_model(head)
        return [method.score_inputs(model, model[1], _batches(e.features), "cpu") for e in sets]
    return [method.score(e) for e in sets]


# --- every method: right sign, right shape -----------------------------------------------------


@pytest.mark.parametrize("name", available_methods())
def test_every_method_finds_obvious_ood(name, clusters):
    train, test, ood, head = clusters
    id_scores, ood_scores = _scores(name, train, head, test, ood)
    assert id_scores.shape == (len(test.features),) and ood_scores.shape == (len(ood.features),)
    assert np.isfinite(id_scores).all() and np.isfinite(ood_scores).all()
    assert ood_metrics(id_scores, ood_scores)["auroc"] > 90


def test_the_suite_is_complete():
    expected = {
        "nero", "msp", "maxlogit", "energy", "entropy", "gen", "gradnorm", "mahalanobis",
        "rmds", "knn", "nnguide", "vim", "neco", "fdbd", "nci", "react", "react_release",
        "ash", "scale", "odin",
    }  # fmt: skip
    assert expected <= set(available_methods())


# --- exact values against independent numpy -----------------------------------------------------


def test_msp_and_energy_equal_numpy(gaussian):
    _, data, _ = gaussian
    y = data.logits.astype(np.float64)
    p = np.exp(y) / np.exp(y).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(create_method("msp").score(data), -p.max(axis=1), rtol=1e-6)
    np.testing.assert_allclose(
        create_method("energy").score(data), -np.log(np.exp(y).sum(axis=1)), rtol=1e-6
    )
    np.testing.assert_allclose(create_method("maxlogit").score(data), -y.max(axis=1), rtol=1e-6)
    q = np.clip(p, 1e-6, 1)
    np.testing.assert_allclose(
        create_method("entropy").score(data), -(q * np.log(q)).sum(axis=1), rtol=1e-6
    )


def test_mahalanobis_equals_numpy(gaussian):
    train, data, head = gaussian
    x, y = train.features.astype(np.float64), train.labels
    means = np.stack([x[y == c].mean(axis=0) for c in range(3)])
    centred = x - means[y]
    precision = np.linalg.inv(centred.T @ centred / len(x))
    q = data.features.astype(np.float64)
    d = np.stack([np.einsum("nd,de,ne->n", q - m, precision, q - m) for m in means], axis=1)
    got = create_method("mahalanobis").fit(train, head).score(data)
    np.testing.assert_allclose(got, d.min(axis=1), rtol=1e-6)


def test_rmds_equals_numpy(gaussian):
    train, data, head = gaussian
    x, y = train.features.astype(np.float64), train.labels
    means = np.stack([x[y == c].mean(axis=0) for c in range(3)])
    precision = np.linalg.inv(np.cov((x - means[y]).T, bias=True))
    background = np.linalg.inv(np.cov(x.T, bias=True))
    q = data.features.astype(np.float64)
    d = np.stack([np.einsum("nd,de,ne->n", q - m, precision, q - m) for m in means], axis=1)
    qc = q - x.mean(axis=0)
    d0 = np.einsum("nd,de,ne->n", qc, background, qc)
    got = create_method("rmds").fit(train, head).score(data)
    np.testing.assert_allclose(got, d.min(axis=1) - d0, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("k", [1, 5, 50])
def test_knn_equals_numpy(gaussian, k):
    train, data, head = gaussian
    unit = lambda a: a / np.linalg.norm(a, axis=1, keepdims=True)  # noqa: E731
    bank, q = unit(train.features.astype(np.float64)), unit(data.features.astype(np.float64))
    distances = np.linalg.norm(q[:, None, :] - bank[None, :, :], axis=2)
    expected = np.sort(distances, axis=1)[:, k - 1]
    got = create_method("knn", k=k).fit(train, head).score(data)
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-9)


def test_knn_k_is_clipped_to_the_training_size(gaussian):
    train, data, head = gaussian
    small = train.rows(np.arange(7))
    method = create_method("knn").fit(small, head)  # default k = 50 > 7
    assert method.k_ == 7
    unit = lambda a: a / np.linalg.norm(a, axis=1, keepdims=True)  # noqa: E731
    far = np.linalg.norm(
        unit(data.features.astype(np.float64))[:, None] - unit(small.features)[None], axis=2
    ).max(axis=1)
    np.testing.assert_allclose(method.score(data), far, rtol=1e-6)


def test_knn_blocks_do_not_change_the_result(gaussian, monkeypatch):
    train, data, head = gaussian
    whole = create_method("knn", k=3).fit(train, head).score(data)
    # one query row per block: the bank × block matrix is all that is ever held
    monkeypatch.setattr(distances, "PAIRWISE_BYTES", 8 * len(train.features))
    blocked = create_method("knn", k=3).fit(train, head).score(data)
    np.testing.assert_allclose(blocked, whole, rtol=1e-12)


def test_neco_equals_standard_scaler_plus_pca(clusters):
    from sklearn.decomposition import PCA
    from sklearn.preprocessing import StandardScaler

    train, test, ood, head = clusters
    scaler = StandardScaler().fit(train.features.astype(np.float64))
    pca = PCA(n_components=100).fit(scaler.transform(train.features.astype(np.float64)))
    neco = create_method("neco").fit(train, head)
    for data in (test, ood):
        z = scaler.transform(data.features.astype(np.float64))
        expected = -np.linalg.norm(pca.transform(z), axis=1) / np.linalg.norm(z, axis=1)
        np.testing.assert_allclose(neco.score(data), expected, rtol=1e-6, atol=1e-9)


def test_neco_clips_the_components_to_d(gaussian):
    train, data, head = gaussian
    method = create_method("neco").fit(train, head)  # D = 16 < 100
    assert method.components_.shape == (16, 16)
    np.testing.assert_allclose(method.score(data), -1.0, atol=0.05)  # all of z is kept


def test_react_thresholds(clusters):
    train, test, _, head = clusters
    paper = create_method("react").fit(train, head)
    assert paper.threshold_ == pytest.approx(np.percentile(train.features, 90))
    release = create_method("react_release").fit(train, head)
    assert release.threshold_ == 0.9
    for method in (paper, release):
        clipped = np.minimum(test.features.astype(np.float64), method.threshold_)
        y = clipped @ head.weight.T + head.bias
        np.testing.assert_allclose(method.score(test), -np.log(np.exp(y).sum(axis=1)), rtol=1e-6)


def test_fdbd_mahalanobis_rmds_agree_with_pytorch_ood(gaussian):
    """Our reimplementations keep pytorch-ood's formulas (up to its constant factors)."""
    from pytorch_ood.detector import RMD, Mahalanobis, fDBD

    train, data, head = gaussian
    z, y, q = (torch.tensor(a) for a in (train.features, train.labels, data.features))
    layer = _linear_model(head)[1]
    n = len(train.features)
    ours = create_method("fdbd").fit(train, head).score(data)
    theirs = fDBD(None, layer).fit_features(z).predict_features(q).numpy()
    np.testing.assert_allclose(ours, theirs, rtol=1e-4)
    # pytorch-ood: half the distance, covariance not divided by N
    ours = create_method("mahalanobis").fit(train, head).score(data)
    theirs = Mahalanobis(None).fit_features(z, y).predict_features(q).numpy()
    np.testing.assert_allclose(ours, 2 * n * theirs, rtol=1e-3)
    ours = create_method("rmds").fit(train, head).score(data)
    theirs = RMD(None).fit_features(z, y).predict_features(q).numpy()
    np.testing.assert_allclose(ours, n * theirs, rtol=1e-3, atol=1e-2)


@pytest.mark.parametrize("n", [10, 16, 40])
def test_mahalanobis_pseudo_inverse_equals_numpy(gaussian, n):
    """N ≤ D (singular covariance, SVD route) and N > D (Cholesky) against ``np.linalg.pinv``."""
    train, data, head = gaussian
    small = train.rows(np.arange(n))
    x, y = small.features.astype(np.float64), small.labels
    classes = np.unique(y)
    means = np.stack([x[y == c].mean(axis=0) for c in classes])
    centred = x - means[np.searchsorted(classes, y)]
    precision = np.linalg.pinv(centred.T @ centred / n, hermitian=True)
    q = data.features.astype(np.float64)
    d = np.stack([np.einsum("nd,de,ne->n", q - m, precision, q - m) for m in means], axis=1)
    got = create_method("mahalanobis").fit(small, head).score(data)
    np.testing.assert_allclose(got, d.min(axis=1), rtol=1e-6)


def test_neco_with_fewer_samples_than_features(clusters):
    from sklearn.decomposition import PCA
    from sklearn.preprocessing import StandardScaler

    train, test, _, head = clusters
    small = train.rows(np.arange(60))  # 60 samples, 256 features
    scaler = StandardScaler().fit(small.features.astype(np.float64))
    # centred, 60 samples span 59 directions: the components that carry variance
    pca = PCA(n_components=59).fit(scaler.transform(small.features.astype(np.float64)))
    z = scaler.transform(test.features.astype(np.float64))
    expected = -np.linalg.norm(pca.transform(z), axis=1) / np.linalg.norm(z, axis=1)
    got = create_method("neco").fit(small, head).score(test)
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-9)


def test_mahalanobis_with_fewer_samples_than_features(clusters):
    """N ≤ D makes the covariance singular; the pseudo-inverse still gives finite scores."""
    train, test, ood, head = clusters
    small = train.rows(np.arange(60))  # 60 samples, 256 features
    for name in ("mahalanobis", "rmds"):
        method = create_method(name).fit(small, head)
        s_id, s_ood = method.score(test), method.score(ood)
        assert np.isfinite(s_id).all() and np.isfinite(s_ood).all()
        assert ood_metrics(s_id, s_ood)["auroc"] > 90


def test_vim_principal_dim_rule():
    assert [vim_principal_dim(d) for d in (64, 512, 767, 768, 2047, 2048, 4096)] == [
        32, 256, 383, 512, 512, 1000, 1000,
    ]  # fmt: skip


def test_scoring_before_fit_is_a_clear_error(gaussian):
    _, data, _ = gaussian
    for name in ("mahalanobis", "rmds", "knn", "nnguide", "vim", "neco", "fdbd", "nci", "react"):
        with pytest.raises(RuntimeError, match="fit"):
            create_method(name).score(data)


# --- gradient methods ---------------------------------------------------------------------------


def test_gradnorm_equals_autograd_on_the_head(gaussian):
    _, data, head = gaussian
    layer = _linear_model(head)[1].double()
    expected = []
    for a in torch.tensor(data.features[:8], dtype=torch.float64):
        loss = -torch.log_softmax(layer(a[None]), dim=1).sum()
        (grad,) = torch.autograd.grad(loss, layer.weight)
        expected.append(-grad.abs().sum().item())
    got = create_method("gradnorm").score(data.rows(np.arange(8)))
    # logits are stored as float32, the autograd path recomputes them in float64
    np.testing.assert_allclose(got, expected, rtol=1e-5)


class _TinyNet(nn.Module):
    def __init__(self, classes: int = 3) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1))
        self.fc = nn.Linear(8, classes)
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.fc(self.body(x).flatten(1))


def test_odin_runs_batched_on_image_files(tmp_path):
    paths = random_pngs(tmp_path, 10, 20)
    torch.manual_seed(0)
    model = _TinyNet()
    odin = create_method("odin")
    assert odin.needs_inputs and (odin.temperature, odin.epsilon) == (100.0, 0.0005)
    batched = odin.score_inputs(
        model, model.fc, make_loader(paths, Preprocessing(16, "none"), 4, workers=0), "cpu"
    )
    assert batched.shape == (10,) and np.isfinite(batched).all()
    assert model.calls == 2 * 3  # forward + forward per batch of 4, 4, 2: no per-sample loop
    single = odin.score_inputs(
        model, model.fc, make_loader(paths, Preprocessing(16, "none"), 1, workers=0), "cpu"
    )
    np.testing.assert_allclose(batched, single, rtol=1e-5)
    assert not any(p.grad is not None for p in model.parameters())  # weights untouched


def test_odin_needs_the_images(gaussian):
    _, data, _ = gaussian
    with pytest.raises(RuntimeError, match="images"):
        create_method("odin").score(data)


def test_pipeline_scores_odin_from_the_images(tmp_path):
    """``nero evaluate`` runs input-gradient methods in a batched pass over the kept images."""
    import pandas as pd

    from nero.data.folders import prepared_collection
    from nero.model.classifier import LoadedModel
    from nero.run.pipeline import EvaluateConfig, evaluate

    rng = np.random.default_rng(0)
    for split, per_class in (("id_train", 6), ("id_test", 3)):
        for cls, colour in (("a", (200, 40, 40)), ("b", (40, 200, 40))):
            folder = tmp_path / "data" / split / cls
            folder.mkdir(parents=True)
            for i in range(per_class):
                pixels = np.clip(rng.normal(colour, 20, (16, 16, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.png")
    (tmp_path / "data" / "ood" / "noise").mkdir(parents=True)
    for i in range(4):
        pixels = rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(tmp_path / "data" / "ood" / "noise" / f"{i}.png")
    torch.manual_seed(0)
    net = _TinyNet(classes=2)
    config = EvaluateConfig(
        arch="tiny", img_size=16, batch_size=8, device="cpu", methods=["nero", "msp", "odin"],
        progress_bar=False,
    )  # fmt: skip
    collection = prepared_collection(tmp_path / "data")
    out = evaluate(collection, LoadedModel(net, "fc", net.fc, 2, None), config, tmp_path / "run")
    scores = pd.read_csv(out / "scores.csv")
    paths = pd.read_csv(out / "samples.csv")["path"].map(Path).tolist()
    expected = create_method("odin").score_inputs(
        net, net.fc, make_loader(paths, Preprocessing(16, "none"), 8), "cpu"
    )
    np.testing.assert_allclose(scores["odin"].to_numpy(), expected, rtol=1e-5)


def test_scoring_in_row_chunks_is_scoring_at_once(clusters, tmp_path):
    """`nero evaluate` scores memory-mapped arrays chunk by chunk: per-sample scores, so
    every feature-level method must give the same numbers as one call over all rows."""
    from nero.detect.registry import feature_level_methods
    from nero.files import save_npy
    from nero.run.fitting import score_in_chunks

    train, test, ood, head = clusters
    both = Evidence(
        *(
            np.concatenate([a, b])
            for a, b in zip(
                (test.features, test.logits, test.relevance),
                (ood.features, ood.logits, ood.relevance),
                strict=True,
            )
        )
    )
    for name, array in (("f", both.features), ("l", both.logits), ("r", both.relevance)):
        save_npy(tmp_path / f"{name}.npy", array)
    mapped = Evidence(*(np.load(tmp_path / f"{n}.npy", mmap_mode="r") for n in "flr"))
    for name in feature_level_methods():
        method = create_method(name).fit(train, head)
        # float32 methods (pytorch-ood's ViM) differ in the last bits with the batch size
        np.testing.assert_allclose(
            score_in_chunks(method, mapped, chunk=7), method.score(both), rtol=1e-4, err_msg=name
        )


def test_released_pages_leave_the_resident_set_and_keep_the_data(tmp_path):
    from nero.files import allocate_npy, release_pages

    def resident_mib() -> float:
        return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

    out = allocate_npy(tmp_path / "big.npy", np.float32, (64, 2**18))  # 64 MiB
    before = resident_mib()
    for row in range(0, 64, 8):
        out[row : row + 8] = row
        release_pages(out)
    assert resident_mib() - before < 16
    release_pages(np.zeros(3))  # not mapped: nothing to do
    back = np.load(tmp_path / "big.npy", mmap_mode="r")
    assert back[63, -1] == 56 and back[0, 0] == 0
    touched = float(np.asarray(back).sum())  # reading maps every page back in
    assert resident_mib() - before > 48 and touched > 0


def test_contiguous_rows_are_read_only_views_other_rows_copies():
    from nero.detect.registry import Evidence

    evidence = Evidence(np.arange(20.0).reshape(10, 2), np.zeros((10, 3)), None, np.arange(10))
    part = evidence.rows(np.arange(3, 7))  # a run's id_train: no copy of the mapped arrays
    assert np.shares_memory(part.features, evidence.features)
    assert not part.features.flags.writeable and part.relevance is None
    np.testing.assert_array_equal(part.features, evidence.features[3:7])
    np.testing.assert_array_equal(part.labels, [3, 4, 5, 6])
    scattered = evidence.rows(np.array([1, 5]))
    assert not np.shares_memory(scattered.features, evidence.features)
    np.testing.assert_array_equal(scattered.features, evidence.features[[1, 5]])
    one = Evidence(evidence.features[:1], evidence.logits[:1])
    np.testing.assert_array_equal(one.rows(np.array([True])).features, one.features)  # a mask


@pytest.mark.parametrize("name", ["knn", "nnguide"])
def test_neighbour_banks_of_large_training_sets_are_a_stratified_sample(gaussian, name):
    from nero.detect.baselines import common
    from nero.detect.registry import capped_rows

    train, data, head = gaussian
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(common, "NEIGHBOUR_BANK_ROWS", 90)
        capped = create_method(name, k=5).fit(train, head)
    sample = capped_rows(train.labels, 90)
    assert sample.size == 90  # 300 rows of 3 classes: each class in proportion
    counts = np.bincount(train.labels[sample], minlength=3) / 90
    np.testing.assert_allclose(counts, np.bincount(train.labels) / 300, atol=0.02)
    on_sample = create_method(name, k=5).fit(train.rows(sample), head)
    np.testing.assert_allclose(capped.score(data), on_sample.score(data), rtol=1e-6)
    whole = create_method(name, k=5).fit(train, head)  # under the cap: every row
    assert not np.allclose(capped.score(data), whole.score(data))


def test_vim_equals_pytorch_ood_and_does_not_move_with_the_order_of_the_rows():
    """Our float64 ViM is pytorch-ood's ViM (well-conditioned case, float32 tolerance), and
    with an eigenvalue gap at the cut far below float32 rounding it still gives the same
    scores whatever the order of the training rows (pytorch-ood's float32 did not)."""
    import torch
    from pytorch_ood.detector import ViM as PoodViM

    rng = np.random.default_rng(5)
    d, n = 64, 400
    train = rng.normal(size=(n, d)) * np.linspace(3, 0.5, d) + 1.0
    w, b = rng.normal(size=(4, d)), rng.normal(size=4)
    head = Head(w.astype(np.float32), b.astype(np.float32))
    test = rng.normal(size=(50, d)) * 1.5 + 1.0

    def evidence(x):
        x = x.astype(np.float32)
        return Evidence(x, (x @ w.T + b).astype(np.float32), np.zeros((len(x), d + 1), np.float32))

    ours = create_method("vim").fit(evidence(train), head).score(evidence(test))
    ref = PoodViM(None, d=d // 2, w=torch.tensor(w, dtype=torch.float32),
                  b=torch.tensor(b, dtype=torch.float32))  # fmt: skip
    ref.fit_features(torch.tensor(train, dtype=torch.float32), torch.zeros(n, dtype=torch.long))
    expected = ref.predict_features(torch.tensor(test, dtype=torch.float32)).numpy()
    np.testing.assert_allclose(ours, expected, rtol=1e-3, atol=1e-3)
    # a spectrum like a trained network's: one huge direction, a near-tie at the cut
    scale = np.r_[300.0, np.linspace(1.0, 0.9, d - 1)]
    skewed = rng.normal(size=(n, d)) * scale
    first = create_method("vim").fit(evidence(skewed), head).score(evidence(test))
    shuffled = create_method("vim").fit(evidence(skewed[rng.permutation(n)]), head)
    np.testing.assert_allclose(shuffled.score(evidence(test)), first, rtol=1e-9)
