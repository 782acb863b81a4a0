"""Input-space heatmaps: conservation, an untouched model, every architecture, run cache, CLI."""

import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import nero.explain.rules as rules
import nero.run.heatmaps as heatmaps
from nero.cli import main
from nero.data.preprocess import Preprocessing
from nero.detect.relevance import head_relevance
from nero.explain.attribution import Heatmap, HeatmapRequest, compute_heatmap, compute_heatmaps
from nero.explain.drawing import overlay_png
from nero.explain.envelope import Envelope, EnvelopeRecorder, fit_envelope
from nero.explain.kinds import CACHE_VERSION
from nero.explain.rules import CP_LRP, GRADIENT_X_INPUT, LRP, rule_set_for
from nero.model.classifier import build_model, find_head, head_arrays
from nero.run.directory import read_run
from nero.run.heatmaps import (
    cache_path,
    distance_contributions,
    ood_deviation,
    run_heatmap,
    run_heatmaps,
    sample_image,
)

SIZE = 32
# What each architecture the engine supports must be attributed with.
EXPECTED_METHOD = {
    "resnet18": LRP,
    "densenet121": LRP,
    "vgg11_bn": LRP,
    "efficientnet_b0": GRADIENT_X_INPUT,
    "convnext_tiny": GRADIENT_X_INPUT,
    "vit_b_16": CP_LRP,
}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny inputs: one thread is fastest, and spares the other workers on a shared machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def random_model(arch: str, seed: int = 0) -> tuple[nn.Module, nn.Linear]:
    """A random model with non-trivial BatchNorm statistics (so merging them matters)."""
    torch.manual_seed(seed)
    model = build_model(arch, 3, SIZE)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.1, 0.1)
    _, head = find_head(model, SIZE)
    if not head.weight.any():  # torchvision's ViT starts with an all-zero head
        nn.init.normal_(head.weight, std=0.05)
    return model.eval(), head


def hooks_of(model: nn.Module) -> int:
    return sum(
        len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
        for m in model.modules()
    )


def fingerprint(model: nn.Module) -> dict[str, tuple[int, float]]:
    """Storage and a strided float64 sum of every parameter and buffer (VGG's are too big
    to copy; a merged BatchNorm left behind changes every output channel, so it shows)."""
    return {
        k: (v.data_ptr(), float(v.reshape(-1)[::101].sum(dtype=torch.float64)))
        for k, v in model.state_dict().items()
    }


def envelope_of(model: nn.Module, images: torch.Tensor) -> Envelope:
    """An envelope whose class c is image c alone."""
    with torch.no_grad(), EnvelopeRecorder(model.eval(), len(images)) as recorder:
        model(images)
        recorder.update(np.arange(len(images)))
    return recorder.result()


def image(seed: int = 0) -> torch.Tensor:
    return torch.randn(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------ every architecture
@pytest.mark.parametrize("arch", list(EXPECTED_METHOD))
def test_every_architecture_gives_a_labelled_heatmap_and_leaves_the_model_unchanged(arch):
    model, head = random_model(arch)
    x = image()
    with torch.no_grad():
        before = model(x)
    state = fingerprint(model)
    names = [n for n, _ in model.named_modules()]
    model.train()
    next(iter(model.children())).eval()  # a mixed state must come back exactly
    flags = [m.training for m in model.modules()]

    heat = compute_heatmap(model, head, x, arch)

    assert heat.relevance.shape == (SIZE, SIZE) and heat.relevance.dtype == np.float32
    assert np.isfinite(heat.relevance).all()
    assert heat.method == EXPECTED_METHOD[arch] and heat.rule_set
    if heat.method == GRADIENT_X_INPUT:
        assert "fallback" in heat.note and "Gradient×Input" in heat.rule_set
    else:
        assert np.abs(heat.relevance).sum() > 0
    assert heat.kind == "class" and heat.target == heat.predicted == int(before[0].argmax())
    # The model is as it was: modes, parameters and buffers, modules, hooks, forward.
    assert [m.training for m in model.modules()] == flags
    model.eval()
    assert fingerprint(model) == state
    assert [n for n, _ in model.named_modules()] == names
    assert hooks_of(model) == 0
    assert not any("forward" in vars(m) for m in model.modules())
    with torch.no_grad():
        assert torch.equal(model(x), before)


# ------------------------------------------------------------------ what the numbers mean
def test_resnet18_lrp_conserves_relevance_without_biases():
    model, head = random_model("resnet18")
    x = image(1)
    with torch.no_grad():
        logits = model(x)[0]
    heat = compute_heatmap(model, head, x, "resnet18", "class", 2, zero_bias=True)
    assert heat.conservation == pytest.approx(1.0, abs=0.05)
    assert heat.relevance.sum() == pytest.approx(float(logits[2]), rel=0.05)
    nero = compute_heatmap(model, head, x, "resnet18", "nero", zero_bias=True)
    assert nero.conservation == pytest.approx(1.0, abs=0.05)
    assert nero.relevance.sum() == pytest.approx(1.0, abs=0.05)  # Σ softmax = 1
    with_bias = compute_heatmap(model, head, x, "resnet18", "class", 0)
    assert np.isfinite(with_bias.conservation)


def test_nero_kind_starts_from_nero_relevance_and_class_kind_from_the_logit():
    """On a linear model the input *is* the head's input: the map equals spec §1 exactly."""
    torch.manual_seed(0)
    head = nn.Linear(3 * 4 * 4, 3)
    model = nn.Sequential(nn.Flatten(), head)
    x = image(2)[:, :, :4, :4]
    a = x.reshape(1, -1).double().numpy()
    expected = head_relevance(a, head_arrays(head))[0, :-1].reshape(3, 4, 4).sum(0)
    heat = compute_heatmap(model, head, x, "linear", "nero")
    assert heat.method == GRADIENT_X_INPUT and "no rule set registered" in heat.note
    np.testing.assert_allclose(heat.relevance, expected, rtol=1e-4, atol=1e-6)

    w = head.weight.detach().double().numpy()
    target = compute_heatmap(model, head, x, "linear", "class", 1)
    np.testing.assert_allclose(target.relevance, (a * w[1]).reshape(3, 4, 4).sum(0), rtol=1e-4)


def test_ood_heatmap_propagates_the_deviation_and_differs_from_the_class_heatmap():
    model, head = random_model("resnet18")
    x = image(3)
    deviation = np.random.default_rng(0).normal(0, 0.01, head.in_features)
    ood = compute_heatmap(model, head, x, "resnet18", "ood", target=1, deviation=deviation)
    assert ood.kind == "ood" and ood.target == 1
    assert 0 < ood.conservation <= 1.05
    # With the envelope of three other images (one per class) as the "training data".
    envelope = envelope_of(model, torch.cat([image(10), image(11), image(12)]))
    gated = compute_heatmap(model, head, x, "resnet18", "ood", 1, deviation, envelope=envelope)
    cls = compute_heatmap(model, head, x, "resnet18", "class")
    assert 0 < gated.conservation < ood.conservation
    corr = np.corrcoef(gated.relevance.ravel(), cls.relevance.ravel())[0, 1]
    assert corr < 0.95
    # The OOD heatmap starts from |deviation|: a neuron is unlike its class either way.
    flipped = compute_heatmap(model, head, x, "resnet18", "ood", target=1, deviation=-deviation)
    np.testing.assert_allclose(flipped.relevance, ood.relevance, rtol=1e-5, atol=1e-12)
    # LRP is linear in the starting relevance: negated distance shares, negated map.
    dist = compute_heatmap(model, head, x, "resnet18", "distance", 1, deviation)
    negated = compute_heatmap(model, head, x, "resnet18", "distance", 1, -deviation)
    np.testing.assert_allclose(negated.relevance, -dist.relevance, rtol=1e-4, atol=1e-9)


@pytest.mark.parametrize("arch", ["resnet18", "efficientnet_b0"])
def test_one_batched_pass_equals_one_pass_per_heatmap(arch):
    model, head = random_model(arch)
    x = image(4)
    deviation = np.random.default_rng(1).normal(0, 0.01, head.in_features)
    requests = [
        HeatmapRequest("class", 2),
        HeatmapRequest("ood", 1, deviation),
        HeatmapRequest("distance", 0, deviation),
        HeatmapRequest("nero"),
    ]
    together = compute_heatmaps(model, head, x, arch, requests)
    for req, heat in zip(requests, together, strict=True):
        alone = compute_heatmap(model, head, x, arch, req.kind, req.target, req.deviation)
        together_meta, alone_meta = heat.metadata(), alone.metadata()
        conservation = together_meta.pop("conservation")
        assert conservation == pytest.approx(alone_meta.pop("conservation"), rel=1e-4)
        assert together_meta == alone_meta
        scale = np.abs(alone.relevance).max()
        np.testing.assert_allclose(heat.relevance, alone.relevance, atol=1e-3 * scale)
    assert hooks_of(model) == 0


def test_neuron_heatmap_is_lrp_of_that_neuron_alone():
    """The conditional heatmap: the feature layer seeded with one neuron's activation."""
    from nero.model.classifier import capture_head_input

    model, head = random_model("resnet18")
    x = image()
    with capture_head_input(head) as store, torch.no_grad():
        model(x)
    activation = store["features"][0].numpy().astype(np.float64)
    j = int(np.argmax(activation))
    seed = np.zeros_like(activation)
    seed[j] = activation[j]
    neuron, same = compute_heatmaps(
        model,
        head,
        x,
        "resnet18",
        [HeatmapRequest("neuron", j), HeatmapRequest("ood", 0, seed)],
    )
    assert neuron.kind == "neuron" and neuron.target == j
    # the seed above comes from a separate float32 forward (BatchNorm not merged): ~1e-5 apart
    np.testing.assert_allclose(neuron.relevance, same.relevance, rtol=1e-3, atol=1e-9)
    other = compute_heatmap(model, head, x, "resnet18", "neuron", int(np.argsort(activation)[-2]))
    assert not np.allclose(other.relevance, neuron.relevance)
    with pytest.raises(ValueError, match="needs a neuron in 0..511"):
        compute_heatmap(model, head, x, "resnet18", "neuron", 512)


def test_bad_requests_are_refused_with_a_reason():
    model, head = random_model("resnet18")
    with pytest.raises(ValueError, match="kind"):
        compute_heatmap(model, head, image(), "resnet18", "saliency")
    with pytest.raises(ValueError, match="deviation"):
        compute_heatmap(model, head, image(), "resnet18", "ood")
    with pytest.raises(ValueError, match="expected \\(512,\\)"):
        compute_heatmap(model, head, image(), "resnet18", "ood", deviation=np.zeros(10))
    with pytest.raises(ValueError, match="outside"):
        compute_heatmap(model, head, image(), "resnet18", "class", target=7)
    assert hooks_of(model) == 0


# ------------------------------------------------------------------ runs, cache, CLI
@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("heatmap-data")
    rng = np.random.default_rng(0)
    for split, n in (("id_train", 8), ("id_test", 3)):
        for cls, colour in (("red", (200, 60, 60)), ("green", (60, 200, 60))):
            folder = root / split / cls
            folder.mkdir(parents=True)
            for i in range(n):
                arr = np.clip(rng.normal(colour, 25, (40, 40, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(arr).save(folder / f"{i}.png")
    noise = root / "ood" / "noise"
    noise.mkdir(parents=True)
    for i in range(3):
        arr = rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)
        Image.fromarray(arr).save(noise / f"{i}.png")
    out = tmp_path_factory.mktemp("runs") / "run"
    args = ["evaluate", "--arch", "resnet18", "--data", str(root), "--img-size", str(SIZE)]
    args += ["--device", "cpu"]  # compared with CPU recomputations below, on any machine
    assert main([*args, "--out", str(out)]) == 0
    return out


def test_the_run_has_one_colour_scale_and_a_normal_evidence_level(run_dir, tmp_path):
    from nero.explain.drawing import overlay_png
    from nero.run.heatmap_scale import calibration_rows, evidence
    from nero.run.heatmaps import run_heatmap_scale

    run = read_run(run_dir)
    scale = run_heatmap_scale(run, compute=False)  # made by nero evaluate
    assert scale is not None and set(scale.kinds) == {"class", "ood"}
    rows = calibration_rows(run)
    oods = [run_heatmap(run, int(i), "ood") for i in rows]
    masses = [evidence(h.relevance) for h in oods]
    np.testing.assert_allclose(sorted(scale.kinds["ood"].normal_masses), sorted(masses))
    quiet = oods[int(np.argmin(masses))]
    assert scale.unusual(quiet) is False  # a normal image: nothing unusual to show
    loud = Heatmap(**{**quiet.metadata(), "relevance": quiet.relevance * 10 + 1e-3})
    assert scale.unusual(loud) is True
    assert scale.unusual(run_heatmap(run, int(rows[0]), "class")) is None  # not an OOD map
    assert scale.pixel("class") > 0 and scale.pixel("ood") > 0
    png = overlay_png(
        sample_image(run, int(rows[0])), quiet, scale=scale.pixel("ood"), unusual=False
    )
    assert png.startswith(b"\x89PNG")


def test_evaluate_records_the_envelope_in_its_forward_pass(run_dir):
    run = read_run(run_dir)
    recorded = Envelope.load(run_dir / "heatmaps" / "envelope.npz")
    train = run.samples[run.samples["split"] == "id_train"]
    loaded = heatmaps.load_run_model(run)
    refitted = fit_envelope(
        loaded.model,
        list(train["path"]),
        list(train["label"]),
        2,
        Preprocessing(SIZE, "none"),
        batch_size=5,
    )
    np.testing.assert_array_equal(recorded.counts, [8, 8])
    assert recorded.points == refitted.points
    for name in recorded.points:
        np.testing.assert_allclose(
            recorded.maxima[name], refitted.maxima[name], rtol=1e-4, atol=1e-5
        )


def test_a_stale_envelope_file_is_refitted_with_a_warning(run_dir, tmp_path):
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    envelope = Envelope.load(copy / "heatmaps" / "envelope.npz")
    stale = Envelope({"layer1": envelope.maxima["maxpool"]}, envelope.counts)  # old layout
    stale.save(copy / "heatmaps" / "envelope.npz")
    with pytest.warns(UserWarning, match="refitting"):
        fresh = heatmaps.run_envelope(read_run(copy))
    assert fresh.points == envelope.points
    assert Envelope.load(copy / "heatmaps" / "envelope.npz").points == envelope.points


def test_run_heatmap_caches_on_disk_and_loads_it_again(run_dir, monkeypatch):
    run = read_run(run_dir)
    index = int(run.rows("ood:noise")[0])
    first = run_heatmap(run, index, "ood")
    cache = cache_path(run, index, "ood", None)
    assert cache.is_file() and cache.name == f"{index}_ood_auto.v{CACHE_VERSION}.npz"
    assert first.rule_set == "EpsilonPlusFlat + ResNetCanonizer + envelope gate"
    assert (run_dir / "heatmaps" / "envelope.npz").is_file()
    deviation, nearest = ood_deviation(run, index)
    explained = run.detector.explain(run.features[[index]], run.relevance[[index]])
    np.testing.assert_array_equal(deviation, explained.deviation[0])
    assert first.target == nearest == int(explained.nearest_class[0])
    same, _ = ood_deviation(run, index, target=nearest)  # one centroid per class
    np.testing.assert_allclose(same, deviation)
    shares, cls = distance_contributions(run, index)  # an exact split of NERO's distance
    assert cls == nearest and shares.sum() == pytest.approx(explained.distance[0], rel=1e-9)

    def no_recompute(*_args, **_kwargs):
        raise AssertionError("the cached heatmap should have been loaded")

    monkeypatch.setattr(heatmaps, "compute_heatmaps", no_recompute)
    second = run_heatmap(run, index, "ood")
    np.testing.assert_array_equal(second.relevance, first.relevance)
    assert second.metadata() == first.metadata()
    assert Heatmap.load(cache).metadata() == first.metadata()


def test_run_heatmaps_computes_the_missing_ones_in_one_pass(run_dir, monkeypatch):
    run = read_run(run_dir)
    index = int(run.rows("ood:noise")[-1])
    for kind in ("ood", "distance"):  # not cached by another test
        cache_path(run, index, kind, None).unlink(missing_ok=True)
    cls = run_heatmap(run, index, "class")  # cached now
    calls = []
    original = heatmaps.compute_heatmaps

    def counting(*args, **kwargs):
        calls.append([r.kind for r in args[4]])
        return original(*args, **kwargs)

    monkeypatch.setattr(heatmaps, "compute_heatmaps", counting)
    both = run_heatmaps(run, index, [("class", None), ("ood", None), ("distance", None)])
    assert calls == [["ood", "distance"]]  # the class heatmap came from the cache
    np.testing.assert_array_equal(both[0].relevance, cls.relevance)
    assert [h.kind for h in both] == ["class", "ood", "distance"]


def test_run_heatmap_of_a_class_and_its_overlay(run_dir):
    run = read_run(run_dir)
    heat = run_heatmap(run, 0, "class", target=1)
    assert heat.target == 1 and heat.relevance.shape == (SIZE, SIZE)
    # The run's kept model is channels-last (faster); a plain copy gives the same map.

    loaded = heatmaps.load_run_model(run)
    plain = build_model("resnet18", 2, SIZE)
    plain.load_state_dict({k: v.contiguous() for k, v in loaded.model.state_dict().items()})
    _, plain_head = find_head(plain, SIZE)
    x = Preprocessing(SIZE, "none")(sample_image(run, 0)).unsqueeze(0)
    again = compute_heatmap(plain.eval(), plain_head, x, "resnet18", "class", 1)
    scale = np.abs(again.relevance).max()
    np.testing.assert_allclose(heat.relevance, again.relevance, rtol=1e-4, atol=1e-5 * scale)
    assert cache_path(run, 0, "class", 1).is_file()
    png = overlay_png(sample_image(run, 0), heat, class_names=run.class_names)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="outside"):
        run_heatmap(run, len(run.samples), "class")


def test_cli_heatmap_writes_a_png(run_dir, tmp_path, capsys):
    out = tmp_path / "heat.png"
    args = ["heatmap", "--run", str(run_dir), "--sample", "1", "--kind", "distance"]
    code = main([*args, "--out", str(out)])
    assert code == 0
    with Image.open(out) as img:
        assert img.format == "PNG" and img.width > 200
    assert "EpsilonPlusFlat + ResNetCanonizer" in capsys.readouterr().out


@pytest.mark.parametrize("arch", ["resnet18", "densenet121"])
def test_one_pass_z_plus_equals_zennits_two_pass_z_plus(arch):
    """Every convolution after the first sees post-ReLU input, so the second pass is zero."""
    model, head = random_model(arch)
    x = image(6)
    fast = rule_set_for(arch, model)
    slow = dataclasses.replace(
        fast,
        composite=rules._epsilon_plus_flat(
            type(fast.composite(x, False).canonizers[0]), fast=False
        ),
    )
    deviation = np.random.default_rng(2).normal(0, 0.01, head.in_features)
    for kind, dev in (("class", None), ("distance", deviation)):
        a = compute_heatmap(model, head, x, arch, kind, 1, dev)
        b = compute_heatmap(model, head, x, arch, kind, 1, dev, rules=slow)
        scale = np.abs(b.relevance).max()
        np.testing.assert_allclose(a.relevance, b.relevance, rtol=1e-4, atol=1e-5 * scale)
        assert a.conservation == pytest.approx(b.conservation, rel=1e-4)


def test_a_map_with_negligible_evidence_says_so_and_is_flagged_for_faint_drawing():
    from nero.run.heatmap_view import NEGLIGIBLE_WORDS, heatmap_view

    def view(relevance, conservation):
        heat = Heatmap(np.asarray(relevance, np.float32), "ood", 0, 0, "lrp", "r", "", conservation)
        return heatmap_view(heat)

    dust = view(np.full((4, 4), 1e-9), 1e-8)
    assert dust.negligible and dust.fields()["negligible"] and NEGLIGIBLE_WORDS in dust.summary()
    assert view(np.zeros((4, 4)), float("nan")).negligible  # a blank map
    strong = view(np.eye(4), 0.4)
    assert not strong.negligible and NEGLIGIBLE_WORDS not in strong.summary()
